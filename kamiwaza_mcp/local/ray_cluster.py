"""The Ray cluster behind `POST /serving/start` and `GET /serving/status`.

The local platform runs its workers as plain processes and needs no Ray. Ray is an
optional extra: when it is installed, `start` brings up a local head node (or joins
the cluster at `address`) so the status route reports Ray's nodes and resources.
Without Ray, the status route reports this machine's resources as one node.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

__all__ = ["RAY_MISSING_MESSAGE", "LocalResources", "RayCluster", "RayNotInstalledError", "local_resources"]

logger = logging.getLogger(__name__)

RAY_MISSING_MESSAGE = "Ray is not installed; install it with pip install 'kamiwaza-mcp[ray]'"
_NVIDIA_SMI_TIMEOUT = 10.0


class RayNotInstalledError(Exception):
    """`ray` cannot be imported in this environment."""

    def __init__(self) -> None:
        super().__init__(RAY_MISSING_MESSAGE)


@dataclass(frozen=True)
class LocalResources:
    """The CPUs, GPUs and RAM of this machine. `memory_bytes` is total physical RAM."""

    cpus: int
    gpus: int
    memory_bytes: int


async def local_resources() -> LocalResources:
    """Count this machine's CPUs, RAM and NVIDIA GPUs (0 GPUs without nvidia-smi)."""
    return LocalResources(
        cpus=os.cpu_count() or 1, gpus=await _count_nvidia_gpus(), memory_bytes=_total_memory()
    )


def _total_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        logger.warning("Could not read the total RAM with sysconf; reporting 0 bytes")
        return 0


async def _count_nvidia_gpus() -> int:
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return 0
    command = [executable, "--query-gpu=index", "--format=csv,noheader"]
    with anyio.move_on_after(_NVIDIA_SMI_TIMEOUT):
        try:
            result = await anyio.run_process(command, check=False)
        except OSError as exc:
            logger.warning("nvidia-smi failed to run: %s; reporting 0 GPUs", exc)
            return 0
        if result.returncode != 0:
            logger.warning("nvidia-smi exited with code %d; reporting 0 GPUs", result.returncode)
            return 0
        return sum(1 for line in result.stdout.decode().splitlines() if line.strip())
    logger.warning("nvidia-smi did not respond within %g s; reporting 0 GPUs", _NVIDIA_SMI_TIMEOUT)
    return 0


class RayCluster:
    """Ray as this platform uses it: started on request, shut down with the platform."""

    def __init__(self, state_dir: Path) -> None:
        self._temp_dir = state_dir / "ray"
        self._address: str | None = None
        self._lock = anyio.Lock()

    @property
    def running(self) -> bool:
        return self._address is not None

    async def start(self, address: str | None, runtime_env: dict[str, Any] | None) -> dict[str, Any]:
        """Start a local Ray head, or join the cluster at `address`, and return the status body.

        Raises RayNotInstalledError when `ray` cannot be imported.
        """
        if importlib.util.find_spec("ray") is None:
            raise RayNotInstalledError()
        async with self._lock:
            if self._address is None:
                # NOTE: this path has not run in the tests, because Ray is not installed there.
                self._address = await anyio.to_thread.run_sync(
                    _init_ray, address, self._temp_dir, runtime_env
                )
                logger.info("Ray is running at %s", self._address)
        return {"status": "running", "address": self._address}

    async def status(self) -> dict[str, Any]:
        """Build the body of `GET /serving/status`."""
        if self._address is not None:
            nodes, resources = await anyio.to_thread.run_sync(_ray_nodes)
            message = f"Ray is running at {self._address}"
            return {
                "status": "running",
                "address": self._address,
                "nodes": nodes,
                "resources": resources,
                "message": message,
            }
        local = await local_resources()
        node = {
            "node_id": "local",
            "alive": True,
            "host_name": socket.gethostname(),
            "address": "127.0.0.1",
            "cpus": local.cpus,
            "gpus": local.gpus,
            "memory_bytes": local.memory_bytes,
        }
        return {
            "status": "not running",
            "address": None,
            "nodes": [node],
            "resources": {"CPU": local.cpus, "GPU": local.gpus, "memory": local.memory_bytes},
            "message": "Ray is not running; the local platform runs each replica as a local worker process",
        }

    async def shutdown(self) -> None:
        async with self._lock:
            if self._address is None:
                return
            await anyio.to_thread.run_sync(_shutdown_ray)
            self._address = None


def _init_ray(address: str | None, temp_dir: Path, runtime_env: dict[str, Any] | None) -> str:
    # Set before the import, because Ray reads it when it starts its usage reporter.
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray

    if address:
        # Ray rejects head-node options such as _temp_dir when it joins an existing cluster.
        ray.init(address=address, runtime_env=runtime_env, ignore_reinit_error=True)
    else:
        temp_dir.mkdir(parents=True, exist_ok=True)
        ray.init(
            _temp_dir=str(temp_dir),
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            runtime_env=runtime_env,
            ignore_reinit_error=True,
        )
    return str(ray.get_runtime_context().gcs_address)


def _ray_nodes() -> tuple[list[dict[str, Any]], dict[str, float]]:
    import ray

    nodes = [
        {
            "node_id": node.get("NodeID", ""),
            "alive": bool(node.get("Alive", False)),
            "host_name": node.get("NodeManagerHostname"),
            "address": node.get("NodeManagerAddress"),
            "cpus": node.get("Resources", {}).get("CPU", 0),
            "gpus": node.get("Resources", {}).get("GPU", 0),
            "memory_bytes": int(node.get("Resources", {}).get("memory", 0)),
        }
        for node in ray.nodes()
    ]
    totals = ray.cluster_resources()
    resources = {"CPU": totals.get("CPU", 0), "GPU": totals.get("GPU", 0), "memory": totals.get("memory", 0)}
    return nodes, resources


def _shutdown_ray() -> None:
    import ray

    ray.shutdown()
