"""The embedded local platform: the Kamiwaza serving API over worker processes on this machine."""

from __future__ import annotations

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

from .app import create_app
from .engines import ENGINE_NAMES
from .errors import ConflictError, InvalidInputError, NotFoundError
from .launcher import ACTIVE_STATUSES, Launcher
from .ray_cluster import RayCluster
from .registry import DEFAULT_CONFIG_NAME, DEFAULT_ENGINE, ModelRegistry, RegistrationError, config_id_of
from .schemas import CreateModelDeployment, Model, UIModelDeployment
from .settings import LocalPlatformSettings
from .store import DeploymentRecord, ModelRecord, Store, utc_now
from .views import deployment_view, file_ids_of, model_view

__all__ = ["LocalPlatform"]

logger = logging.getLogger(__name__)

# Engine names a Kamiwaza client may send that mean "the platform's default engine" here.
_DEFAULT_ENGINE_ALIASES = frozenset({"", "auto", "vllm"})
_CONNECT_TIMEOUT = 5.0

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
        self._locks: dict[str, anyio.Lock] = {}

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

    async def __aenter__(self) -> Self:
        if self._stack is not None:
            raise RuntimeError("this LocalPlatform is already running; create another one for a second run")
        stack = AsyncExitStack()
        try:
            await self._open(stack)
        except BaseException:
            await stack.aclose()
            self._store = self._http = self._registry = self._launcher = None
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.__aexit__(exc_type, exc, tb)
        self._store = self._http = self._registry = self._launcher = None

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
        await self._registry.sync()
        self._restore()
        logger.info("Local platform started with state in %s", settings.state_path)

    def _restore(self) -> None:
        for record in self.store.list_deployments(statuses=ACTIVE_STATUSES):
            logger.info("Restoring deployment %s (%s, was %s)", record.id, record.model_name, record.status)
            # Committed first, so no request reads DEPLOYED before the workers run again.
            self.store.set_deployment_status(record.id, "DEPLOYING", expected=ACTIVE_STATUSES)
            self.launcher.schedule(record.id, self._model_path(record.model_id))

    async def _shutdown(self, task_group: TaskGroup) -> None:
        with anyio.CancelScope(shield=True):
            await self.launcher.shutdown()
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
        engine = _select_engine(request)
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
        )
        self.store.insert_deployment(record)
        logger.info(
            "Deployment %s of model %s requested with %d replicas",
            record.id,
            model.id,
            request.starting_copies,
        )
        self.launcher.schedule(record.id, Path(model.path))
        return record.id

    async def stop_deployment(self, deployment_id: str, *, force: bool = False) -> bool:
        """Stop the workers and mark the deployment STOPPED; `force` skips the SIGTERM grace period."""
        async with self._lock(deployment_id):
            self.require_deployment(deployment_id)
            self.store.set_deployment_status(deployment_id, "STOPPED")
            await self.launcher.stop(deployment_id, grace=0 if force else None)
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
                await self.launcher.stop(deployment_id)
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
                await self.launcher.stop(deployment_id)
                self.store.set_deployment_status(deployment_id, "DEPLOYING", clear_error=True)
                self.launcher.schedule(deployment_id, self._model_path(record.model_id))
                logger.info("Deployment %s is loading again", deployment_id)
        return self.deployment_view(deployment_id)

    async def estimate(self, request: CreateModelDeployment) -> dict[str, Any]:
        """Estimate one replica's memory with the config's context length and the request's concurrency."""
        from .vram import estimate_deployment

        model = self.require_model(str(request.m_id))
        self._check_config(model, request)
        try:
            estimate = await anyio.to_thread.run_sync(
                lambda: estimate_deployment(
                    Path(model.path),
                    context_length=model.info.get("context_length"),
                    concurrency=request.max_concurrent_requests or 1,
                    replicas=request.starting_copies,
                    force_cpu=request.force_cpu,
                )
            )
        except (OSError, ValueError) as exc:
            raise InvalidInputError(
                f"cannot estimate the memory of model {model.id} in {model.path}: {exc}"
            ) from exc
        return estimate.as_response()

    def require_deployment(self, deployment_id: str) -> DeploymentRecord:
        record = self.store.get_deployment(deployment_id)
        if record is None:
            raise NotFoundError(
                f"deployment {deployment_id} not found; GET /api/serving/deployments lists them"
            )
        return record

    def deployment_view(self, deployment_id: str) -> UIModelDeployment:
        record = self.require_deployment(deployment_id)
        return deployment_view(record, self.store.list_instances(deployment_id))

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


def _select_engine(request: CreateModelDeployment) -> str:
    """Pick the local engine: a local engine named in the request, else the default engine."""
    for name in (request.engine_name, request.engine):
        if name in ENGINE_NAMES:
            return name
    requested = (request.engine_name or "").lower()
    if requested not in _DEFAULT_ENGINE_ALIASES:
        raise InvalidInputError(
            f"engine {request.engine_name!r} is not available on the local platform; "
            f"use one of {', '.join(ENGINE_NAMES)}, or leave engine_name unset"
        )
    return DEFAULT_ENGINE


def _require(value: _T | None) -> _T:
    if value is None:
        raise RuntimeError("the LocalPlatform is not running; use it as `async with LocalPlatform(settings)`")
    return value
