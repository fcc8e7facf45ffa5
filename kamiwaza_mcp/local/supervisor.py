"""Start, watch and stop engine worker processes.

A worker is `python -m kamiwaza_mcp.local.worker ...` in a session of its own, so
a Ctrl-C at the terminal reaches only the platform, which then stops its workers
in order. Its stdout and stderr are appended to the instance's log file. A worker
is ready once it has written its port file and `/health` returns 200.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
from anyio.abc import Process, TaskGroup

from .engines.vllm_server import vllm_server_command
from .log_patterns import CODE_LINE, LOAD_FAILURE_PATTERN, OOM_PATTERN
from .oom import oom_kill_count
from .settings import LocalPlatformSettings
from .store import utc_now

__all__ = ["Supervisor", "Worker", "WorkerSpec", "WorkerStartError", "classify_exit", "stop_stale_worker"]

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
LOG_TAIL_LINES = 20
_POLL_INTERVAL = 0.2
_HEALTH_TIMEOUT = 2.0
_KILL_WAIT = 10.0
_WORKER_MODULE = "kamiwaza_mcp.local.worker"


class WorkerStartError(Exception):
    """A worker exited or timed out before it became healthy.

    `code` is one of MODEL_LOADING_FAILURE, OOM, CONTAINER_EXITED or STARTUP_TIMEOUT.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class WorkerSpec:
    """The model, engine and log file of one worker."""

    deployment_id: str
    instance_id: str
    engine: str
    model_path: Path
    served_model_name: str
    log_file: Path
    device: str = "auto"
    env_overrides: dict[str, str | None] = field(default_factory=dict)


@dataclass(eq=False)
class Worker:
    """A running worker process.

    `in_flight` counts the proxied requests it is serving and `requests_served` those it
    finished. `kill_reason` is set when the platform kills an unresponsive worker, and
    `oom_kills_at_start` is the cgroup's OOM kill counter when it started (None when unknown).
    """

    spec: WorkerSpec
    process: Process
    log_offset: int
    port_file: Path
    port: int | None = None
    in_flight: int = 0
    requests_served: int = 0
    failed_probes: int = 0
    stopping: bool = False
    kill_reason: str | None = None
    oom_kills_at_start: int | None = None
    returncode: int | None = None
    exited: anyio.Event = field(default_factory=anyio.Event)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ready(self) -> bool:
        return self.port is not None and not self.exited.is_set()


ExitCallback = Callable[[Worker, WorkerStartError], Awaitable[None]]


class Supervisor:
    """Owns the worker processes of one platform.

    Each worker gets a task in `task_group` that waits for the process to end.
    `on_unexpected_exit` runs when a ready worker ends without a stop request.
    """

    def __init__(
        self,
        settings: LocalPlatformSettings,
        http: httpx.AsyncClient,
        task_group: TaskGroup,
        on_unexpected_exit: ExitCallback,
    ) -> None:
        self._settings = settings
        self._http = http
        self._task_group = task_group
        self._on_unexpected_exit = on_unexpected_exit
        self._workers: set[Worker] = set()

    async def start(self, spec: WorkerSpec, on_spawn: Callable[[Worker], None]) -> Worker:
        """Start a worker and wait until it is healthy.

        `on_spawn` receives the worker right after the process starts, so a caller can
        stop it before it is ready. Raises WorkerStartError when the worker exits early
        or misses `worker_start_timeout`. A cancelled start kills the process.
        """
        worker = await self._spawn(spec)
        try:
            on_spawn(worker)
            with anyio.move_on_after(self._settings.worker_start_timeout) as scope:
                worker.port = await self._wait_ready(worker)
            if scope.cancelled_caught:
                await self.stop(worker, grace=0)
                raise WorkerStartError(
                    "STARTUP_TIMEOUT",
                    f"worker {spec.instance_id} did not become healthy within "
                    f"{self._settings.worker_start_timeout:g} s; raise worker_start_timeout for large models. "
                    + _format_tail(read_log_tail(worker)),
                )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.stop(worker, grace=0)
            raise
        logger.info(
            "Worker %s of deployment %s is ready on port %d",
            spec.instance_id,
            spec.deployment_id,
            worker.port,
        )
        return worker

    async def stop(self, worker: Worker, *, grace: float | None = None) -> None:
        """Send SIGTERM to the worker's process group, then SIGKILL after `grace` seconds.

        `grace` None uses `worker_stop_grace`, and 0 sends SIGKILL at once.
        """
        worker.stopping = True
        if worker.exited.is_set():
            return
        grace = self._settings.worker_stop_grace if grace is None else grace
        if grace > 0:
            _signal_group(worker, signal.SIGTERM)
            with anyio.move_on_after(grace):
                await worker.exited.wait()
            if worker.exited.is_set():
                return
            logger.warning(
                "Worker %s ignored SIGTERM for %g s; sending SIGKILL", worker.spec.instance_id, grace
            )
        _signal_group(worker, signal.SIGKILL)
        with anyio.fail_after(_KILL_WAIT):
            await worker.exited.wait()

    def kill(self, worker: Worker, reason: str) -> None:
        """Send SIGKILL to a worker that stopped responding, so its exit is reported as unexpected."""
        if worker.exited.is_set() or worker.stopping:
            return
        worker.kill_reason = reason
        logger.error("Killing worker %s (pid %d): %s", worker.spec.instance_id, worker.pid, reason)
        _signal_group(worker, signal.SIGKILL)

    async def stop_all(self) -> None:
        """Stop every worker at once; used when the platform exits."""
        async with anyio.create_task_group() as group:
            for worker in list(self._workers):
                group.start_soon(self.stop, worker)

    async def _spawn(self, spec: WorkerSpec) -> Worker:
        # A fresh name per start, so a worker of an earlier run of this replica (say one
        # orphaned by a killed platform) can never write the port this start waits for.
        port_file = self._settings.run_dir / f"{spec.instance_id}.{secrets.token_hex(4)}.port"
        port_file.parent.mkdir(parents=True, exist_ok=True)
        spec.log_file.parent.mkdir(parents=True, exist_ok=True)

        command = self._command(spec, port_file)
        with spec.log_file.open("ab") as log:
            log.write(f"--- {utc_now()} starting worker {spec.instance_id}: {' '.join(command)}\n".encode())
            log.flush()
            offset = log.tell()
            process = await anyio.open_process(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_worker_env(spec.env_overrides),
                start_new_session=True,
            )
        worker = Worker(
            spec=spec,
            process=process,
            log_offset=offset,
            port_file=port_file,
            oom_kills_at_start=oom_kill_count(),
        )
        self._workers.add(worker)
        self._task_group.start_soon(self._reap, worker)
        logger.info(
            "Started worker %s (pid %d) of deployment %s", spec.instance_id, process.pid, spec.deployment_id
        )
        return worker

    def _command(self, spec: WorkerSpec, port_file: Path) -> list[str]:
        python = self._settings.python_executable
        if spec.engine == "vllm":
            # vLLM's server takes a port instead of writing a port file, so the platform picks
            # a free port and writes the file itself. Readiness is then vLLM's /health.
            port = _free_port()
            port_file.write_text(str(port))
            return vllm_server_command(
                python, spec.model_path, host=HOST, port=port, served_model_name=spec.served_model_name
            )
        return [
            python,
            "-m",
            _WORKER_MODULE,
            "--engine",
            spec.engine,
            "--model-path",
            str(spec.model_path),
            "--host",
            HOST,
            "--port-file",
            str(port_file),
            "--served-model-name",
            spec.served_model_name,
            "--device",
            spec.device,
        ]

    async def _wait_ready(self, worker: Worker) -> int:
        while True:
            if worker.exited.is_set():
                raise _early_exit_error(worker)
            port = _read_port(worker.port_file)
            if port is not None and await self._is_healthy(port):
                return port
            with anyio.move_on_after(_POLL_INTERVAL):
                await worker.exited.wait()

    async def _is_healthy(self, port: int) -> bool:
        try:
            response = await self._http.get(f"http://{HOST}:{port}/health", timeout=_HEALTH_TIMEOUT)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def _reap(self, worker: Worker) -> None:
        """Wait for the worker to end, record its exit code, and report an exit without a stop request."""
        try:
            worker.returncode = await worker.process.wait()
        finally:
            # Cancelled means the platform is going away without having stopped this
            # worker, so it is killed here rather than left running.
            with anyio.CancelScope(shield=True):
                await self._close_process(worker)
        if worker.stopping or worker.port is None:
            logger.info("Worker %s exited with code %s", worker.spec.instance_id, worker.returncode)
            return
        error = _early_exit_error(worker)
        logger.error(
            "Worker %s of deployment %s died: %s", worker.spec.instance_id, worker.spec.deployment_id, error
        )
        await self._on_unexpected_exit(worker, error)

    async def _close_process(self, worker: Worker) -> None:
        if worker.returncode is None:
            worker.stopping = True
            _signal_group(worker, signal.SIGKILL)
            with anyio.move_on_after(_KILL_WAIT):
                worker.returncode = await worker.process.wait()
        await worker.process.aclose()
        worker.exited.set()
        self._workers.discard(worker)
        worker.port_file.unlink(missing_ok=True)
        _append_log(worker.spec.log_file, f"--- {utc_now()} worker exited with code {worker.returncode}\n")


def classify_exit(log_lines: list[str], returncode: int | None, oom_killed: bool | None = None) -> str:
    """Name the cause of a worker's exit from the last lines of its log and its exit code.

    `oom_killed` is whether the kernel's OOM killer killed a process of the cgroup
    meanwhile, or None when that is unknown.
    """
    for line in reversed(log_lines):
        marked = CODE_LINE.match(line)
        if marked:
            return marked.group(1)
    text = "\n".join(log_lines)
    if OOM_PATTERN.search(text):
        return "OOM"
    if returncode == -signal.SIGKILL and oom_killed is not False:
        # Without the cgroup's counter, a SIGKILL the platform did not send is taken
        # to come from the OOM killer, its most common source.
        return "OOM"
    if LOAD_FAILURE_PATTERN.search(text):
        return "MODEL_LOADING_FAILURE"
    return "CONTAINER_EXITED"


def stop_stale_worker(pid: int, instance_id: str) -> bool:
    """Kill a worker left running by an earlier platform process, if `pid` still is one.

    The process counts as that worker only when its command line runs the worker module
    for `instance_id`, so a reused pid is left alone. Linux only, because it reads /proc.
    Returns whether a worker was killed.
    """
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if _WORKER_MODULE.encode() not in arguments or not any(instance_id.encode() in arg for arg in arguments):
        return False
    try:
        # The worker leads its own process group, so this ends what it started too.
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    logger.warning("Killed worker %s (pid %d) left running by an earlier platform process", instance_id, pid)
    return True


def read_log_tail(worker: Worker, max_lines: int = LOG_TAIL_LINES) -> list[str]:
    """Return the last lines this run of the worker wrote to its log."""
    try:
        with worker.spec.log_file.open("rb") as log:
            log.seek(worker.log_offset)
            text = log.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return [f"(log {worker.spec.log_file} could not be read: {exc})"]
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("--- ")]
    return lines[-max_lines:]


def _early_exit_error(worker: Worker) -> WorkerStartError:
    lines = read_log_tail(worker)
    if worker.kill_reason is not None:
        message = f"the platform killed worker {worker.spec.instance_id}: {worker.kill_reason}. "
        return WorkerStartError("CONTAINER_EXITED", message + _format_tail(lines))
    oom_killed = _oom_killed_since(worker.oom_kills_at_start)
    code = classify_exit(lines, worker.returncode, oom_killed)
    message = f"worker {worker.spec.instance_id} exited with code {worker.returncode}"
    if worker.returncode == -signal.SIGKILL:
        message += _sigkill_cause(oom_killed)
    return WorkerStartError(code, message + ". " + _format_tail(lines))


def _oom_killed_since(count_at_start: int | None) -> bool | None:
    now = oom_kill_count()
    if count_at_start is None or now is None:
        return None
    return now > count_at_start


def _sigkill_cause(oom_killed: bool | None) -> str:
    if oom_killed is None:
        return " (SIGKILL, most likely from the kernel's out-of-memory killer)"
    if oom_killed:
        return " (SIGKILL from the kernel's out-of-memory killer)"
    return " (SIGKILL from another process; the cgroup's out-of-memory counter did not change)"


def _format_tail(lines: list[str]) -> str:
    if not lines:
        return "The worker log is empty."
    return "Last log lines:\n" + "\n".join(lines)


def _free_port() -> int:
    """Return a loopback port that is free now; another process may still take it before vLLM binds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _read_port(port_file: Path) -> int | None:
    """Read the port a worker wrote, or None while the file is missing or incomplete."""
    try:
        text = port_file.read_text().strip()
    except FileNotFoundError:
        return None
    if not text.isdigit() or not 0 < int(text) < 65536:
        return None
    return int(text)


def _worker_env(overrides: dict[str, str | None]) -> dict[str, str]:
    """Build the worker's environment: ours, then the deployment's runtime_env (None removes a key)."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _signal_group(worker: Worker, signum: int) -> None:
    """Signal the worker's whole process group, so processes it started end with it."""
    try:
        os.killpg(worker.pid, signum)
    except ProcessLookupError:
        return


def _append_log(path: Path, line: str) -> None:
    try:
        with path.open("a", encoding="utf-8") as log:
            log.write(line)
    except OSError as exc:
        logger.warning("Could not append to worker log %s: %s", path, exc)
