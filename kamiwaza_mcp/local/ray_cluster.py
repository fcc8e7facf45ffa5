"""The Ray cluster behind `POST /serving/start` and `GET /serving/status`.

The local platform runs its workers as plain processes and needs no Ray. Ray is an
optional extra: when it is installed, `start` brings up a local head node owned by
the platform (or joins the cluster at `address`), and deployments made while Ray runs
place their replicas on Ray Serve. Without Ray, the status route reports this
machine's resources as one node. Ray calls block, so they run in worker threads.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import socket
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio

from .errors import InvalidInputError, PlatformError
from .ray_head import (
    HeadOptions,
    RaySession,
    describe_cluster,
    join_cluster,
    split_address,
    start_head,
    stop_ray,
)

__all__ = [
    "RAY_MISSING_MESSAGE",
    "LocalResources",
    "RayCluster",
    "RayNotInstalledError",
    "RayStartError",
    "head_options",
    "local_resources",
    "ray_node_uuid",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

RAY_MISSING_MESSAGE = "Ray is not installed; install it with pip install 'kamiwaza-mcp[ray]'"
_NVIDIA_SMI_TIMEOUT = 10.0
# Ray node ids are 56 hex digits; the API's node_id is a UUID, derived from them in this namespace.
_RAY_NODE_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "kamiwaza-mcp:ray-node")
_HEAD_OPTION_NAMES = ("num_cpus", "num_gpus", "object_store_memory")


class RayNotInstalledError(Exception):
    """`ray` cannot be imported in this environment."""

    def __init__(self) -> None:
        super().__init__(RAY_MISSING_MESSAGE)


class RayStartError(PlatformError):
    """Ray failed to start a head or to join a cluster; 502 for a join, 500 for a local head."""

    def __init__(self, detail: str, *, joining: bool) -> None:
        super().__init__(detail)
        self.status_code = 502 if joining else 500


@dataclass(frozen=True)
class LocalResources:
    """The CPUs, GPUs and RAM of this machine. `memory_bytes` is total physical RAM."""

    cpus: int
    gpus: int
    memory_bytes: int


def ray_node_uuid(ray_node_id: str) -> str:
    """Return the stable UUID that stands for a Ray node id (hex) in the API."""
    return str(uuid.uuid5(_RAY_NODE_NAMESPACE, ray_node_id))


def head_options(options: dict[str, Any] | None, *, joining: bool) -> HeadOptions:
    """Validate the `options` of `POST /serving/start`: num_cpus, num_gpus, object_store_memory (bytes).

    Raises InvalidInputError for another key, a value that is not a whole number of 0 or
    more, or any option when joining a cluster, whose resources are the cluster's own.
    """
    options = options or {}
    if options and joining:
        raise InvalidInputError(
            f"options {sorted(options)} apply only to a local Ray head; omit them when joining a cluster"
        )
    unknown = sorted(set(options) - set(_HEAD_OPTION_NAMES))
    if unknown:
        raise InvalidInputError(
            f"unknown Ray options {unknown}; the local head accepts {', '.join(_HEAD_OPTION_NAMES)}"
        )
    for name, value in options.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidInputError(f"Ray option {name} is {value!r}; it must be a whole number of 0 or more")
    return HeadOptions(**options)


async def local_resources() -> LocalResources:
    """Count this machine's CPUs, RAM and NVIDIA GPUs (0 GPUs without nvidia-smi)."""
    return LocalResources(
        cpus=os.cpu_count() or 1, gpus=await _count_nvidia_gpus(), memory_bytes=_total_memory()
    )


class RayCluster:
    """Ray as this platform uses it: started or joined on request, left when the platform exits."""

    def __init__(self, state_dir: Path) -> None:
        self._state_dir = state_dir
        self._session: RaySession | None = None
        self._lock = anyio.Lock()
        # Ray 2.60 starts the head's processes with PR_SET_PDEATHSIG on Linux, and the
        # kernel sends that signal when the *thread* that started them exits. anyio ends
        # idle worker threads, which would kill the head, so a thread of its own starts
        # and stops it and lives as long as the head.
        self._head_thread: ThreadPoolExecutor | None = None

    @property
    def running(self) -> bool:
        return self._session is not None

    @property
    def session(self) -> RaySession | None:
        """The current connection to Ray; a new start makes a new object."""
        return self._session

    @property
    def owned(self) -> bool:
        """Whether the platform started the head, rather than joined a cluster."""
        return self._session is not None and self._session.owned

    @property
    def session_dir(self) -> Path | None:
        """The owned head's session folder, which contains Ray's logs; None otherwise."""
        return self._session.session_dir if self._session else None

    async def start(
        self, address: str | None, runtime_env: dict[str, Any] | None, options: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Start a local Ray head, or join the cluster at `address`, and return the start body.

        Starting while Ray runs changes nothing and reports it. Raises RayNotInstalledError
        when `ray` cannot be imported, InvalidInputError for invalid `options`, and
        RayStartError when Ray fails to start or connect.
        """
        if importlib.util.find_spec("ray") is None:
            raise RayNotInstalledError()
        resources = head_options(options, joining=bool(address))
        if address and address != "auto":
            try:
                split_address(address)
            except ValueError as exc:
                raise InvalidInputError(str(exc)) from exc
        # Shielded, so a cancelled request cannot leave a started head untracked.
        with anyio.CancelScope(shield=True):
            async with self._lock:
                if self._session is not None:
                    return self._already_running(address)
                session = await self._on_head_thread(self._connect, address, resources, runtime_env)
                self._session = session
        if session.owned:
            message = f"Started a local Ray head at {session.address} with its files in {session.session_dir}"
        else:
            message = f"Joined the Ray cluster at {address} (GCS {session.address})"
        logger.info(message)
        return {"status": "running", "address": session.address, "already_running": False, "message": message}

    async def status(self) -> dict[str, Any]:
        """Build the body of `GET /serving/status`."""
        if self._session is not None:
            snapshot = await anyio.to_thread.run_sync(describe_cluster)
            return {
                "status": "running",
                "address": self._session.address,
                "nodes": snapshot.nodes,
                "resources": snapshot.resources,
                "available_resources": snapshot.available,
                "message": self._running_message(),
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
        """Stop the owned head and every process of its session, or leave a joined cluster."""
        async with self._lock:
            session, self._session = self._session, None
            if session is None:
                return
            killed = await self._on_head_thread(stop_ray, session)
            self._close_head_thread()
        if session.owned:
            logger.info(
                "Stopped the local Ray head at %s (%d leftover processes killed)",
                session.address,
                len(killed),
            )
        else:
            logger.info("Disconnected from the Ray cluster at %s", session.address)

    async def _on_head_thread(self, function: Callable[..., _T], *args: Any) -> _T:
        if self._head_thread is None:
            self._head_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ray-head")
        future = self._head_thread.submit(function, *args)
        try:
            return await anyio.to_thread.run_sync(future.result)
        except BaseException:
            if self._session is None:
                self._close_head_thread()
            raise

    def _close_head_thread(self) -> None:
        if self._head_thread is not None:
            self._head_thread.shutdown(wait=False)
            self._head_thread = None

    def _connect(
        self, address: str | None, resources: HeadOptions, runtime_env: dict[str, Any] | None
    ) -> RaySession:
        import ray

        if ray.is_initialized():
            raise RayStartError(
                "Ray is already initialized in this process by other code; a process runs one Ray session",
                joining=bool(address),
            )
        try:
            if address:
                return join_cluster(address, runtime_env)
            return start_head(self._state_dir, resources, runtime_env)
        except Exception as exc:
            # ray.init raises many unrelated types (ConnectionError, ValueError, RuntimeError,
            # TimeoutError), so each becomes a RayStartError that names the address.
            if address:
                detail = f"could not join the Ray cluster at {address}: {type(exc).__name__}: {exc}; check the address and that the cluster runs the same Ray version"
            else:
                detail = f"could not start a local Ray head: {type(exc).__name__}: {exc}; see the logs in {self._state_dir / 'ray'}"
            raise RayStartError(detail, joining=bool(address)) from exc

    def _already_running(self, address: str | None) -> dict[str, Any]:
        assert self._session is not None
        message = f"Ray is already running at {self._session.address}; nothing changed"
        if address:
            message += f". To join {address} instead, restart the platform and start Ray with that address"
        return {
            "status": "running",
            "address": self._session.address,
            "already_running": True,
            "message": message,
        }

    def _running_message(self) -> str:
        assert self._session is not None
        if self._session.owned:
            return (
                f"Ray is running at {self._session.address}, a local head started by this platform; "
                "new deployments place their replicas on Ray Serve"
            )
        return (
            f"Ray is running at {self._session.address}, a cluster this platform joined; "
            "new deployments place their replicas on Ray Serve"
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
