"""Tools that create, inspect and stop deployments."""

from __future__ import annotations

from typing import Annotated

from mcp_types import CallToolResult
from pydantic import BaseModel, Field

from ..client import KamiwazaError
from ..client.models import CreateModelDeployment, DeploymentStatus
from ._common import (
    ConfirmationToken,
    DeploymentId,
    MaxConcurrentRequests,
    ModelReference,
    Replicas,
    ToolContext,
    WaitTimeoutSeconds,
    app_of,
    canonical_uuid,
    structured,
    tool,
    wait_for_terminal_status,
)
from ._confirm import ConfirmationResult, DestructiveAction, confirm_or_preview
from ._views import DeploymentView, deployment_line, deployment_view

__all__ = ["TOOLS"]


class DeploymentList(BaseModel):
    """Deployments on the platform."""

    deployments: list[DeploymentView] = Field(description="deployments, in the platform's order")


class DeploymentStatusView(BaseModel):
    """The status word of one deployment."""

    deployment_id: str = Field(description="deployment UUID")
    status: str = Field(description="REQUESTED, DEPLOYING, DEPLOYED, UNLOADED, STOPPED or FAILED")
    ready: bool = Field(description="whether the deployment is DEPLOYED and can generate")
    terminal: bool = Field(description="whether the status will stay as it is without a new request")


@tool("Deploy model", read_only=False, destructive=False, idempotent=False)
async def deploy_model(
    ctx: ToolContext,
    model: ModelReference,
    replicas: Replicas = 1,
    max_concurrent_requests: MaxConcurrentRequests = None,
    engine: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=64,
            description="serving engine, such as vllm; omit to let the platform choose",
        ),
    ] = None,
    wait: Annotated[bool, Field(description="wait until the deployment is DEPLOYED or FAILED")] = True,
    wait_timeout_seconds: WaitTimeoutSeconds = 60,
) -> Annotated[CallToolResult, DeploymentView]:
    """Deploy `model` with the model's default configuration and return the new deployment.

    Each call creates a new deployment. Check the fit first with estimate_model_vram.
    With wait=true the call returns once the deployment is DEPLOYED or FAILED, or
    when wait_timeout_seconds pass; then poll get_deployment_status.
    """
    app = app_of(ctx)
    found = await app.client.resolve_model(model)
    model_id = found.id or model
    config = await app.client.default_config(model_id)
    request = CreateModelDeployment(
        m_id=model_id,
        m_config_id=config.id,
        m_file_id=config.m_file_id,
        min_copies=replicas,
        starting_copies=replicas,
        max_concurrent_requests=max_concurrent_requests,
        engine_name=engine,
    )
    # NOTE: the body still carries `engine: "vllm"`, the API schema's default, when
    # `engine` is omitted. The local platform reads that as "choose"; whether a
    # Kamiwaza release does the same when engine_name is null is unverified.
    deployment_id = await app.client.deploy_model(request)
    try:
        if wait:
            deployment = await wait_for_terminal_status(
                app.client, deployment_id, wait_timeout_seconds, app.poll_interval_seconds
            )
        else:
            deployment = await app.client.get_deployment(deployment_id)
    except KamiwazaError as exc:
        # The deployment exists even though reading it back failed, so the caller gets its id.
        created = f"deployment {deployment_id} was created; check it with get_deployment_status"
        exc.hint = f"{created}, and {exc.hint}" if exc.hint else created
        raise
    view = deployment_view(app.client, deployment)
    return structured(_progress_text(view, waited=wait, timeout=wait_timeout_seconds), view)


@tool("List deployments", read_only=True)
async def list_deployments(
    ctx: ToolContext,
    model: Annotated[
        str | None,
        Field(
            min_length=1, max_length=512, description="model UUID, name or repo id to filter by; omit for all"
        ),
    ] = None,
) -> Annotated[CallToolResult, DeploymentList]:
    """List deployments with their status, replicas and endpoint, optionally only those of one model."""
    client = app_of(ctx).client
    model_id = None
    if model is not None:
        model_id = (await client.resolve_model(model)).id or model
    deployments = await client.list_deployments(model_id)
    view = DeploymentList(deployments=[deployment_view(client, d) for d in deployments])
    if not view.deployments:
        return structured("No deployments. Create one with deploy_model.", view)
    lines = [f"{len(view.deployments)} deployment(s):"] + [
        f"- {deployment_line(d)}" for d in view.deployments
    ]
    return structured("\n".join(lines), view)


@tool("Get deployment", read_only=True)
async def get_deployment(
    ctx: ToolContext, deployment_id: DeploymentId
) -> Annotated[CallToolResult, DeploymentView]:
    """Return one deployment with its replicas, endpoint URL and last error."""
    client = app_of(ctx).client
    deployment = await client.get_deployment(canonical_uuid(deployment_id, "deployment", "list_deployments"))
    view = deployment_view(client, deployment)
    return structured(f"{deployment_line(view)}; endpoint {view.endpoint_url}", view)


@tool("Get deployment status", read_only=True)
async def get_deployment_status(
    ctx: ToolContext, deployment_id: DeploymentId
) -> Annotated[CallToolResult, DeploymentStatusView]:
    """Return the status word of one deployment; poll it after deploy_model or load_model until DEPLOYED."""
    target = canonical_uuid(deployment_id, "deployment", "list_deployments")
    status = await app_of(ctx).client.get_deployment_status(target)
    view = DeploymentStatusView(
        deployment_id=target,
        status=status,
        ready=status == DeploymentStatus.DEPLOYED,
        terminal=status in DeploymentStatus.TERMINAL,
    )
    text = f"Deployment {target} is {status}"
    if status in DeploymentStatus.PENDING:
        text += "; call get_deployment_status again in a few seconds"
    elif status in DeploymentStatus.FAILURES:
        text += "; call get_deployment for the error"
    return structured(text, view)


@tool("Stop deployment", read_only=False, destructive=True, idempotent=True)
async def stop_deployment(
    ctx: ToolContext,
    deployment_id: DeploymentId,
    confirmation_token: ConfirmationToken = None,
) -> Annotated[CallToolResult, ConfirmationResult]:
    """Stop a deployment: end all its replicas and free their memory. It cannot be restarted.

    Call it first without confirmation_token: nothing stops, and the result shows
    what would stop and carries a token valid for 5 minutes. Call it again with
    that token to stop. To free memory but keep the deployment, use unload_model.
    """
    app = app_of(ctx)
    action = DestructiveAction(
        name="stop_deployment",
        effect="end every replica and free its memory, for good",
        settled_statuses=frozenset({DeploymentStatus.STOPPED}),
        run=app.client.stop_deployment,
    )
    return await confirm_or_preview(app, action, deployment_id, confirmation_token)


def _progress_text(view: DeploymentView, *, waited: bool, timeout: float) -> str:
    text = f"Deployment {deployment_line(view)}; endpoint {view.endpoint_url}"
    if view.status in DeploymentStatus.PENDING:
        if waited:
            text += f". Still {view.status} after {timeout:g} s"
        text += f"; call get_deployment_status with deployment_id {view.id} until it is DEPLOYED"
    elif view.status in DeploymentStatus.FAILURES:
        text += "; check the error above and the fit with estimate_model_vram"
    return text


TOOLS = (deploy_model, list_deployments, get_deployment, get_deployment_status, stop_deployment)
