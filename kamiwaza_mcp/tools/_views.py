"""Output models shared by several tool groups, and their builders from client models.

The views keep what an agent needs to act and drop the platform's bookkeeping,
so each result stays short.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from ..client import KamiwazaClient
from ..client.models import Deployment, ModelInstance

__all__ = ["DeploymentView", "InstanceView", "deployment_line", "deployment_view", "instance_view"]

# The platform may put a worker's last log lines into the error message; the
# one-line summary keeps their start and the structured view keeps them all.
_MAX_ERROR_CHARS = 400


class InstanceView(BaseModel):
    """One replica of a deployment."""

    id: str = Field(description="instance UUID")
    deployment_id: str = Field(description="UUID of the deployment the instance serves")
    status: str | None = Field(description="DEPLOYING, DEPLOYED, STOPPED or FAILED")
    host: str | None = Field(description="host name or address the instance listens on")
    port: int | None = Field(description="TCP port the instance listens on")
    pid: int | None = Field(description="process id of the engine worker, when the platform reports it")


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


def instance_view(instance: ModelInstance) -> InstanceView:
    details = instance.extra_details or {}
    pid = details.get("pid")
    return InstanceView(
        id=instance.id,
        deployment_id=instance.deployment_id,
        status=instance.status,
        host=instance.host_name,
        port=instance.listen_port,
        pid=pid if isinstance(pid, int) else None,
    )


def deployment_view(client: KamiwazaClient, deployment: Deployment) -> DeploymentView:
    return DeploymentView(
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


def deployment_line(view: DeploymentView) -> str:
    """Return a one-line summary, such as `5f3c… tiny-llama DEPLOYED, 2/2 replicas up`."""
    up = sum(1 for instance in view.instances if instance.status == "DEPLOYED")
    line = f"{view.id} {view.model_name or view.model_id} {view.status}, {up}/{view.replicas} replicas up"
    if view.last_error_code or view.last_error_message:
        message = view.last_error_message or ""
        if len(message) > _MAX_ERROR_CHARS:
            message = message[:_MAX_ERROR_CHARS] + "… (get_deployment has the whole message)"
        line += f"; last error {view.last_error_code or ''}: {message}".rstrip()
    return line


def _engine_of(deployment: Deployment) -> str | None:
    # `engine` has a client-side default ("vllm" in the API schema), so it is
    # reported only when the platform sent it.
    if deployment.engine_name:
        return deployment.engine_name
    if "engine" in deployment.model_fields_set:
        return deployment.engine
    return None
