"""Tools that free a deployment's model from memory and load it back, keeping the deployment."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver.resolve import Elicit, ElicitationResult, Resolve
from mcp_types import CallToolResult
from pydantic import Field

from ..client import KamiwazaClient
from ..client.models import DeploymentStatus
from ._common import (
    ConfirmationToken,
    DeploymentId,
    ToolContext,
    WaitTimeoutSeconds,
    app_of,
    canonical_uuid,
    progress_reporter,
    structured,
    tool,
    wait_for_terminal_status,
    wait_seconds,
)
from ._confirm import (
    ConfirmationForm,
    ConfirmationResult,
    DestructiveAction,
    FormOutcome,
    ask_person,
    run_destructive,
)
from ._views import DeploymentSummary, deployment_summary
from .deployments import progress_text

__all__ = ["TOOLS", "UNLOAD"]

UNLOAD = DestructiveAction(
    name="unload_model",
    verb="Unload",
    effect="end every replica and free the model's memory until load_model",
    settled_statuses=frozenset({DeploymentStatus.UNLOADED, DeploymentStatus.STOPPED}),
    run=KamiwazaClient.unload_model,
)


async def _ask_before_unload(
    ctx: ToolContext, deployment_id: str, confirmation_token: str | None
) -> Elicit[ConfirmationForm] | FormOutcome:
    return await ask_person(ctx, UNLOAD, deployment_id, confirmation_token)


@tool("Unload model", read_only=False, destructive=True, idempotent=True)
async def unload_model(
    ctx: ToolContext,
    deployment_id: DeploymentId,
    confirmation_token: ConfirmationToken = None,
    *,
    confirmation: Annotated[ElicitationResult[Any], Resolve(_ask_before_unload)],
) -> Annotated[CallToolResult, ConfirmationResult]:
    """Free a deployment's memory but keep it, as UNLOADED, until load_model; the person must confirm.

    They confirm in a form when the client supports one, otherwise with the token of a preview call.
    On Kamiwaza 1.2.0, which has no unload route, it stops the deployment, and load_model redeploys it under a new id.
    """
    return await run_destructive(ctx, UNLOAD, deployment_id, confirmation_token, confirmation)


@tool("Load model", read_only=False, destructive=False, idempotent=True)
async def load_model(
    ctx: ToolContext,
    deployment_id: DeploymentId,
    wait: Annotated[bool, Field(description="wait until the deployment is DEPLOYED or FAILED")] = True,
    wait_timeout_seconds: WaitTimeoutSeconds = None,
) -> Annotated[CallToolResult, DeploymentSummary]:
    """Load an UNLOADED deployment back; a DEPLOYED or DEPLOYING one is left as it is.

    Waits until it is DEPLOYED or FAILED, sending the status as progress, and returns the deployment.
    On Kamiwaza 1.2.0, which has no load route, it deploys it again under a new id, which the result names.
    """
    app = app_of(ctx)
    target = canonical_uuid(deployment_id, "deployment", "list_deployments")
    deployment = await app.client.load_model(target)
    timeout = wait_seconds(app, wait_timeout_seconds)
    if wait:
        deployment = await wait_for_terminal_status(
            app.client, deployment.id, timeout, app.poll_interval_seconds, progress_reporter(ctx)
        )
    view = deployment_summary(app.client, deployment)
    text = progress_text(view, waited=wait, timeout=timeout)
    if view.id != target:
        text = (
            f"The platform has no load route, so unloaded deployment {target} was deployed again "
            f"as the new deployment {view.id}; use {view.id} from now on. {text}"
        )
    return structured(text, view)


TOOLS = (unload_model, load_model)
