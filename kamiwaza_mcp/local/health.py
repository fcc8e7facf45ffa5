"""The body of `GET /api/serving/health`: one string map per instance of each deployment not STOPPED."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import httpx

from .store import DeploymentRecord, InstanceRecord
from .supervisor import Worker

if TYPE_CHECKING:
    from .platform import LocalPlatform

__all__ = ["collect_health"]

_PROBE_TIMEOUT = 2.0

# Health of an instance whose worker is not probed, by instance status.
_UNPROBED = {
    "DEPLOYING": ("unknown", "the worker is starting"),
    "STOPPED": ("unknown", "the worker is stopped"),
    "FAILED": ("unhealthy", "the worker failed"),
}


async def collect_health(platform: LocalPlatform) -> list[dict[str, str]]:
    """Probe `/health` of every running worker at once, ask Serve about replicas on Ray, and report each instance.

    A deployment without instances gets one map without `instance_id`. STOPPED
    deployments are left out, because a stop is final.
    """
    entries: list[dict[str, str]] = []
    probes: list[tuple[dict[str, str], Worker]] = []
    ray_probes: list[tuple[dict[str, str], InstanceRecord]] = []
    for record in platform.store.list_deployments():
        if record.status == "STOPPED":
            continue
        instances = platform.store.list_instances(record.id)
        if not instances:
            entries.append(_deployment_entry(record))
        for instance in instances:
            entry = _instance_entry(record, instance)
            entries.append(entry)
            if record.backend == "ray":
                if instance.status == "DEPLOYED":
                    ray_probes.append((entry, instance))
                continue
            worker = platform.launcher.worker(record.id, instance.id)
            if instance.status == "DEPLOYED" and worker is not None and worker.ready:
                probes.append((entry, worker))

    async with anyio.create_task_group() as group:
        for entry, worker in probes:
            group.start_soon(_probe, platform.http, entry, worker)
    await platform.ray_backend.probe_health(ray_probes)
    return entries


def _deployment_entry(record: DeploymentRecord) -> dict[str, str]:
    health, detail = (
        ("unhealthy", _error_summary(record))
        if record.status == "FAILED"
        else ("unknown", "no instances yet")
    )
    return {
        "deployment_id": record.id,
        "model_name": record.model_name,
        "deployment_status": record.status,
        "health": health,
        "detail": detail,
    }


def _instance_entry(record: DeploymentRecord, instance: InstanceRecord) -> dict[str, str]:
    health, detail = _UNPROBED.get(instance.status, ("unhealthy", "the worker is not running"))
    if instance.status == "FAILED" and record.last_error_code:
        detail = _error_summary(record)
    return {
        "deployment_id": record.id,
        "instance_id": instance.id,
        "model_name": record.model_name,
        "deployment_status": record.status,
        "instance_status": instance.status,
        "health": health,
        "detail": detail,
    }


async def _probe(http: httpx.AsyncClient, entry: dict[str, str], worker: Worker) -> None:
    try:
        response = await http.get(f"{worker.base_url}/health", timeout=_PROBE_TIMEOUT)
    except httpx.HTTPError as exc:
        entry.update(
            health="unhealthy", detail=f"GET /health on port {worker.port} failed: {type(exc).__name__}"
        )
        return
    if response.status_code != 200:
        entry.update(
            health="unhealthy",
            detail=f"GET /health on port {worker.port} returned HTTP {response.status_code}",
        )
        return
    entry.update(health="healthy", detail=f"pid {worker.pid} answers on port {worker.port}")


def _error_summary(record: DeploymentRecord) -> str:
    first_line = (record.last_error_message or "").splitlines()[0] if record.last_error_message else ""
    return f"{record.last_error_code}: {first_line}" if record.last_error_code else "failed"
