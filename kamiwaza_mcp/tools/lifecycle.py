"""Tools that free a deployment's model from memory and load it back, keeping the deployment."""

from __future__ import annotations

from typing import Annotated

from mcp_types import CallToolResult
from pydantic import Field

from ..client.models import DeploymentStatus
from ._common import (
    ConfirmationToken,
    DeploymentId,
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


@tool("Unload model", read_only=False, destructive=True, idempotent=True)
async def unload_model(
    ctx: ToolContext,
    deployment_id: DeploymentId,
    confirmation_token: ConfirmationToken = None,
) -> Annotated[CallToolResult, ConfirmationResult]:
    """Free a deployment's model from memory by ending its replicas; the deployment stays, as UNLOADED.

    Requests to it fail until load_model brings it back. Call it first without
    confirmation_token: nothing changes, and the result shows what would be
    unloaded and carries a token valid for 5 minutes. Call it again with that
    token to unload.
    """
    app = app_of(ctx)
    action = DestructiveAction(
        name="unload_model",
        effect="end every replica and free the model's memory until load_model",
        settled_statuses=frozenset({DeploymentStatus.UNLOADED, DeploymentStatus.STOPPED}),
        run=app.client.unload_model,
    )
    return await confirm_or_preview(app, action, deployment_id, confirmation_token)


@tool("Load model", read_only=False, destructive=False, idempotent=True)
async def load_model(
    ctx: ToolContext,
    deployment_id: DeploymentId,
    wait: Annotated[bool, Field(description="wait until the deployment is DEPLOYED or FAILED")] = True,
    wait_timeout_seconds: WaitTimeoutSeconds = 60,
) -> Annotated[CallToolResult, DeploymentView]:
    """Load an UNLOADED deployment's model back into memory, under the same deployment id.

    Calling it on a deployment that is DEPLOYED or DEPLOYING changes nothing.
    With wait=true the call returns once the deployment is DEPLOYED or FAILED,
    or when wait_timeout_seconds pass; then poll get_deployment_status.
    """
    app = app_of(ctx)
    target = canonical_uuid(deployment_id, "deployment", "list_deployments")
    deployment = await app.client.load_model(target)
    if wait:
        deployment = await wait_for_terminal_status(
            app.client, target, wait_timeout_seconds, app.poll_interval_seconds
        )
    view = deployment_view(app.client, deployment)
    text = f"Deployment {deployment_line(view)}"
    if view.status in DeploymentStatus.PENDING:
        text += f"; call get_deployment_status with deployment_id {view.id} until it is DEPLOYED"
    return structured(text, view)


TOOLS = (unload_model, load_model)
