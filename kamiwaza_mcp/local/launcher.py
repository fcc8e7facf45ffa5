"""Background launches of deployments and the workers they own.

A launch moves a deployment from REQUESTED (or DEPLOYING, after a load or a
restart) through DEPLOYING to DEPLOYED, starting one worker per replica at the
same time, or to FAILED with the first failing replica's error. Status writes
from a launch are conditional on the status it expects, so a stop or an unload
that lands first is never overwritten.

Once a deployment is DEPLOYED, a worker that dies (or that the health monitor kills
after it stops responding) is replaced in the same replica slot. The replica is
FAILED and the deployment's last error names the cause until the replacement is
healthy. While no replica is left the deployment is DEPLOYING, and it returns to
DEPLOYED with the first healthy replacement. A replica that needs more than
`restart_limit` restarts within `restart_window` stays FAILED, and the deployment
is FAILED when no replica is left. The last error stays on record after a recovery.
"""

from __future__ import annotations

import logging
import time
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
    """The live side of a deployment: its launch task, its workers by instance id, its restarts.

    `serving` turns true when the launch reaches DEPLOYED; from then on a dead worker
    is replaced. `restarts` contains the monotonic times of each replica's restarts.
    """

    deployment_id: str
    model_path: Path | None
    workers: dict[str, Worker] = field(default_factory=dict)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    done: anyio.Event = field(default_factory=anyio.Event)
    serving: bool = False
    closed: bool = False
    restarts: dict[str, list[float]] = field(default_factory=dict)
    restart_tasks: set[tuple[anyio.CancelScope, anyio.Event]] = field(default_factory=set)

    def close(self) -> None:
        """Cancel the launch and any pending restart, so no new worker starts."""
        self.closed = True
        self.scope.cancel()
        for scope, _done in self.restart_tasks:
            scope.cancel()

    async def wait_closed(self) -> None:
        """Wait for the launch and its pending restarts to end."""
        await self.done.wait()
        for _scope, done in list(self.restart_tasks):
            await done.wait()


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
        self._closing = False

    @property
    def supervisor(self) -> Supervisor:
        return self._supervisor

    def schedule(self, deployment_id: str, model_path: Path | None) -> None:
        """Launch the deployment's workers in the background.

        `model_path` None means the model's folder is gone, and the launch fails.
        The caller stops any earlier launch of the deployment first.
        """
        launch = Launch(deployment_id, model_path)
        self._launches[deployment_id] = launch
        self._task_group.start_soon(self._launch, launch, name=f"launch {deployment_id}")

    async def stop(self, deployment_id: str, *, grace: float | None = None) -> None:
        """Cancel the deployment's launch and restarts, and stop its workers; `grace` None uses the settings."""
        launch = self._launches.pop(deployment_id, None)
        if launch is None:
            return
        launch.close()
        with anyio.move_on_after(_CANCEL_WAIT):
            await launch.wait_closed()
        if not launch.done.is_set():
            logger.warning(
                "Launch of deployment %s did not end within %g s of its cancellation",
                deployment_id,
                _CANCEL_WAIT,
            )
        await self._stop_workers(launch.workers.values(), grace)

    async def shutdown(self) -> None:
        """Cancel every launch and restart and stop every worker, leaving the stored statuses as they are."""
        self._closing = True
        launches = list(self._launches.values())
        for launch in launches:
            launch.close()
        with anyio.move_on_after(_CANCEL_WAIT):
            for launch in launches:
                await launch.wait_closed()
        await self._supervisor.stop_all()
        self._launches.clear()

    def serving_workers(self) -> list[Worker]:
        """Return the ready workers of every deployment that reached DEPLOYED, for health checks."""
        return [
            worker
            for launch in self._launches.values()
            if launch.serving and not launch.closed
            for worker in launch.workers.values()
            if worker.ready
        ]

    def ready_workers(self, deployment_id: str) -> list[Worker]:
        launch = self._launches.get(deployment_id)
        if launch is None:
            return []
        return [worker for worker in launch.workers.values() if worker.ready]

    def worker(self, deployment_id: str, instance_id: str) -> Worker | None:
        launch = self._launches.get(deployment_id)
        return launch.workers.get(instance_id) if launch else None

    async def _launch(self, launch: Launch) -> None:
        deployment_id = launch.deployment_id
        try:
            with launch.scope:
                await self._run(launch, launch.model_path)
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
            launch.serving = True
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
    ) -> bool:
        """Start one replica's worker; on failure put its error in `failures` and return False."""
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
            return False
        if worker.port is None:
            raise AssertionError("Supervisor.start returned a worker without a port")
        self._store.set_instance_deployed(instance.id, worker.port)
        return True

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
        """Mark the replica FAILED and, once the deployment is serving, schedule its replacement."""
        deployment_id, instance_id = worker.spec.deployment_id, worker.spec.instance_id
        launch = self._launches.get(deployment_id)
        if launch is None or launch.workers.get(instance_id) is not worker:
            # A worker of a launch that was stopped or replaced meanwhile; its replica is not its own.
            logger.info(
                "Worker %s of deployment %s ended after its launch was stopped", instance_id, deployment_id
            )
            return
        launch.workers.pop(instance_id, None)
        self._store.set_instance_failed(instance_id)
        if not launch.serving:
            # A replica that dies while its siblings start fails the launch, which reports it.
            return
        self._replica_down(launch, instance_id, error)

    def _replica_down(self, launch: Launch, instance_id: str, error: WorkerStartError) -> None:
        """Record a lost replica and restart it, or give up on it after too many restarts."""
        deployment_id = launch.deployment_id
        if launch.closed or self._closing:
            return
        alive = len(self.ready_workers(deployment_id))
        attempts = self._count_restart(launch, instance_id)
        if attempts > self._settings.restart_limit:
            self._give_up(launch, instance_id, error, alive)
            return

        delay = self._settings.restart_delay * 2 ** (attempts - 1)
        note = f"{error.message}\nReplacing the worker in {delay:g} s (restart {attempts} of {self._settings.restart_limit})."
        if alive:
            self._store.set_deployment_error(deployment_id, (error.code, note))
        else:
            self._store.set_deployment_status(
                deployment_id, "DEPLOYING", expected=("DEPLOYED", "DEPLOYING"), error=(error.code, note)
            )
        logger.warning(
            "Replica %s of deployment %s is down (%s); restarting it in %g s with %d replicas still serving",
            instance_id,
            deployment_id,
            error.code,
            delay,
            alive,
        )
        # Registered before the task starts, so a stop that comes first cancels it too.
        entry = (anyio.CancelScope(), anyio.Event())
        launch.restart_tasks.add(entry)
        self._task_group.start_soon(
            self._restart, launch, entry, instance_id, delay, name=f"restart {instance_id}"
        )

    def _count_restart(self, launch: Launch, instance_id: str) -> int:
        """Record one more restart of the replica and return how many fall within the window."""
        now = time.monotonic()
        recent = [
            at for at in launch.restarts.get(instance_id, []) if now - at < self._settings.restart_window
        ]
        recent.append(now)
        launch.restarts[instance_id] = recent
        return len(recent)

    def _give_up(self, launch: Launch, instance_id: str, error: WorkerStartError, alive: int) -> None:
        limit = self._settings.restart_limit
        message = (
            f"{error.message}\nReplica {instance_id} failed {limit + 1} times within "
            f"{self._settings.restart_window:g} s and is not restarted again; read its log, then "
            f"POST /api/serving/deployment/{launch.deployment_id}/load to start it again"
        )
        logger.error(
            "Giving up on replica %s of deployment %s: %s", instance_id, launch.deployment_id, error.code
        )
        if alive:
            self._store.set_deployment_error(launch.deployment_id, (error.code, message))
            return
        self._store.set_deployment_status(
            launch.deployment_id, "FAILED", expected=("DEPLOYED", "DEPLOYING"), error=(error.code, message)
        )

    async def _restart(
        self,
        launch: Launch,
        entry: tuple[anyio.CancelScope, anyio.Event],
        instance_id: str,
        delay: float,
    ) -> None:
        """Wait `delay` seconds, then start a new worker in the replica's slot."""
        scope, done = entry
        try:
            with scope:
                await anyio.sleep(delay)
                await self._restart_now(launch, instance_id)
        except Exception as exc:
            logger.exception(
                "Restart of replica %s of deployment %s failed", instance_id, launch.deployment_id
            )
            self._replica_down(
                launch, instance_id, WorkerStartError("CONTAINER_EXITED", f"restart failed: {exc}")
            )
        finally:
            done.set()
            launch.restart_tasks.discard(entry)

    async def _restart_now(self, launch: Launch, instance_id: str) -> None:
        record = self._store.get_deployment(launch.deployment_id)
        instance = self._store.get_instance(instance_id)
        if (
            launch.closed
            or record is None
            or instance is None
            or record.status not in ("DEPLOYED", "DEPLOYING")
        ):
            return
        if launch.model_path is None:
            raise AssertionError(f"deployment {launch.deployment_id} is serving without a model folder")
        failures: dict[int, WorkerStartError] = {}
        if not await self._start_replica(launch, record, launch.model_path, instance, failures):
            self._replica_down(launch, instance_id, failures[instance.replica])
            return
        if self._store.set_deployment_status(launch.deployment_id, "DEPLOYED", expected=("DEPLOYING",)):
            logger.info("Deployment %s is DEPLOYED again", launch.deployment_id)
        logger.info("Replica %s of deployment %s was replaced", instance_id, launch.deployment_id)

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
