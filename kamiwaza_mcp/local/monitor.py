"""Periodic health checks of the workers of serving deployments.

Every `health_check_interval` seconds each ready worker of a DEPLOYED deployment
gets `GET /health`. A worker that fails `health_check_failures` probes in a row
(no response within PROBE_TIMEOUT seconds, or a status other than 200) is killed, and
the launcher replaces it like any worker that died. A worker that exits is noticed
at once by its supervisor task, without waiting for a probe.
"""

from __future__ import annotations

import logging

import anyio
import httpx

from .launcher import Launcher
from .settings import LocalPlatformSettings
from .supervisor import Worker

__all__ = ["PROBE_TIMEOUT", "monitor_workers"]

logger = logging.getLogger(__name__)

PROBE_TIMEOUT = 2.0


async def monitor_workers(
    launcher: Launcher, http: httpx.AsyncClient, settings: LocalPlatformSettings
) -> None:
    """Probe the serving workers until cancelled."""
    while True:
        await anyio.sleep(settings.health_check_interval)
        try:
            async with anyio.create_task_group() as group:
                for worker in launcher.serving_workers():
                    group.start_soon(_check, launcher, http, settings, worker)
        except Exception:
            # A bug in one round must not end the platform's task group; the next round tries again.
            logger.exception("A round of worker health checks failed")


async def _check(
    launcher: Launcher, http: httpx.AsyncClient, settings: LocalPlatformSettings, worker: Worker
) -> None:
    problem = await _probe(http, worker)
    if problem is None:
        worker.failed_probes = 0
        return
    if worker.exited.is_set() or worker.stopping:
        return
    worker.failed_probes += 1
    logger.warning(
        "Worker %s of deployment %s failed health check %d of %d: %s",
        worker.spec.instance_id,
        worker.spec.deployment_id,
        worker.failed_probes,
        settings.health_check_failures,
        problem,
    )
    if worker.failed_probes >= settings.health_check_failures:
        reason = f"GET /health failed {worker.failed_probes} times in a row (last: {problem})"
        launcher.supervisor.kill(worker, reason)


async def _probe(http: httpx.AsyncClient, worker: Worker) -> str | None:
    """Return None when the worker returns 200, else a description of the failure."""
    try:
        response = await http.get(f"{worker.base_url}/health", timeout=PROBE_TIMEOUT)
    except httpx.TimeoutException:
        return f"no response within {PROBE_TIMEOUT:g} s"
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    if response.status_code != 200:
        return f"HTTP {response.status_code}"
    return None
