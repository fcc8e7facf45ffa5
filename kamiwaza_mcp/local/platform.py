"""The embedded local platform: the Kamiwaza serving API over worker processes on this machine."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import anyio
import httpx
from anyio.abc import TaskGroup
from starlette.applications import Starlette

from . import logs
from .admission import Admission
from .app import create_app
from .backends import ReplicaBackend
from .engines import ENGINE_NAMES
from .engines.selection import EngineUnavailableError, choose_engine, detect_hardware
from .errors import ConflictError, InsufficientMemoryError, InvalidInputError, NotFoundError
from .launcher import ACTIVE_STATUSES, Launcher
from .monitor import monitor_workers
from .ray_backend import RayBackend
from .ray_cluster import RayCluster
from .registry import DEFAULT_CONFIG_NAME, ModelRegistry, RegistrationError, config_id_of
from .schemas import (
    ContainerLogListResponse,
    ContainerLogPatternResponse,
    ContainerLogResponse,
    CreateModelDeployment,
    Model,
    ModelInstance,
    UIModelDeployment,
)
from .settings import LocalPlatformSettings
from .store import DeploymentRecord, InstanceRecord, ModelRecord, Store, utc_now
from .supervisor import stop_stale_worker
from .views import deployment_view, file_ids_of, file_name_of, instance_view, model_view

__all__ = ["LocalPlatform"]

logger = logging.getLogger(__name__)

_CONNECT_TIMEOUT = 5.0
# `runtime_env` key that makes deploy_model skip the memory check (values "true", "1" or "yes").
FORCE_ENV_KEY = "KAMIWAZA_FORCE"

_T = TypeVar("_T")


class LocalPlatform:
    """The local platform as an async context manager around its ASGI app.

    Entering opens the store, syncs the model folders and launches again the
    deployments that were REQUESTED, DEPLOYING or DEPLOYED when the last process
    ended. Exiting stops every worker but keeps the stored statuses, so the next
    start restores the same deployments. Enter and exit in the same task, because
    the platform runs a task group for its background launches.
    """

    def __init__(self, settings: LocalPlatformSettings | None = None) -> None:
        self.settings = settings or LocalPlatformSettings()
        self.ray = RayCluster(self.settings.state_path)
        self._app = create_app(self)
        self._stack: AsyncExitStack | None = None
        self._store: Store | None = None
        self._http: httpx.AsyncClient | None = None
        self._registry: ModelRegistry | None = None
        self._launcher: Launcher | None = None
        self._ray_backend: RayBackend | None = None
        self._locks: dict[str, anyio.Lock] = {}
        self._admissions: dict[str, Admission] = {}

    @property
    def app(self) -> Starlette:
        """The ASGI app: the API under `/api` and the OpenAI-compatible routes under `/runtime`."""
        return self._app

    @property
    def store(self) -> Store:
        return _require(self._store)

    @property
    def http(self) -> httpx.AsyncClient:
        """The HTTP client for requests to the workers on 127.0.0.1."""
        return _require(self._http)

    @property
    def registry(self) -> ModelRegistry:
        return _require(self._registry)

    @property
    def launcher(self) -> Launcher:
        return _require(self._launcher)

    @property
    def ray_backend(self) -> RayBackend:
        """The backend of deployments whose replicas run on Ray Serve."""
        return _require(self._ray_backend)

    def backend_of(self, record: DeploymentRecord) -> ReplicaBackend:
        """Return the backend the deployment was created on: local worker processes or Ray Serve."""
        return self.ray_backend if record.backend == "ray" else self.launcher

    async def __aenter__(self) -> Self:
        if self._stack is not None:
            raise RuntimeError("this LocalPlatform is already running; create another one for a second run")
        stack = AsyncExitStack()
        try:
            await self._open(stack)
        except BaseException:
            await stack.aclose()
            self._store = self._http = self._registry = self._launcher = self._ray_backend = None
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.__aexit__(exc_type, exc, tb)
        self._store = self._http = self._registry = self._launcher = self._ray_backend = None

    async def _open(self, stack: AsyncExitStack) -> None:
        settings = self.settings
        settings.state_path.mkdir(parents=True, exist_ok=True)
        store = Store.open(settings.database_path)
        stack.callback(store.close)
        # trust_env=False keeps HTTP(S)_PROXY settings from routing loopback traffic through a proxy.
        http = httpx.AsyncClient(
            trust_env=False, timeout=httpx.Timeout(settings.request_timeout, connect=_CONNECT_TIMEOUT)
        )
        stack.push_async_callback(http.aclose)
        task_group = await stack.enter_async_context(anyio.create_task_group())
        stack.push_async_callback(self._shutdown, task_group)

        self._store, self._http = store, http
        self._registry = ModelRegistry(settings, store)
        self._launcher = Launcher(settings, store, http, task_group)
        self._ray_backend = RayBackend(settings, store, self.ray, task_group)
        await self._registry.sync()
        self._end_stale_workers()
        self._restore()
        task_group.start_soon(monitor_workers, self._launcher, http, settings, name="worker health checks")
        logger.info("Local platform started with state in %s", settings.state_path)

    def _end_stale_workers(self) -> None:
        """Kill the workers an earlier platform process left running, and mark every replica STOPPED.

        A platform that exits normally stops its workers first; one that was killed
        leaves their pids in the store. Those workers end themselves within seconds of
        losing their parent, but one still loading a model must not be adopted or serve on.
        """
        for instance in self.store.list_instances():
            if instance.pid is not None:
                stop_stale_worker(instance.pid, instance.id)
        self.store.set_instances_stopped()

    def _restore(self) -> None:
        for record in self.store.list_deployments(statuses=ACTIVE_STATUSES):
            if record.backend == "ray":
                # Ray is not running yet when the platform starts, and its replicas ended
                # with the last process, so the deployment waits for Ray and a load.
                self.store.set_deployment_status(record.id, "UNLOADED", expected=ACTIVE_STATUSES)
                logger.warning(
                    "Deployment %s ran on Ray, which is not running; it is UNLOADED until Ray is "
                    "started and the deployment is loaded",
                    record.id,
                )
                continue
            logger.info("Restoring deployment %s (%s, was %s)", record.id, record.model_name, record.status)
            # Committed first, so no request reads DEPLOYED before the workers run again.
            self.store.set_deployment_status(record.id, "DEPLOYING", expected=ACTIVE_STATUSES)
            self.launcher.schedule(record.id, self._model_path(record.model_id))

    async def _shutdown(self, task_group: TaskGroup) -> None:
        with anyio.CancelScope(shield=True):
            await self.launcher.shutdown()
            await self.ray_backend.shutdown()
            self.store.set_instances_stopped()
            await self.ray.shutdown()
        task_group.cancel_scope.cancel()
        logger.info("Local platform stopped")

    # Models

    async def register_model(self, path: str) -> Model:
        try:
            record = await self.registry.register(path)
        except RegistrationError as exc:
            raise InvalidInputError(str(exc)) from exc
        return model_view(record)

    def require_model(self, model_id: str) -> ModelRecord:
        record = self.registry.get_model(model_id)
        if record is None:
            raise NotFoundError(f"model {model_id} not found; GET /api/models/ lists the models")
        return record

    # Deployments

    async def deploy(self, request: CreateModelDeployment) -> str:
        """Record a REQUESTED deployment, launch it in the background and return its id."""
        # NOTE: duration, autoscaling, max_copies, vram_allocation and gpu_allocation are
        # stored and returned but not acted on: a deployment runs starting_copies workers until stopped.
        model = self.require_model(str(request.m_id))
        self._check_config(model, request)
        engine = _select_engine(request, Path(model.path))
        await self._check_fits(model, request)
        # Ray's state is read once here, so the deployment's backend is fixed at creation.
        backend = "ray" if self.ray.running else "process"
        if backend == "ray" and engine == "vllm":
            raise InvalidInputError(
                "engine 'vllm' runs as its own server process and cannot run as a Ray Serve replica; "
                "stop the Ray cluster or choose engine_name 'transformers'"
            )

        now = utc_now()
        record = DeploymentRecord(
            id=str(uuid.uuid4()),
            model_id=model.id,
            model_name=model.info["name"],
            config_id=config_id_of(model.id),
            config_name=DEFAULT_CONFIG_NAME,
            engine=engine,
            served_model_name=model.info["name"],
            context_length=model.info.get("context_length"),
            request=request.model_dump(mode="json"),
            status="REQUESTED",
            last_error_code=None,
            last_error_message=None,
            last_error_at=None,
            requested_at=now,
            created_at=now,
            deployed_at=None,
            updated_at=now,
            backend=backend,
        )
        self.store.insert_deployment(record)
        logger.info(
            "Deployment %s of model %s requested with %d replicas on %s",
            record.id,
            model.id,
            request.starting_copies,
            "Ray Serve" if backend == "ray" else "local worker processes",
        )
        self.backend_of(record).schedule(record.id, Path(model.path))
        return record.id

    async def stop_deployment(self, deployment_id: str, *, force: bool = False) -> bool:
        """Stop the workers and mark the deployment STOPPED; `force` skips the SIGTERM grace period."""
        async with self._lock(deployment_id):
            record = self.require_deployment(deployment_id)
            self.store.set_deployment_status(deployment_id, "STOPPED")
            await self.backend_of(record).stop(deployment_id, grace=0 if force else None)
            self.store.set_instances_stopped(deployment_id)
        logger.info("Deployment %s STOPPED", deployment_id)
        return True

    async def unload(self, deployment_id: str) -> UIModelDeployment:
        """Stop the workers but keep the deployment, as UNLOADED, for a later load."""
        async with self._lock(deployment_id):
            record = self.require_deployment(deployment_id)
            if record.status != "UNLOADED":
                if record.status not in ACTIVE_STATUSES:
                    raise ConflictError(
                        f"deployment {deployment_id} is {record.status}; only a REQUESTED, DEPLOYING or "
                        "DEPLOYED deployment can be unloaded"
                    )
                self.store.set_deployment_status(deployment_id, "UNLOADED")
                await self.backend_of(record).stop(deployment_id)
                self.store.set_instances_stopped(deployment_id)
                logger.info("Deployment %s UNLOADED", deployment_id)
        return self.deployment_view(deployment_id)

    async def load(self, deployment_id: str) -> UIModelDeployment:
        """Start the workers of an UNLOADED or FAILED deployment again, under the same id."""
        async with self._lock(deployment_id):
            record = self.require_deployment(deployment_id)
            if record.status not in ACTIVE_STATUSES:
                if record.status not in ("UNLOADED", "FAILED"):
                    raise ConflictError(
                        f"deployment {deployment_id} is {record.status}; deploy the model again with "
                        "POST /api/serving/deploy_model"
                    )
                if record.backend == "ray" and not self.ray.running:
                    raise ConflictError(
                        f"deployment {deployment_id} runs on Ray, which is not running; start Ray with "
                        "POST /api/serving/start, then load the deployment"
                    )
                backend = self.backend_of(record)
                await backend.stop(deployment_id)
                self.store.set_deployment_status(deployment_id, "DEPLOYING", clear_error=True)
                backend.schedule(deployment_id, self._model_path(record.model_id))
                logger.info("Deployment %s is loading again", deployment_id)
        return self.deployment_view(deployment_id)

    async def estimate(self, request: CreateModelDeployment) -> dict[str, Any]:
        """Estimate one replica's memory with the config's context length and the request's concurrency."""
        model = self.require_model(str(request.m_id))
        self._check_config(model, request)
        return await self._estimate_model(model, request)

    async def _estimate_model(self, model: ModelRecord, request: CreateModelDeployment) -> dict[str, Any]:
        from .vram import estimate_deployment

        weights_file = file_name_of(model, str(request.m_file_id)) if request.m_file_id else None
        try:
            estimate = await anyio.to_thread.run_sync(
                lambda: estimate_deployment(
                    Path(model.path),
                    context_length=model.info.get("context_length"),
                    concurrency=request.max_concurrent_requests or 1,
                    replicas=request.starting_copies,
                    force_cpu=request.force_cpu,
                    weights_file=weights_file,
                )
            )
        except (OSError, ValueError) as exc:
            raise InvalidInputError(
                f"cannot estimate the memory of model {model.id} in {model.path}: {exc}"
            ) from exc
        return estimate.as_response()

    async def _check_fits(self, model: ModelRecord, request: CreateModelDeployment) -> None:
        """Raise InsufficientMemoryError when the deployment's estimate exceeds the free memory.

        `runtime_env` {"KAMIWAZA_FORCE": "true"} skips the check. A model the estimate
        cannot read is deployed without the check, and its workers report any failure.
        """
        # NOTE: the free memory is this machine's, also for a deployment that will run on a
        # Ray cluster, whose nodes may have more or less.
        if _forced(request):
            logger.warning("Deploying model %s without the memory check (%s is set)", model.id, FORCE_ENV_KEY)
            return
        if self.ray.running and not self.ray.owned:
            # The replicas go to the joined cluster's nodes, whose free memory this machine cannot read.
            logger.info("Deploying model %s to a joined Ray cluster without the memory check", model.id)
            return
        try:
            estimate = await self._estimate_model(model, request)
        except InvalidInputError as exc:
            logger.warning("Deploying model %s without a memory estimate: %s", model.id, exc.detail)
            return
        if estimate["fits"]:
            return
        logger.warning(
            "Rejected a deployment of model %s: it needs %d bytes and %d are free",
            model.id,
            estimate["total_bytes"],
            estimate["available_bytes"],
        )
        raise InsufficientMemoryError(_does_not_fit_message(model, estimate), estimate)

    def require_deployment(self, deployment_id: str) -> DeploymentRecord:
        record = self.store.get_deployment(deployment_id)
        if record is None:
            raise NotFoundError(
                f"deployment {deployment_id} not found; GET /api/serving/deployments lists them"
            )
        return record

    def deployment_view(self, deployment_id: str) -> UIModelDeployment:
        return self.view_of(self.require_deployment(deployment_id))

    def view_of(self, record: DeploymentRecord) -> UIModelDeployment:
        """Build the deployment's view with its request counters and its workers' live counters."""
        return deployment_view(
            record,
            self.store.list_instances(record.id),
            health_details=self._admission_stats(record),
            live=self._worker_counters(record.id),
        )

    def instance_view_of(self, instance: InstanceRecord, record: DeploymentRecord) -> ModelInstance:
        return instance_view(instance, record.engine, self._worker_counters(record.id).get(instance.id))

    def admission_of(self, record: DeploymentRecord) -> Admission:
        """Return the deployment's request admission, created on its first proxied request."""
        admission = self._admissions.get(record.id)
        if admission is None:
            admission = Admission(record.id, record.request.get("max_concurrent_requests"))
            self._admissions[record.id] = admission
        return admission

    def _admission_stats(self, record: DeploymentRecord) -> dict[str, Any]:
        admission = self._admissions.get(record.id)
        if admission is None:
            admission = Admission(record.id, record.request.get("max_concurrent_requests"))
        return admission.stats()

    def _worker_counters(self, deployment_id: str) -> dict[str, dict[str, Any]]:
        return {
            worker.spec.instance_id: {
                "in_flight": worker.in_flight,
                "requests_served": worker.requests_served,
            }
            for worker in self.launcher.ready_workers(deployment_id)
        }

    # Logs

    async def logs(self, deployment_id: str, *, lines: int, instance_id: str | None) -> ContainerLogResponse:
        """Return the newest `lines` lines of the deployment's worker logs, or of one replica's."""
        record = self.require_deployment(deployment_id)
        instances = self.store.list_instances(deployment_id)
        if instance_id is not None and instance_id not in {instance.id for instance in instances}:
            raise NotFoundError(
                f"model instance {instance_id} not found in deployment {deployment_id}; "
                f"GET /api/serving/model_instances?deployment_id={deployment_id} lists its instances"
            )
        active = any(instance.pid is not None for instance in instances)
        return await anyio.to_thread.run_sync(
            lambda: logs.deployment_logs(
                record,
                instances,
                lines=lines,
                instance_id=instance_id,
                capture_active=active,
                logs_dir=self.settings.logs_dir,
            )
        )

    async def log_patterns(self, deployment_id: str) -> ContainerLogPatternResponse:
        record = self.require_deployment(deployment_id)
        instances = self.store.list_instances(deployment_id)
        return await anyio.to_thread.run_sync(logs.log_patterns, record, instances)

    async def engine_logs(self, engine_type: str) -> ContainerLogListResponse:
        deployments = [
            (record, self.store.list_instances(record.id)) for record in self.store.list_deployments()
        ]
        return await anyio.to_thread.run_sync(logs.engine_log_list, engine_type, deployments)

    def _check_config(self, model: ModelRecord, request: CreateModelDeployment) -> None:
        if str(request.m_config_id) != config_id_of(model.id):
            raise NotFoundError(
                f"model config {request.m_config_id} not found for model {model.id}; "
                f"GET /api/models/{model.id}/configs lists its configs"
            )
        if request.m_file_id is not None and str(request.m_file_id) not in file_ids_of(model):
            raise NotFoundError(
                f"model file {request.m_file_id} not found in model {model.id}; "
                f"GET /api/models/{model.id} lists its files, or leave m_file_id unset"
            )

    def _model_path(self, model_id: str) -> Path | None:
        model = self.registry.get_model(model_id)
        return Path(model.path) if model else None

    def _lock(self, deployment_id: str) -> anyio.Lock:
        return self._locks.setdefault(deployment_id, anyio.Lock())


def _select_engine(request: CreateModelDeployment, model_path: Path) -> str:
    """Pick the engine: the one engine_name forces, else one chosen by the model's files and the hardware.

    A Kamiwaza client may send "auto" or an empty engine_name to mean the platform's
    choice. `engine` is followed only when it names a worker engine, because clients
    send its schema default "vllm" without choosing it.
    """
    requested = (request.engine_name or "").strip().lower() or None
    if requested == "auto":
        requested = None
    if requested is None and request.engine in ENGINE_NAMES:
        requested = request.engine
    # A folder with safetensors weights is served from those, as the memory estimate assumes.
    has_gguf = any(model_path.glob("*.gguf")) and not any(model_path.glob("*.safetensors"))
    hardware = detect_hardware()
    if request.force_cpu:
        hardware = dataclasses.replace(hardware, nvidia_gpu=False)
    try:
        return choose_engine(requested, has_gguf=has_gguf, hardware=hardware)
    except EngineUnavailableError as exc:
        raise InvalidInputError(str(exc)) from exc


def _forced(request: CreateModelDeployment) -> bool:
    value = (request.runtime_env or {}).get(FORCE_ENV_KEY) or ""
    return value.strip().lower() in ("true", "1", "yes")


def _does_not_fit_message(model: ModelRecord, estimate: dict[str, Any]) -> str:
    memory = "GPU memory" if estimate["memory_kind"] == "gpu" else "RAM"
    return (
        f"model {model.info['name']} does not fit: {estimate['replicas']} replica(s) need about "
        f"{_gib(estimate['total_bytes'])} ({_gib(estimate['per_replica_bytes'])} each: weights "
        f"{_gib(estimate['weights_bytes'])}, KV cache {_gib(estimate['kv_cache_bytes'])} for "
        f"{estimate['concurrency']} sequences of {estimate['context_length']} tokens, overhead "
        f"{_gib(estimate['overhead_bytes'])}), but {_gib(estimate['available_bytes'])} of {memory} is free; "
        "lower starting_copies or max_concurrent_requests, choose a smaller model, or set runtime_env "
        f"{FORCE_ENV_KEY}=true to deploy anyway"
    )


def _gib(size: int) -> str:
    return f"{size / 1024**3:.2f} GiB"


def _require(value: _T | None) -> _T:
    if value is None:
        raise RuntimeError("the LocalPlatform is not running; use it as `async with LocalPlatform(settings)`")
    return value
