"""Output models shared by several tool groups, and their builders from client models.

The views keep what an agent needs to act and drop the platform's bookkeeping,
so each result stays short. With response_format detailed, the optional
`platform` field adds every field the platform returned.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from ..client import KamiwazaClient
from ..client.models import Deployment, ModelInstance

__all__ = [
    "DeploymentEntry",
    "DeploymentSummary",
    "DeploymentView",
    "InstanceEntry",
    "InstanceView",
    "deployment_entry",
    "deployment_line",
    "deployment_summary",
    "deployment_view",
    "entry_line",
    "instance_entry",
    "instance_view",
    "platform_fields",
]

PLATFORM_FIELD_DESCRIPTION = "every field the platform returned; only with response_format detailed"

# The platform may put a worker's last log lines into the error message. The
# one-line summary keeps their start, and the structured view keeps them all.
_MAX_ERROR_CHARS = 400


class InstanceView(BaseModel):
    """One replica of a deployment."""

    id: str = Field(description="instance UUID")
    deployment_id: str = Field(description="UUID of the deployment the instance serves")
    status: str | None = Field(description="DEPLOYING, DEPLOYED, STOPPED or FAILED")
    host: str | None = Field(description="host name or address the instance listens on")
    port: int | None = Field(description="TCP port the instance listens on")
    pid: int | None = Field(description="process id of the engine worker, when the platform reports it")


class InstanceEntry(InstanceView):
    """A replica in a list; response_format detailed fills `platform`."""

    platform: dict[str, Any] | None = Field(default=None, description=PLATFORM_FIELD_DESCRIPTION)


class DeploymentView(BaseModel):
    """A deployment with its replicas and where to send requests."""

    id: str = Field(description="deployment UUID; pass it to the other deployment tools")
    model_id: str = Field(description="UUID of the deployed model")
    model_name: str | None = Field(description="name of the deployed model")
    status: str = Field(description="REQUESTED, DEPLOYING, DEPLOYED, UNLOADED, STOPPED or FAILED")
    replicas: int = Field(description="number of replicas requested")
    instances: list[InstanceView] = Field(description="replicas the platform started")
    endpoint_url: str = Field(description="OpenAI-compatible base URL of the deployment, ending in /v1")
    max_concurrent_requests: int | None = Field(description="requests served at once, when set")
    engine: str | None = Field(description="serving engine, such as transformers or vllm")
    created_at: str = Field(description="creation time as the platform reports it (ISO 8601)")
    last_error_code: str | None = Field(description="error code of the last failure, such as OOM")
    last_error_message: str | None = Field(description="message of the last failure")
    platform: dict[str, Any] | None = Field(default=None, description=PLATFORM_FIELD_DESCRIPTION)


class DeploymentSummary(BaseModel):
    """A deployment in a few fields: readable name and status first."""

    model_name: str | None = Field(description="name of the deployed model")
    status: str = Field(description="REQUESTED, DEPLOYING, DEPLOYED, UNLOADED, STOPPED or FAILED")
    id: str = Field(description="deployment UUID; pass it to the other deployment tools")
    replicas: int = Field(description="number of replicas requested")
    replicas_up: int = Field(description="replicas that are DEPLOYED")
    endpoint_url: str = Field(description="OpenAI-compatible base URL of the deployment, ending in /v1")
    last_error: str | None = Field(description="code and message of the last failure, shortened")


class DeploymentEntry(DeploymentSummary):
    """A deployment in a list; response_format detailed fills the optional fields."""

    model_id: str | None = Field(default=None, description="UUID of the deployed model")
    engine: str | None = Field(default=None, description="serving engine, such as transformers or vllm")
    created_at: str | None = Field(default=None, description="creation time (ISO 8601)")
    instances: list[InstanceView] | None = Field(default=None, description="replicas the platform started")
    platform: dict[str, Any] | None = Field(default=None, description=PLATFORM_FIELD_DESCRIPTION)


def platform_fields(data: BaseModel) -> dict[str, Any]:
    """Return the fields the platform sent for `data`, including those the client does not model."""
    fields: dict[str, Any] = data.model_dump(mode="json", exclude_unset=True)
    return fields


def instance_view(instance: ModelInstance) -> InstanceView:
    return InstanceView.model_validate(_instance_fields(instance))


def instance_entry(instance: ModelInstance, *, detailed: bool) -> InstanceEntry:
    """Return the list entry of `instance`; `detailed` fills `platform`."""
    entry = InstanceEntry.model_validate(_instance_fields(instance))
    if detailed:
        entry.platform = platform_fields(instance)
    return entry


def _instance_fields(instance: ModelInstance) -> dict[str, Any]:
    details = instance.extra_details or {}
    pid = details.get("pid")
    return {
        "id": instance.id,
        "deployment_id": instance.deployment_id,
        "status": instance.status,
        "host": instance.host_name,
        "port": instance.listen_port,
        "pid": pid if isinstance(pid, int) else None,
    }


def deployment_summary(client: KamiwazaClient, deployment: Deployment) -> DeploymentSummary:
    return DeploymentSummary.model_validate(_summary_fields(client, deployment, shorten=True))


def deployment_entry(
    client: KamiwazaClient, deployment: Deployment, *, detailed: bool = False
) -> DeploymentEntry:
    """Return the list entry of `deployment`; `detailed` fills the optional fields."""
    entry = DeploymentEntry.model_validate(_summary_fields(client, deployment, shorten=not detailed))
    if detailed:
        entry.model_id = deployment.m_id
        entry.engine = _engine_of(deployment)
        entry.created_at = deployment.created_at
        entry.instances = [instance_view(instance) for instance in deployment.instances]
        entry.platform = platform_fields(deployment)
    return entry


def _summary_fields(client: KamiwazaClient, deployment: Deployment, *, shorten: bool) -> dict[str, Any]:
    return {
        "model_name": deployment.m_name,
        "status": deployment.status,
        "id": deployment.id,
        "replicas": deployment.starting_copies,
        "replicas_up": _replicas_up(deployment),
        "endpoint_url": client.endpoint_url(deployment),
        "last_error": _last_error(deployment.last_error_code, deployment.last_error_message, shorten=shorten),
    }


def entry_line(entry: DeploymentSummary) -> str:
    """Return a one-line summary, such as `tiny-llama DEPLOYED, 2/2 replicas up; id 5f3c…`."""
    line = f"{entry.model_name or 'unnamed model'} {entry.status}, {entry.replicas_up}/{entry.replicas} replicas up; id {entry.id}"
    if entry.last_error:
        line += f"; last error {entry.last_error}"
    return line


def deployment_view(
    client: KamiwazaClient, deployment: Deployment, *, detailed: bool = False
) -> DeploymentView:
    view = DeploymentView(
        id=deployment.id,
        model_id=deployment.m_id,
        model_name=deployment.m_name,
        status=deployment.status,
        replicas=deployment.starting_copies,
        instances=[instance_view(instance) for instance in deployment.instances],
        endpoint_url=client.endpoint_url(deployment),
        max_concurrent_requests=deployment.max_concurrent_requests,
        engine=_engine_of(deployment),
        created_at=deployment.created_at,
        last_error_code=deployment.last_error_code,
        last_error_message=deployment.last_error_message,
    )
    if detailed:
        view.platform = platform_fields(deployment)
    return view


def deployment_line(view: DeploymentView) -> str:
    """Return a one-line summary, such as `5f3c… tiny-llama DEPLOYED, 2/2 replicas up`."""
    up = sum(1 for instance in view.instances if instance.status == "DEPLOYED")
    line = f"{view.id} {view.model_name or view.model_id} {view.status}, {up}/{view.replicas} replicas up"
    last_error = _last_error(view.last_error_code, view.last_error_message, shorten=True)
    if last_error:
        line += f"; last error {last_error}"
    return line


def _replicas_up(deployment: Deployment) -> int:
    return sum(1 for instance in deployment.instances if instance.status == "DEPLOYED")


def _last_error(code: str | None, message: str | None, *, shorten: bool) -> str | None:
    if not code and not message:
        return None
    text = message or ""
    if shorten and len(text) > _MAX_ERROR_CHARS:
        text = text[:_MAX_ERROR_CHARS] + "… (get_deployment has the whole message)"
    return f"{code or ''}: {text}".rstrip()


def _engine_of(deployment: Deployment) -> str | None:
    # `engine` has a client-side default ("vllm" in the API schema), so it is
    # reported only when the platform sent it.
    if deployment.engine_name:
        return deployment.engine_name
    if "engine" in deployment.model_fields_set:
        return deployment.engine
    return None
