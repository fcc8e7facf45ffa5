"""Blocking Ray Serve calls for the deployments the platform places on Ray.

Each platform deployment is one Serve application named `kamiwaza-<deployment id>`
with one Serve deployment of EngineReplica. The applications have no HTTP route:
the platform calls them through deployment handles, so Serve runs no HTTP proxy.
Every function here blocks, so the platform runs them in a worker thread.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AppState",
    "ReplicaInfo",
    "ReplicaOptions",
    "ServeCallError",
    "app_name_of",
    "app_states",
    "call_replica",
    "delete_app",
    "deploy_app",
    "get_handle",
    "start_serve",
    "strip_ansi",
]

logger = logging.getLogger(__name__)

APP_PREFIX = "kamiwaza-"
DEPLOYMENT_NAME = "engine"
# Serve application statuses after which a launch stops waiting.
SETTLED_STATUSES = frozenset({"RUNNING", "DEPLOY_FAILED", "UNHEALTHY"})
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


class ServeCallError(Exception):
    """A request through a deployment handle failed in Ray or in the replica."""


@dataclass(frozen=True)
class ReplicaOptions:
    """The Serve deployment of one platform deployment. `num_gpus` and `num_cpus` are per replica."""

    app_name: str
    engine: str
    model_path: str
    served_model_name: str
    device: str
    num_replicas: int
    max_ongoing_requests: int | None
    num_cpus: float
    num_gpus: float
    env_vars: dict[str, str]
    graceful_shutdown_seconds: float


@dataclass(frozen=True)
class ReplicaInfo:
    """One Serve replica: its Serve id, Ray node (hex id and IP), pid and state."""

    replica_id: str
    node_id: str | None
    node_ip: str | None
    pid: int | None
    state: str
    log_file: str | None


@dataclass(frozen=True)
class AppState:
    """A Serve application's status, Serve's message about it, and its replicas."""

    status: str
    message: str
    replicas: list[ReplicaInfo]


def app_name_of(deployment_id: str) -> str:
    return f"{APP_PREFIX}{deployment_id}"


def start_serve() -> None:
    """Start Serve without an HTTP proxy; a Serve instance already running on the cluster is kept as it is."""
    from ray import serve
    from ray.serve.config import ProxyLocation

    serve.start(proxy_location=ProxyLocation.Disabled)


def deploy_app(options: ReplicaOptions) -> None:
    """Deploy (or redeploy) the application on a started Serve, without waiting for it to run."""
    from ray import serve

    from .ray_replica import EngineReplica

    # NOTE: each Serve 2.60 replica also opens a gRPC server for calls between deployments on
    # all interfaces ("[::]:0" in ray/serve/_private/replica.py), the one port of an owned
    # head that is not bound to 127.0.0.1. Ray offers no option to bind it elsewhere.
    actor_options: dict[str, Any] = {"num_cpus": options.num_cpus, "num_gpus": options.num_gpus}
    if options.env_vars:
        actor_options["runtime_env"] = {"env_vars": options.env_vars}
    settings: dict[str, Any] = {
        "name": DEPLOYMENT_NAME,
        "num_replicas": options.num_replicas,
        "ray_actor_options": actor_options,
        # Serve gives up on the constructor after this many failures. A model that fails to
        # load fails again, so the launch reports the first failure.
        "max_constructor_retry_count": 1,
        "graceful_shutdown_timeout_s": options.graceful_shutdown_seconds,
        "graceful_shutdown_wait_loop_s": min(options.graceful_shutdown_seconds, 0.5),
    }
    if options.max_ongoing_requests is not None:
        settings["max_ongoing_requests"] = options.max_ongoing_requests
    deployment = serve.deployment(EngineReplica, **settings)
    application = deployment.bind(
        options.engine, options.model_path, options.served_model_name, options.device
    )
    target = serve.RunTarget(target=application, name=options.app_name, route_prefix=None)
    serve.run_many([target], wait_for_applications_running=False)
    logger.info("Deployed Serve application %s with %d replicas", options.app_name, options.num_replicas)


def app_states(app_names: list[str]) -> dict[str, AppState]:
    """Read the status and replicas of the named applications; missing ones are left out."""
    details = _serve_details()
    if details is None:
        return {}
    states = {}
    for name in app_names:
        application = details.applications.get(name)
        if application is not None:
            states[name] = _app_state(application)
    return states


def delete_app(app_name: str) -> None:
    """Delete the application and wait until its replicas are gone; a missing one is ignored.

    Serve raises TimeoutError when the application is still there after 60 s.
    """
    from ray import serve

    serve.delete(app_name, _blocking=True)
    logger.info("Deleted Serve application %s", app_name)


def get_handle(app_name: str) -> Any:
    """Return a deployment handle of the application; raise ServeCallError when Serve has none."""
    from ray import serve

    try:
        return serve.get_app_handle(app_name)
    except Exception as exc:
        # Serve raises RayServeException for a missing application and Ray errors when
        # the controller cannot be reached.
        raise ServeCallError(f"{type(exc).__name__}: {strip_ansi(str(exc)).strip()}") from exc


def call_replica(
    handle: Any, method: str, path: str, body: bytes, content_type: str, timeout: float
) -> tuple[int, str | None, bytes]:
    """Send one request to a replica chosen by Serve and return its status, content type and body.

    Raises ServeCallError when Ray or the replica fails.
    """
    response = handle.forward.remote(method, path, body, content_type)
    try:
        status, media_type, content = response.result(timeout_s=timeout)
    except Exception as exc:
        # Ray raises many unrelated types here (actor died, back pressure, timeout,
        # and the replica's own exception wrapped in RayTaskError), so all become one.
        raise ServeCallError(f"{type(exc).__name__}: {strip_ansi(str(exc)).strip()}") from exc
    return int(status), media_type, bytes(content)


def strip_ansi(text: str) -> str:
    """Remove the terminal colour codes Ray puts into error messages."""
    return _ANSI_ESCAPE.sub("", text)


def _serve_details() -> Any:
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeInstanceDetails

    # serve.status() has no replica details (node, pid), so this reads the same
    # source it does through Serve's private client, as Ray 2.60 names it.
    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:
        return None
    return ServeInstanceDetails(**client.get_serve_details())


def _app_state(application: Any) -> AppState:
    deployment = application.deployments.get(DEPLOYMENT_NAME)
    messages = [str(application.message or "")]
    replicas: list[ReplicaInfo] = []
    if deployment is not None:
        messages.append(str(deployment.message or ""))
        replicas = [_replica_info(replica) for replica in deployment.replicas]
    message = "\n".join(strip_ansi(text).strip() for text in messages if text.strip())
    return AppState(status=str(_enum_value(application.status)), message=message, replicas=replicas)


def _replica_info(replica: Any) -> ReplicaInfo:
    return ReplicaInfo(
        replica_id=str(replica.replica_id),
        node_id=replica.node_id,
        node_ip=replica.node_ip,
        pid=replica.pid,
        state=str(_enum_value(replica.state)),
        log_file=replica.log_file_path,
    )


def _enum_value(value: Any) -> Any:
    return getattr(value, "value", value)
