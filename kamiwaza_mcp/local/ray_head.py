"""Blocking Ray calls that start, join, describe and stop the Ray cluster of one platform.

Every function here blocks, so the platform runs them in a worker thread. `ray` is
imported inside the functions because it is an optional extra. Ray keeps one
connection per process, so a process has at most one platform with Ray running.

A head started here binds 127.0.0.1, keeps its files under `<state_dir>/ray`, runs no
dashboard, sends no usage statistics and accepts only clients that present the token in
`<state_dir>/ray/auth_token`. Joining a cluster at an address leaves these choices to
that cluster.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import ipaddress
import logging
import os
import secrets
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ClusterSnapshot",
    "HeadOptions",
    "RaySession",
    "describe_cluster",
    "join_cluster",
    "link_temp_dir",
    "session_processes",
    "split_address",
    "start_head",
    "stop_ray",
]

logger = logging.getLogger(__name__)

TEMP_LINK_PREFIX = "kamiwaza-ray-"
AUTH_TOKEN_FILE = "auth_token"
# Seconds to wait for the TCP connection that checks a cluster address before joining it.
_CONNECT_TIMEOUT = 5.0
# Seconds that Ray's processes get to exit after ray.shutdown before they are killed.
_EXIT_WAIT = 15.0
_EXIT_POLL = 0.2


@dataclass(frozen=True)
class HeadOptions:
    """Resources of a local head node; None lets Ray detect them. Memory is in bytes."""

    num_cpus: int | None = None
    num_gpus: int | None = None
    object_store_memory: int | None = None


@dataclass(frozen=True)
class RaySession:
    """A connection of this process to a Ray cluster.

    `owned` is true for a head started by this platform. For such a head, `session_dir`
    is the real path of the session folder, which contains the logs, and `temp_link` is
    the short link Ray was given as its temp dir. `saved_env` and `saved_cluster_flag`
    are the settings to put back when Ray stops.
    """

    address: str
    owned: bool
    session_dir: Path | None
    temp_link: Path | None = None
    saved_env: dict[str, str | None] = field(default_factory=dict)
    saved_cluster_flag: bool | None = None


@dataclass(frozen=True)
class ClusterSnapshot:
    """Nodes and resources as Ray reports them. Memory values are in bytes."""

    nodes: list[dict[str, Any]]
    resources: dict[str, float]
    available: dict[str, float]


def link_temp_dir(state_dir: Path) -> Path:
    """Create `<state_dir>/ray` and return a short symbolic link to it for Ray's temp dir.

    Ray puts unix sockets in its session folder, and a socket path has at most 107
    bytes on Linux and 103 on macOS. The session folder adds about 60 bytes to the
    temp dir, so a deep state dir would make Ray fail to start. The link lives in /tmp,
    where Ray puts its files by default, keyed by a hash of the state dir.
    """
    target = (state_dir / "ray").resolve()
    target.mkdir(parents=True, exist_ok=True)
    link = _link_path(target)
    if link.is_symlink():
        if Path(os.readlink(link)) == target:
            return link
        if link.lstat().st_uid != os.getuid():
            raise RuntimeError(f"{link} links to {os.readlink(link)} and belongs to another user; remove it")
        link.unlink()
    elif link.exists():
        raise RuntimeError(f"{link} exists and is not a link to {target}; remove it")
    link.symlink_to(target, target_is_directory=True)
    return link


def _link_path(target: Path) -> Path:
    digest = hashlib.sha256(str(target).encode()).hexdigest()[:12]
    # Not tempfile.gettempdir(): on macOS it is a deep per-user folder.
    base = Path("/tmp") if Path("/tmp").is_dir() else Path(tempfile.gettempdir())
    return base / f"{TEMP_LINK_PREFIX}{digest}"


def start_head(state_dir: Path, options: HeadOptions, runtime_env: dict[str, Any] | None) -> RaySession:
    """Start a Ray head node on 127.0.0.1 owned by this process, and connect to it."""
    temp_link = link_temp_dir(state_dir)
    token_file = _ensure_token(temp_link.resolve() / AUTH_TOKEN_FILE)
    saved_env = _set_env(
        RAY_USAGE_STATS_ENABLED="0",
        # Ray 2.60 turns a node IP of 127.0.0.1 into this machine's outward address
        # unless this variable is 0, because it assumes a head is meant for a cluster.
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token_file),
    )
    ray, cluster_flag = _import_ray_for_head()
    try:
        _reset_token_cache()
        ray.init(
            address="local",
            _temp_dir=str(temp_link),
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            num_cpus=options.num_cpus,
            num_gpus=options.num_gpus,
            object_store_memory=options.object_store_memory,
            runtime_env=runtime_env,
            log_to_driver=False,
            configure_logging=False,
        )
    except BaseException:
        _restore_env(saved_env)
        _set_cluster_flag(cluster_flag)
        raise
    _silence_driver_prints(ray)
    session_dir = (temp_link / "session_latest").resolve()
    return RaySession(
        _gcs_address(ray),
        owned=True,
        session_dir=session_dir,
        temp_link=temp_link,
        saved_env=saved_env,
        saved_cluster_flag=cluster_flag,
    )


def join_cluster(address: str, runtime_env: dict[str, Any] | None) -> RaySession:
    """Connect to the Ray cluster at `address` (`HOST:PORT`, `ray://HOST:PORT` or `auto`).

    The cluster's temp dir and auth settings apply, so none are passed: a cluster
    with token authentication needs RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH in this
    process's environment. Raises ConnectionError when the address does not accept
    connections, because ray.init would retry it for minutes.
    NOTE: the tests join a `HOST:PORT` head on 127.0.0.1; `ray://` (Ray Client) addresses
    and clusters on other hosts have not been run.
    """
    host = _check_reachable(address)
    saved_env = _set_env(RAY_USAGE_STATS_ENABLED="0")
    loopback = host is not None and _is_loopback(host)
    cluster_flag: bool | None = None
    if loopback:
        # A cluster on 127.0.0.1 is on this machine, and the driver must use the same address.
        ray, cluster_flag = _import_ray_for_head()
    else:
        ray = importlib.import_module("ray")
    node_address = {"_node_ip_address": "127.0.0.1"} if loopback else {}
    try:
        _reset_token_cache()
        ray.init(
            address=address,
            runtime_env=runtime_env,
            log_to_driver=False,
            configure_logging=False,
            **node_address,
        )
    except BaseException:
        _restore_env(saved_env)
        if cluster_flag is not None:
            _set_cluster_flag(cluster_flag)
        raise
    _silence_driver_prints(ray)
    return RaySession(
        _gcs_address(ray), owned=False, session_dir=None, saved_env=saved_env, saved_cluster_flag=cluster_flag
    )


def _check_reachable(address: str) -> str | None:
    """Open and close a TCP connection to the address's host and port; return the host.

    Returns None for `auto`, which Ray resolves from this machine's running cluster.
    """
    if address == "auto":
        return None
    host, port = split_address(address)
    with socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT):
        pass
    return host


def split_address(address: str) -> tuple[str, int]:
    """Split `HOST:PORT` or `ray://HOST:PORT` into host and port; raise ValueError for another form."""
    host, separator, port = address.removeprefix("ray://").rpartition(":")
    if not separator or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid Ray address {address!r}; use HOST:PORT, ray://HOST:PORT or auto")
    return host.strip("[]"), int(port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def describe_cluster() -> ClusterSnapshot:
    """Read the nodes and the total and free resources from Ray's GCS."""
    import ray

    nodes = [_node_entry(node) for node in ray.nodes()]
    return ClusterSnapshot(
        nodes=nodes,
        resources=_resource_totals(ray.cluster_resources()),
        available=_resource_totals(ray.available_resources()),
    )


def stop_ray(session: RaySession) -> list[int]:
    """Disconnect from Ray and, for an owned head, stop it and every process of its session.

    Returns the pids that outlived `ray.shutdown` and were killed.
    """
    import ray

    if session.owned:
        _shutdown_serve()
    ray.shutdown(wait_for_processes=session.owned)
    _restore_env(session.saved_env)
    if session.saved_cluster_flag is not None:
        _set_cluster_flag(session.saved_cluster_flag)
    if session.session_dir is None:
        return []
    killed = _kill_leftovers(session.session_dir)
    if session.temp_link is not None:
        # No process of the head is left to use the link; the next head creates it again.
        session.temp_link.unlink(missing_ok=True)
    return killed


def session_processes(session_dir: Path) -> list[int]:
    """Return the pids of Ray processes that belong to the Ray session in `session_dir`.

    A Ray process is one named `ray::<Class>`, or an executable or script of the Ray
    package. It belongs to the session when its command line names the session's temp
    dir, or when it has a file of the session open, because Ray's workers and agents keep
    the session's log files open. Other processes, such as a `tail -f` of a log, are
    never listed.
    NOTE: this reads /proc, so on systems without it (macOS) it finds nothing.
    """
    temp_dir = session_dir.parent.resolve()
    markers = (str(session_dir), str(temp_dir), str(_link_path(temp_dir)))
    package = _ray_package_dir()
    found = []
    for pid, arguments in _processes():
        if pid == os.getpid() or not _is_ray_process(arguments, package):
            continue
        if any(marker in argument for argument in arguments for marker in markers) or _has_open(pid, markers):
            found.append(pid)
    return found


def _shutdown_serve() -> None:
    """Stop Serve first, so its replicas end gracefully before their node goes away."""
    try:
        from ray import serve

        serve.shutdown()
    except Exception:
        # The head stops next either way, and its replicas with it.
        logger.exception("Shutting down Ray Serve failed; stopping the Ray head anyway")


def _import_ray_for_head() -> tuple[Any, bool]:
    """Import Ray with its cluster flag off, and return Ray and the flag's previous value."""
    import ray
    import ray._private.ray_constants as ray_constants

    # Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER into this private constant when it is
    # first imported, so a process that imported Ray earlier needs the constant set too.
    previous = bool(ray_constants.ENABLE_RAY_CLUSTER)
    ray_constants.ENABLE_RAY_CLUSTER = False
    return ray, previous


def _set_cluster_flag(value: bool) -> None:
    import ray._private.ray_constants as ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = value


def _silence_driver_prints(ray: Any) -> None:
    # Ray 2.60 prints error messages of its raylet to this process's stdout, even with
    # log_to_driver=False. The stdio MCP server's stdout carries JSON-RPC only, so these
    # prints are switched off; the messages stay in the session's log files.
    # `_worker_logs_enabled` is a private flag of Ray 2.60, which ray.util.rpdb sets too.
    ray._private.worker._worker_logs_enabled = False


def _gcs_address(ray: Any) -> str:
    return str(ray.get_runtime_context().gcs_address)


def _ensure_token(path: Path) -> Path:
    """Create a random token file readable only by this user, unless one exists."""
    if not path.exists():
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="ascii") as token_file:
            token_file.write(secrets.token_hex(32))
    return path


def _reset_token_cache() -> None:
    """Make Ray read the auth settings and token again; it caches those of an earlier head in this process."""
    raylet: Any = importlib.import_module("ray._raylet")
    raylet.Config.initialize("")
    raylet.AuthenticationTokenLoader.instance().reset_cache()


def _set_env(**values: str) -> dict[str, str | None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    return saved


def _restore_env(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _node_entry(node: dict[str, Any]) -> dict[str, Any]:
    resources = node.get("Resources", {})
    return {
        "node_id": node.get("NodeID", ""),
        "alive": bool(node.get("Alive", False)),
        "host_name": node.get("NodeManagerHostname"),
        "address": node.get("NodeManagerAddress"),
        "cpus": resources.get("CPU", 0),
        "gpus": resources.get("GPU", 0),
        # Ray's `memory` resource: the RAM that tasks and actors may reserve, not the node's total RAM.
        "memory_bytes": int(resources.get("memory", 0)),
        "object_store_memory_bytes": int(resources.get("object_store_memory", 0)),
    }


def _resource_totals(resources: dict[str, float]) -> dict[str, float]:
    return {
        "CPU": resources.get("CPU", 0),
        "GPU": resources.get("GPU", 0),
        "memory": resources.get("memory", 0),
        "object_store_memory": resources.get("object_store_memory", 0),
    }


def _kill_leftovers(session_dir: Path) -> list[int]:
    deadline = time.monotonic() + _EXIT_WAIT
    while time.monotonic() < deadline:
        leftovers = session_processes(session_dir)
        if not leftovers:
            return []
        time.sleep(_EXIT_POLL)
    leftovers = session_processes(session_dir)
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    if leftovers:
        logger.warning("Killed Ray processes %s that outlived ray.shutdown", leftovers)
    return leftovers


def _processes() -> Iterator[tuple[int, list[str]]]:
    """Yield the pid and the command-line arguments of each process, on Linux."""
    if not sys.platform.startswith("linux"):
        return
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        arguments = [part.decode(errors="replace") for part in raw.split(b"\0") if part]
        if arguments:
            yield int(entry.name), arguments


def _ray_package_dir() -> str | None:
    spec = importlib.util.find_spec("ray")
    if spec is None or spec.origin is None:
        return None
    return str(Path(spec.origin).parent) + os.sep


def _is_ray_process(arguments: list[str], package: str | None) -> bool:
    """Return whether the command line is one of Ray's: a renamed `ray::` worker, or Ray's own program."""
    if arguments[0].startswith("ray::"):
        return True
    # Ray's daemons are executables in its package (raylet, gcs_server) or Python
    # scripts in it (log_monitor.py, dashboard.py, default_worker.py).
    return package is not None and any(argument.startswith(package) for argument in arguments[:3])


def _has_open(pid: int, markers: tuple[str, ...]) -> bool:
    """Return whether the process has a file open under one of the `markers` folders."""
    try:
        descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for descriptor in descriptors:
        try:
            target = os.readlink(descriptor)
        except OSError:
            continue
        if target.startswith(markers):
            return True
    return False
