"""Replicas on Ray Serve: the backend of deployments made while Ray runs.

A launch deploys one Serve application per deployment and waits until Serve reports
it RUNNING, DEPLOY_FAILED or UNHEALTHY. Each running replica is then recorded in one
of the deployment's instance slots with its Ray node, IP and pid. Stop and unload
delete the application, and load deploys it again. Generation requests go through a
deployment handle, and Serve picks the replica. Status writes are conditional on the
status a launch expects, as for worker processes, so a stop that lands first wins.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
from anyio.abc import TaskGroup

from . import ray_serve
from .errors import PlatformError
from .launcher import ACTIVE_STATUSES
from .ray_cluster import RayCluster
from .ray_serve import AppState, ReplicaInfo, ReplicaOptions, app_name_of
from .settings import LocalPlatformSettings
from .store import DeploymentRecord, InstanceRecord, Store, utc_now
from .supervisor import HOST, LOG_TAIL_LINES, classify_exit

__all__ = ["RayBackend", "RayNotRunningError", "ServeRequestError"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

_STATUS_POLL = 0.5
# Seconds for one Serve control call (deploy, status, delete). They return in about a
# second, and a delete waits for the replicas' graceful shutdown, which Serve caps at 60 s.
_CONTROL_TIMEOUT = 90.0
_CANCEL_WAIT = 15.0
# Generation calls in flight at once. Each occupies a worker thread while it waits for
# Ray, so they get their own limiter instead of filling anyio's default one.
_MAX_FORWARDS = 64


class ServeRequestError(PlatformError):
    """A generation request failed in Ray Serve or in the replica."""

    status_code = 502


class RayNotRunningError(PlatformError):
    """The deployment's replicas run on Ray, and Ray is not running."""

    status_code = 503


@dataclass(eq=False)
class _Launch:
    deployment_id: str
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    done: anyio.Event = field(default_factory=anyio.Event)


class RayBackend:
    """Places deployments' replicas on Ray Serve; one per platform."""

    def __init__(
        self, settings: LocalPlatformSettings, store: Store, cluster: RayCluster, task_group: TaskGroup
    ) -> None:
        self._settings = settings
        self._store = store
        self._cluster = cluster
        self._task_group = task_group
        self._launches: dict[str, _Launch] = {}
        self._handles: dict[str, Any] = {}
        # Applications deployed in the current Ray session, deleted on exit from a joined cluster.
        self._apps: set[str] = set()
        self._serve_session: object | None = None
        self._forward_limiter = anyio.CapacityLimiter(_MAX_FORWARDS)

    def schedule(self, deployment_id: str, model_path: Path | None) -> None:
        """Deploy the deployment's replicas on Ray Serve in the background."""
        launch = _Launch(deployment_id)
        self._launches[deployment_id] = launch
        self._task_group.start_soon(self._launch, launch, model_path, name=f"ray launch {deployment_id}")

    async def stop(self, deployment_id: str, *, grace: float | None = None) -> None:
        """Cancel the launch and delete the Serve application, waiting until its replicas are gone.

        NOTE: `grace` is not applied: a replica's graceful shutdown time is fixed when it
        is deployed, from worker_stop_grace.
        """
        launch = self._launches.pop(deployment_id, None)
        if launch is not None:
            launch.scope.cancel()
            with anyio.move_on_after(_CANCEL_WAIT):
                await launch.done.wait()
        app_name = app_name_of(deployment_id)
        self._handles.pop(app_name, None)
        if app_name in self._apps and self._serve_running():
            await self._delete(app_name)

    async def shutdown(self) -> None:
        """Cancel every launch and, on a joined cluster, delete this platform's applications.

        The applications on a head the platform started end with the head.
        """
        launches = list(self._launches.values())
        for launch in launches:
            launch.scope.cancel()
        with anyio.move_on_after(_CANCEL_WAIT):
            for launch in launches:
                await launch.done.wait()
        if self._serve_running() and not self._cluster.owned:
            for app_name in sorted(self._apps):
                await self._delete(app_name)
        self._launches.clear()
        self._handles.clear()
        self._apps.clear()

    async def forward(
        self, deployment_id: str, method: str, endpoint: str, body: bytes, content_type: str
    ) -> tuple[int, str | None, bytes]:
        """Send an OpenAI-compatible request to a replica and return its status, content type and body.

        Raises RayNotRunningError when Ray is not running and ServeRequestError when the call fails.
        """
        if not self._cluster.running:
            raise RayNotRunningError(
                f"deployment {deployment_id} runs on Ray, which is not running; start Ray with "
                f"POST /api/serving/start, then POST /api/serving/deployment/{deployment_id}/load"
            )
        app_name = app_name_of(deployment_id)
        try:
            handle = self._handles.get(app_name)
            if handle is None:
                handle = await self._in_thread(ray_serve.get_handle, app_name)
                self._handles[app_name] = handle
            return await anyio.to_thread.run_sync(
                ray_serve.call_replica,
                handle,
                method,
                f"/v1/{endpoint}",
                body,
                content_type,
                self._settings.request_timeout,
                abandon_on_cancel=True,
                limiter=self._forward_limiter,
            )
        except (ray_serve.ServeCallError, TimeoutError) as exc:
            logger.warning(
                "Ray Serve request to deployment %s failed on %s: %r", deployment_id, endpoint, exc
            )
            raise ServeRequestError(
                f"the Ray Serve replicas of deployment {deployment_id} failed: {exc}; "
                "GET /api/serving/health shows their state"
            ) from exc

    async def probe_health(self, probes: list[tuple[dict[str, str], InstanceRecord]]) -> None:
        """Fill in `health` and `detail` of each DEPLOYED instance's entry from Serve's status.

        An instance whose replica Serve replaced is assigned a running replica that no
        other instance has, so the instances follow Serve's replacements.
        NOTE: only this probe reads Serve after a launch. The stored instances change when
        GET /api/serving/health runs, and a deployment stays DEPLOYED while Serve reports
        its application UNHEALTHY.
        """
        if not probes:
            return
        if not self._serve_running():
            for entry, _instance in probes:
                entry.update(health="unknown", detail="Ray Serve is not running in this Ray session")
            return
        names = sorted({app_name_of(instance.deployment_id) for _entry, instance in probes})
        try:
            states = await self._in_thread(ray_serve.app_states, names)
        except Exception as exc:
            # The health route reports the failure per instance instead of failing as a whole.
            logger.warning("Reading Ray Serve's status failed: %r", exc)
            for entry, _instance in probes:
                entry.update(health="unknown", detail=f"reading Ray Serve's status failed: {exc!r}")
            return
        for deployment_id in {instance.deployment_id for _entry, instance in probes}:
            mine = [
                (entry, instance) for entry, instance in probes if instance.deployment_id == deployment_id
            ]
            self._report(mine, states.get(app_name_of(deployment_id)))

    # Launch

    async def _launch(self, launch: _Launch, model_path: Path | None) -> None:
        deployment_id = launch.deployment_id
        try:
            with launch.scope:
                await self._run(launch, model_path)
        except Exception as exc:
            # A bug, a Ray error or a timeout must not end the platform's task group,
            # so it fails this deployment only.
            logger.exception("Ray launch of deployment %s failed", deployment_id)
            with anyio.CancelScope(shield=True):
                if self._serve_running():
                    await self._delete(app_name_of(deployment_id))
            self._fail_instances(deployment_id)
            self._fail(
                deployment_id, "CONTAINER_EXITED", f"the platform could not start the Ray replicas: {exc}"
            )
        finally:
            launch.done.set()

    async def _run(self, launch: _Launch, model_path: Path | None) -> None:
        deployment_id = launch.deployment_id
        if not self._store.set_deployment_status(
            deployment_id, "DEPLOYING", expected=ACTIVE_STATUSES, clear_error=True
        ):
            logger.info("Deployment %s was stopped or unloaded before its Ray launch began", deployment_id)
            return
        record = self._store.get_deployment(deployment_id)
        if record is None:
            raise AssertionError(f"deployment {deployment_id} vanished from the store")
        if model_path is None:
            message = (
                f"the folder of model {record.model_id} ({record.model_name}) is gone; "
                "put the folder back, or register it again and deploy it anew"
            )
            self._fail(deployment_id, "MODEL_LOADING_FAILURE", message)
            return
        if not self._cluster.running:
            message = (
                "Ray is not running; start it with POST /api/serving/start and load the deployment again"
            )
            self._fail(deployment_id, "CONTAINER_EXITED", message)
            return

        instances = self._ensure_slots(record)
        options = await self._in_thread(self._replica_options, record, model_path)
        await self._ensure_serve()
        self._apps.add(options.app_name)
        self._handles.pop(options.app_name, None)
        # Shielded, so a stop cannot abandon a deploy that would then finish after its delete.
        with anyio.CancelScope(shield=True):
            await self._in_thread(ray_serve.deploy_app, options)
        state, timed_out = await self._wait_settled(options.app_name)

        if state is not None and state.status == "RUNNING" and not timed_out:
            self._record_replicas(instances, state.replicas)
            if self._store.set_deployment_status(deployment_id, "DEPLOYED", expected=("DEPLOYING",)):
                logger.info(
                    "Deployment %s is DEPLOYED with %d Ray Serve replicas", deployment_id, len(instances)
                )
            return
        await self._delete(options.app_name)
        self._fail_instances(deployment_id)
        self._fail(deployment_id, *self._failure(options.app_name, state, timed_out))

    def _ensure_slots(self, record: DeploymentRecord) -> list[InstanceRecord]:
        """Return the deployment's replica slots, created when missing and marked DEPLOYING."""
        copies = int(record.request.get("starting_copies", 1))
        existing = self._store.list_instances(record.id)
        for replica in range(len(existing), copies):
            now = utc_now()
            self._store.insert_instance(
                InstanceRecord(
                    id=str(uuid.uuid4()),
                    deployment_id=record.id,
                    replica=replica,
                    status="DEPLOYING",
                    pid=None,
                    host=HOST,
                    port=None,
                    log_file=self._log_folder(),
                    created_at=now,
                    deployed_at=None,
                    updated_at=now,
                )
            )
        instances = self._store.list_instances(record.id)[:copies]
        for instance in instances:
            self._store.set_instance_starting(instance.id)
        return instances

    def _replica_options(self, record: DeploymentRecord, model_path: Path) -> ReplicaOptions:
        """Build the Serve deployment's options; runs in a worker thread because it reads the model's files."""
        request = record.request
        num_gpus = self._gpus_per_replica(record, model_path)
        overrides: dict[str, str | None] = dict(request.get("runtime_env") or {})
        removed = sorted(key for key, value in overrides.items() if value is None)
        if removed:
            logger.warning(
                "Deployment %s: Ray cannot remove environment variables %s from its replicas; they are kept",
                record.id,
                removed,
            )
        return ReplicaOptions(
            app_name=app_name_of(record.id),
            engine=record.engine,
            model_path=str(model_path),
            served_model_name=record.served_model_name,
            device="cuda" if num_gpus > 0 else "cpu",
            num_replicas=int(request.get("starting_copies", 1)),
            max_ongoing_requests=request.get("max_concurrent_requests"),
            num_cpus=self._settings.ray_replica_cpus,
            num_gpus=num_gpus,
            env_vars={key: value for key, value in overrides.items() if value is not None},
            graceful_shutdown_seconds=self._settings.worker_stop_grace,
        )

    def _gpus_per_replica(self, record: DeploymentRecord, model_path: Path) -> float:
        """Return the GPUs one replica reserves: 0 on CPU, else the share of a GPU the estimate needs."""
        from .ray_head import describe_cluster
        from .vram import estimate_deployment

        request = record.request
        if request.get("force_cpu") or describe_cluster().resources.get("GPU", 0) <= 0:
            return 0.0
        try:
            estimate = estimate_deployment(
                model_path,
                context_length=record.context_length,
                concurrency=int(request.get("max_concurrent_requests") or 1),
                replicas=int(request.get("starting_copies", 1)),
                force_cpu=False,
            )
        except (OSError, ValueError) as exc:
            logger.warning(
                "Deployment %s: no memory estimate (%s); each replica reserves one GPU", record.id, exc
            )
            return 1.0
        if estimate.memory_kind != "gpu" or estimate.available_bytes <= 0:
            # This machine has no GPU to measure against, so a replica reserves a whole one.
            return 1.0
        # NOTE: the share is of the free memory of GPU 0 on this machine, used in place of the
        # GPUs of the Ray nodes, so a node with smaller GPUs can run out of memory.
        share = estimate.per_replica_bytes / estimate.available_bytes
        return min(1.0, max(0.01, math.ceil(share * 100) / 100))

    async def _wait_settled(self, app_name: str) -> tuple[AppState | None, bool]:
        """Poll Serve until the application settles; return its last state and whether time ran out."""
        state: AppState | None = None
        with anyio.move_on_after(self._settings.worker_start_timeout):
            while True:
                state = (await self._in_thread(ray_serve.app_states, [app_name])).get(app_name, state)
                if state is not None and state.status in ray_serve.SETTLED_STATUSES:
                    return state, False
                await anyio.sleep(_STATUS_POLL)
        return state, True

    def _record_replicas(self, instances: list[InstanceRecord], replicas: list[ReplicaInfo]) -> None:
        running = sorted((r for r in replicas if r.state == "RUNNING"), key=lambda r: r.replica_id)
        for instance, replica in zip(instances, running, strict=False):
            self._assign(instance, replica)
        for instance in instances[len(running) :]:
            self._store.set_instance_failed(instance.id)

    def _assign(self, instance: InstanceRecord, replica: ReplicaInfo) -> None:
        self._store.set_instance_on_ray(
            instance.id,
            node_id=replica.node_id,
            replica_name=replica.replica_id,
            host=replica.node_ip or HOST,
            pid=replica.pid,
            log_file=self._log_path(replica),
        )

    def _failure(self, app_name: str, state: AppState | None, timed_out: bool) -> tuple[str, str]:
        detail = state.message if state is not None and state.message else "Serve reported no message"
        if timed_out:
            return "STARTUP_TIMEOUT", (
                f"the Ray Serve replicas of {app_name} did not start within "
                f"{self._settings.worker_start_timeout:g} s; raise worker_start_timeout for large models, "
                f"or free the Ray resources they wait for. Serve's message: {detail}"
            )
        lines = [line for line in detail.splitlines() if line.strip()]
        status = state.status if state is not None else "unknown"
        message = f"Ray Serve could not start the replicas of {app_name} ({status}). Last lines of Serve's message:\n"
        return classify_exit(lines, None), message + "\n".join(lines[-LOG_TAIL_LINES:])

    def _fail(self, deployment_id: str, code: str, message: str) -> None:
        if self._store.set_deployment_status(
            deployment_id, "FAILED", expected=("DEPLOYING",), error=(code, message)
        ):
            logger.error("Deployment %s FAILED (%s): %s", deployment_id, code, message)

    def _fail_instances(self, deployment_id: str) -> None:
        for instance in self._store.list_instances(deployment_id):
            if instance.status == "DEPLOYING":
                self._store.set_instance_failed(instance.id)

    # Health

    def _report(self, probes: list[tuple[dict[str, str], InstanceRecord]], state: AppState | None) -> None:
        if state is None:
            for entry, _instance in probes:
                entry.update(health="unhealthy", detail="Serve has no application for this deployment")
            return
        running = {replica.replica_id: replica for replica in state.replicas if replica.state == "RUNNING"}
        assigned = {instance.replica_name for _entry, instance in probes}
        spare = [replica for name, replica in sorted(running.items()) if name not in assigned]
        for entry, instance in probes:
            replica = running.get(instance.replica_name or "")
            if replica is None and spare:
                replica = spare.pop(0)
                logger.info("Instance %s is now Serve replica %s", instance.id, replica.replica_id)
                self._assign(instance, replica)
            if replica is None:
                detail = (
                    f"Serve replica {instance.replica_name} is not running; the application is {state.status}"
                )
                entry.update(
                    health="unhealthy", detail=f"{detail}: {state.message}" if state.message else detail
                )
                continue
            entry.update(
                health="healthy",
                detail=f"Serve replica {replica.replica_id} is RUNNING on Ray node {replica.node_ip} (pid {replica.pid})",
            )

    # Ray calls

    async def _ensure_serve(self) -> None:
        session = self._cluster.session
        if self._serve_session is session:
            return
        await self._in_thread(ray_serve.start_serve)
        self._serve_session = session
        self._apps.clear()
        self._handles.clear()

    def _serve_running(self) -> bool:
        return self._cluster.running and self._serve_session is self._cluster.session

    async def _delete(self, app_name: str) -> None:
        try:
            await self._in_thread(ray_serve.delete_app, app_name)
        except Exception:
            # Deleting is cleanup on the way to STOPPED, UNLOADED or FAILED, so a failure
            # is logged and the state change goes on.
            logger.exception("Deleting Serve application %s failed", app_name)
        self._apps.discard(app_name)

    async def _in_thread(self, function: Callable[..., _T], *args: Any) -> _T:
        """Run a blocking Ray call in a worker thread, bounded by _CONTROL_TIMEOUT."""
        with anyio.fail_after(_CONTROL_TIMEOUT):
            return await anyio.to_thread.run_sync(function, *args, abandon_on_cancel=True)

    def _log_folder(self) -> str:
        session_dir = self._cluster.session_dir
        return str(session_dir / "logs" / "serve") if session_dir else ""

    def _log_path(self, replica: ReplicaInfo) -> str:
        """Return the replica's log file: a local path on an owned head, else Ray's path on the node."""
        relative = (replica.log_file or "").lstrip("/")
        session_dir = self._cluster.session_dir
        if session_dir is not None:
            return str(session_dir / "logs" / relative)
        # On a joined cluster the log is on the node, relative to its Ray session's logs folder.
        return f"{replica.node_ip}:{relative}"
