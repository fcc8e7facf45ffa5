"""The preview-then-confirm flow shared by stop_deployment and unload_model."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mcp_types import CallToolResult
from pydantic import BaseModel, Field

from ..app_context import AppContext
from ._common import canonical_uuid, structured
from ._views import DeploymentView, deployment_line, deployment_view

__all__ = ["ConfirmationResult", "DestructiveAction", "confirm_or_preview"]


class ConfirmationResult(BaseModel):
    """A preview with a confirmation token, or the outcome of a confirmed call."""

    action: str = Field(description="the tool that previewed or acted")
    done: bool = Field(description="whether the action ran; false for a preview")
    deployment: DeploymentView = Field(description="the deployment as it is now")
    confirmation_token: str | None = Field(
        description="single-use token to pass back as confirmation_token to act; only in a preview"
    )
    expires_in_seconds: float | None = Field(description="seconds the token stays valid; only in a preview")


@dataclass(frozen=True)
class DestructiveAction:
    """A destructive tool: its name, what it does, and the statuses in which it has nothing left to do."""

    name: str
    effect: str
    settled_statuses: frozenset[str]
    run: Callable[[str], Awaitable[object]]


async def confirm_or_preview(
    app: AppContext, action: DestructiveAction, deployment_id: str, token: str | None
) -> CallToolResult:
    """Preview `action` and issue a token when `token` is None; otherwise redeem the token and act.

    A rejected token raises ConfirmationError before anything runs.
    """
    target = canonical_uuid(deployment_id, "deployment", "list_deployments")
    if token is None:
        return await _preview(app, action, target)

    app.guard.redeem(token, action.name, target)
    await action.run(target)
    view = deployment_view(app.client, await app.client.get_deployment(target))
    result = ConfirmationResult(
        action=action.name, done=True, deployment=view, confirmation_token=None, expires_in_seconds=None
    )
    return structured(f"Done: {action.name} ran. Deployment {deployment_line(view)}", result)


async def _preview(app: AppContext, action: DestructiveAction, target: str) -> CallToolResult:
    view = deployment_view(app.client, await app.client.get_deployment(target))
    if view.status in action.settled_statuses:
        result = ConfirmationResult(
            action=action.name, done=False, deployment=view, confirmation_token=None, expires_in_seconds=None
        )
        return structured(f"Nothing to do: deployment {deployment_line(view)}", result)

    token = app.guard.issue(action.name, target)
    ttl = app.guard.ttl_seconds
    result = ConfirmationResult(
        action=action.name, done=False, deployment=view, confirmation_token=token, expires_in_seconds=ttl
    )
    text = (
        f"Preview, nothing was done. {action.name} would {action.effect}: deployment {deployment_line(view)}, "
        f"endpoint {view.endpoint_url}. To go ahead, call {action.name} again with deployment_id {target} "
        f"and confirmation_token {token} within {ttl:g} seconds."
    )
    return structured(text, result)
