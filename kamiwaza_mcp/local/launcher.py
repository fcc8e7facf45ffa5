"""Background launches of deployments and the workers they own.

A launch moves a deployment from REQUESTED (or DEPLOYING, after a load or a
restart) through DEPLOYING to DEPLOYED, starting one worker per replica at the
same time, or to FAILED with the first failing replica's error. Status writes
from a launch are conditional on the status it expects, so a stop or an unload
that lands first is never overwritten.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
from anyio.abc import TaskGroup

from .settings import LocalPlatformSettings
from .store import DeploymentRecord, InstanceRecord, Store, utc_now
from .supervisor import HOST, Supervisor, Worker, WorkerSpec, WorkerStartError

__all__ = ["ACTIVE_STATUSES", "Launch", "Launcher"]

logger = logging.getLogger(__name__)

# Statuses of a deployment that should have workers; a restart launches these again.
ACTIVE_STATUSES = ("REQUESTED", "DEPLOYING", "DEPLOYED")
# Seconds to wait for a cancelled launch to kill the workers it was starting.
_CANCEL_WAIT = 15.0


@dataclass(eq=False)
class Launch:
    """The live side of a deployment: its launch task and its workers by instance id."""

    deployment_id: str
    workers: dict[str, Worker] = field(default_factory=dict)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    done: anyio.Event = field(default_factory=anyio.Event)


class Launcher:
    """Starts and stops the workers of deployments; one per platform."""

    def __init__(
        self,
        settings: LocalPlatformSettings,
        store: Store,
        http: httpx.AsyncClient,
        task_group: TaskGroup,
    ) -> None:
        self._settings = settings
        self._store = store
        self._task_group = task_group
        self._supervisor = Supervisor(settings, http, task_group, self._on_worker_died)
        self._launches: dict[str, Launch] = {}

    def schedule(self, deployment_id: str, model_path: Path | None) -> None:
        """Launch the deployment's workers in the background.

        `model_path` None means the model's folder is gone, and the launch fails.
        The caller stops any earlier launch of the deployment first.
        """
        launch = Launch(deployment_id)
        self._launches[deployment_id] = launch
        self._task_group.start_soon(self._launch, launch, model_path, name=f"launch {deployment_id}")

    async def stop(self, deployment_id: str, *, grace: float | None = None) -> None:
        """Cancel the deployment's launch and stop its workers; `grace` None uses the settings."""
        launch = self._launches.pop(deployment_id, None)
        if launch is None:
            return
        launch.scope.cancel()
        with anyio.move_on_after(_CANCEL_WAIT):
            await launch.done.wait()
        if not launch.done.is_set():
            logger.warning(
                "Launch of deployment %s did not end within %g s of its cancellation",
                deployment_id,
                _CANCEL_WAIT,
            )
        await self._stop_workers(launch.workers.values(), grace)

    async def shutdown(self) -> None:
        """Cancel every launch and stop every worker, leaving the stored statuses as they are."""
        launches = list(self._launches.values())
        for launch in launches:
            launch.scope.cancel()
        with anyio.move_on_after(_CANCEL_WAIT):
            for launch in launches:
                await launch.done.wait()
        await self._supervisor.stop_all()
        self._launches.clear()

    def ready_workers(self, deployment_id: str) -> list[Worker]:
        launch = self._launches.get(deployment_id)
        if launch is None:
            return []
        return [worker for worker in launch.workers.values() if worker.ready]

    def worker(self, deployment_id: str, instance_id: str) -> Worker | None:
        launch = self._launches.get(deployment_id)
        return launch.workers.get(instance_id) if launch else None

    async def _launch(self, launch: Launch, model_path: Path | None) -> None:
        deployment_id = launch.deployment_id
        try:
            with launch.scope:
                await self._run(launch, model_path)
        except Exception as exc:
            # A bug or an OS error (disk full, missing interpreter) must not end the
            # platform's task group, so it fails this deployment only.
            logger.exception("Launch of deployment %s failed", deployment_id)
            with anyio.CancelScope(shield=True):
                await self._stop_workers(launch.workers.values(), grace=0)
            self._fail(deployment_id, "CONTAINER_EXITED", f"the platform could not start the workers: {exc}")
        finally:
            launch.done.set()

    async def _run(self, launch: Launch, model_path: Path | None) -> None:
        deployment_id = launch.deployment_id
        if not self._store.set_deployment_status(
            deployment_id, "DEPLOYING", expected=ACTIVE_STATUSES, clear_error=True
        ):
            logger.info("Deployment %s was stopped or unloaded before its launch began", deployment_id)
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

        instances = self._ensure_instances(record)
        logger.info("Launching %d workers of deployment %s", len(instances), deployment_id)
        failures: dict[int, WorkerStartError] = {}
        async with anyio.create_task_group() as group:
            for instance in instances:
                group.start_soon(self._start_replica, launch, record, model_path, instance, failures)
        failures.update(self._check_still_running(launch, instances, failures))

        if failures:
            await self._stop_workers(launch.workers.values(), grace=0)
            self._store.set_instances_stopped(deployment_id)
            first = failures[min(failures)]
            self._fail(deployment_id, first.code, first.message)
            return
        if self._store.set_deployment_status(deployment_id, "DEPLOYED", expected=("DEPLOYING",)):
            logger.info("Deployment %s is DEPLOYED with %d workers", deployment_id, len(instances))

    def _ensure_instances(self, record: DeploymentRecord) -> list[InstanceRecord]:
        """Return the deployment's replica slots, creating the missing ones."""
        copies = int(record.request.get("starting_copies", 1))
        existing = self._store.list_instances(record.id)
        for replica in range(len(existing), copies):
            instance_id = str(uuid.uuid4())
            now = utc_now()
            log_file = self._settings.logs_dir / record.id / f"{instance_id}.log"
            self._store.insert_instance(
                InstanceRecord(
                    id=instance_id,
                    deployment_id=record.id,
                    replica=replica,
                    status="DEPLOYING",
                    pid=None,
                    host=HOST,
                    port=None,
                    log_file=str(log_file),
                    created_at=now,
                    deployed_at=None,
                    updated_at=now,
                )
            )
        return self._store.list_instances(record.id)[:copies]

    async def _start_replica(
        self,
        launch: Launch,
        record: DeploymentRecord,
        model_path: Path,
        instance: InstanceRecord,
        failures: dict[int, WorkerStartError],
    ) -> None:
        spec = WorkerSpec(
            deployment_id=record.id,
            instance_id=instance.id,
            engine=record.engine,
            model_path=model_path,
            served_model_name=record.served_model_name,
            log_file=Path(instance.log_file),
            device="cpu" if record.request.get("force_cpu") else "auto",
            env_overrides=dict(record.request.get("runtime_env") or {}),
        )
        self._store.set_instance_starting(instance.id)

        def on_spawn(worker: Worker) -> None:
            launch.workers[instance.id] = worker
            self._store.set_instance_pid(instance.id, worker.pid)

        try:
            worker = await self._supervisor.start(spec, on_spawn)
        except WorkerStartError as exc:
            logger.error("Worker %s of deployment %s failed to start: %s", instance.id, record.id, exc.code)
            launch.workers.pop(instance.id, None)
            self._store.set_instance_failed(instance.id)
            failures[instance.replica] = exc
            return
        if worker.port is None:
            raise AssertionError("Supervisor.start returned a worker without a port")
        self._store.set_instance_deployed(instance.id, worker.port)

    def _check_still_running(
        self, launch: Launch, instances: list[InstanceRecord], failures: dict[int, WorkerStartError]
    ) -> dict[int, WorkerStartError]:
        """Find replicas that became ready and died while their siblings were still starting."""
        dead: dict[int, WorkerStartError] = {}
        for instance in instances:
            worker = launch.workers.get(instance.id)
            if instance.replica in failures or (worker is not None and worker.ready):
                continue
            message = (
                f"worker {instance.id} exited while the deployment was starting; see {instance.log_file}"
            )
            dead[instance.replica] = WorkerStartError("CONTAINER_EXITED", message)
        return dead

    async def _on_worker_died(self, worker: Worker, error: WorkerStartError) -> None:
        """Mark the replica FAILED, and the deployment FAILED once no replica is left."""
        # TODO: restart a replica that died instead of serving on with fewer replicas.
        deployment_id, instance_id = worker.spec.deployment_id, worker.spec.instance_id
        self._store.set_instance_failed(instance_id)
        launch = self._launches.get(deployment_id)
        if launch is not None:
            launch.workers.pop(instance_id, None)
        alive = len(self.ready_workers(deployment_id))
        if alive:
            logger.warning(
                "Deployment %s goes on with %d replicas after worker %s died",
                deployment_id,
                alive,
                instance_id,
            )
            return
        self._store.set_deployment_status(
            deployment_id, "FAILED", expected=("DEPLOYED",), error=(error.code, error.message)
        )

    def _fail(self, deployment_id: str, code: str, message: str) -> None:
        if self._store.set_deployment_status(
            deployment_id, "FAILED", expected=("DEPLOYING",), error=(code, message)
        ):
            logger.error("Deployment %s FAILED (%s): %s", deployment_id, code, message)

    async def _stop_workers(self, workers: Iterable[Worker], grace: float | None) -> None:
        async with anyio.create_task_group() as group:
            for worker in list(workers):
                group.start_soon(self._stop_one, worker, grace)

    async def _stop_one(self, worker: Worker, grace: float | None) -> None:
        await self._supervisor.stop(worker, grace=grace)
