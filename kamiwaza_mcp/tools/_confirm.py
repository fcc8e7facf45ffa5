"""The person's confirmation of stop_deployment and unload_model, obtained before they act.

With the confirmation policy `auto` and a client that supports form
elicitation, the person gets a form that shows what will stop and has them
type the deployment's model name (or its id). Only a typed match acts. A
decline, a cancel, a mismatch, or no response within the policy's timeout acts
on nothing. With `token`, or a client without form elicitation, the first call
returns a preview and a single-use token, and a second call with the token
acts. With `deny`, every call is rejected.

The form is sent through an SDK resolver (a parameter annotated
`Resolve(...)`), so it works on both protocol generations:

- 2026-07-28: the call returns an InputRequiredResult carrying the form, and
  the client calls again with the person's response. The server does not wait,
  and the guard rejects a response that arrives after the timeout.
- 2025-11-25 and earlier: the server sends `elicitation/create` in the middle of
  the call. The SDK sends it without a deadline, so the resolver sends it
  itself through `ctx.elicit` under the policy's timeout.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import anyio
from mcp.server.elicitation import CancelledElicitation, DeclinedElicitation
from mcp.server.mcpserver.resolve import Elicit, ElicitationResult
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult
from mcp_types.version import is_version_at_least
from pydantic import BaseModel, Field

from ..app_context import AppContext
from ..client import KamiwazaClient, KamiwazaError
from ..client.models import Deployment
from ..guard import ConfirmationError
from ..policy import ConfirmationMode
from ._common import ToolContext, app_of, canonical_uuid, structured
from ._views import DeploymentSummary, DeploymentView, deployment_line, deployment_summary, deployment_view

__all__ = [
    "NO_FORM",
    "ConfirmationForm",
    "ConfirmationResult",
    "DestructiveAction",
    "FormOutcome",
    "ask_person",
    "run_destructive",
]

logger = logging.getLogger(__name__)

# The first protocol revision that carries a form inside the tool result
# (InputRequiredResult) instead of a server-to-client request.
_INPUT_REQUIRED_VERSION = "2026-07-28"

Outcome = Literal[
    "preview", "done", "nothing_to_do", "declined", "cancelled", "timed_out", "not_matched", "form_failed"
]


class ConfirmationResult(BaseModel):
    """A preview with a token, or the outcome of the person's response or of a confirmed call."""

    action: str = Field(description="the tool that previewed or acted")
    outcome: Outcome = Field(
        description="preview, done, nothing_to_do, or why nothing was done: declined, cancelled, "
        "timed_out, not_matched, form_failed"
    )
    done: bool = Field(description="whether the action ran")
    deployment: DeploymentSummary = Field(description="the deployment as it is now")
    confirmation_token: str | None = Field(
        description="single-use token to pass back as confirmation_token to act; only in a preview"
    )
    expires_in_seconds: float | None = Field(description="seconds the token stays valid; only in a preview")


class ConfirmationForm(BaseModel):
    """The form the person fills in to confirm a destructive action."""

    typed: str = Field(
        title="Model name or deployment id",
        max_length=512,
        description="type the deployment's model name, or its id, to confirm",
    )


@dataclass(frozen=True)
class DestructiveAction:
    """A destructive tool: its name, what it does, and the statuses in which it has nothing left to do."""

    name: str
    verb: str
    effect: str
    settled_statuses: frozenset[str]
    run: Callable[[KamiwazaClient, str], Awaitable[object]]


@dataclass(frozen=True)
class FormOutcome:
    """Outcome of the confirmation form: never sent, timed out, failed, or the person's response."""

    kind: Literal["not_asked", "accept", "decline", "cancel", "timeout", "error"]
    typed: str | None = None
    detail: str | None = None
    # True when the response came back in a later request (2026-07-28), where
    # the timeout is checked against the time the form was sent.
    deferred: bool = False


NO_FORM = FormOutcome("not_asked")


# The resolver


async def ask_person(
    ctx: ToolContext, action: DestructiveAction, deployment_id: str, confirmation_token: str | None
) -> Elicit[ConfirmationForm] | FormOutcome:
    """Return the form for the person, or the outcome NO_FORM when none is needed.

    The form is sent only when the call could act after a typed confirmation.
    A call that the tool body rejects never bothers the person: a disabled
    tool, an extra argument, a token, an unknown or protected deployment, or
    nothing to do.
    """
    app = app_of(ctx)
    if not _wants_form(ctx, app) or confirmation_token is not None:
        return NO_FORM
    if not _only_deployment_id_given(ctx):
        return NO_FORM
    if app.policy.disabled_reason(action.name, read_only=False, destructive=True) is not None:
        return NO_FORM
    try:
        target = canonical_uuid(deployment_id, "deployment", "list_deployments")
        deployment = await app.client.get_deployment(target)
    except KamiwazaError:
        # The tool body reads the deployment again and reports the error.
        return NO_FORM
    view = deployment_view(app.client, deployment)
    if view.status in action.settled_statuses:
        return NO_FORM
    if app.policy.protecting_pattern(view.id, await model_name_of(app.client, deployment)) is not None:
        return NO_FORM

    message = _form_message(action, view)
    if _response_comes_later(ctx):
        # NOTE: the server cannot bound how long the client keeps this form open.
        # It can only make a response that arrives after the timeout act on nothing.
        if ctx.input_responses is None:
            app.guard.record_question(action.name, target)
        return Elicit(message, ConfirmationForm)
    return await _ask_now(ctx, app, message)


async def _ask_now(ctx: ToolContext, app: AppContext, message: str) -> FormOutcome:
    """Send the form in the middle of the call and wait for the response, at most the policy's timeout."""
    timeout = app.policy.elicitation_timeout_seconds
    with anyio.move_on_after(timeout):
        try:
            result = await ctx.elicit(message, ConfirmationForm)
        except (MCPError, ValueError) as exc:
            # MCPError: the client responded to the request with an error.
            # ValueError: accepted without content, or with content that fails the form.
            logger.info("The confirmation form failed: %s", exc)
            return FormOutcome("error", detail=str(exc))
        return _outcome_of_form(result)
    logger.info("The confirmation form timed out after %g s without a response", timeout)
    return FormOutcome("timeout")


def _wants_form(ctx: ToolContext, app: AppContext) -> bool:
    """Return whether the person confirms in a form: policy auto and a client that supports forms."""
    if app.policy.confirmation is not ConfirmationMode.AUTO:
        return False
    capabilities = ctx.client_capabilities
    elicitation = capabilities.elicitation if capabilities is not None else None
    # A bare `elicitation: {}` means forms, as it did before URL mode existed.
    return elicitation is not None and (elicitation.form is not None or elicitation.url is None)


def _response_comes_later(ctx: ToolContext) -> bool:
    version = ctx.protocol_version
    return version is not None and is_version_at_least(version, _INPUT_REQUIRED_VERSION)


def _only_deployment_id_given(ctx: ToolContext) -> bool:
    params = ctx.request_context.params or {}
    arguments = params.get("arguments") or {}
    if not isinstance(arguments, Mapping):
        return False
    extra = {key: value for key, value in arguments.items() if key != "deployment_id"}
    return extra == {} or extra == {"confirmation_token": None}


def _form_message(action: DestructiveAction, view: DeploymentView) -> str:
    # The SDK sends the form again when the message changes between the rounds
    # of a 2026-07-28 call, so the message contains nothing that changes while it is open.
    name = view.model_name or view.id
    return (
        f"{action.verb} {name}? This would {action.effect}: deployment {deployment_line(view)}, "
        f"endpoint {view.endpoint_url}. Type the model name {name} (or the deployment id) to confirm."
    )


def _outcome_of_form(result: ElicitationResult[ConfirmationForm]) -> FormOutcome:
    """Return the outcome of a form the resolver sent and waited for."""
    if isinstance(result, DeclinedElicitation):
        return FormOutcome("decline")
    if isinstance(result, CancelledElicitation):
        return FormOutcome("cancel")
    return FormOutcome("accept", typed=result.data.typed)


def _outcome_of_injected(result: ElicitationResult[Any]) -> FormOutcome:
    """Return the outcome the SDK injected for the resolver, whichever protocol carried it.

    The SDK wraps a value the resolver returned in AcceptedElicitation. The
    other outcomes come from a form the SDK sent, so their response was deferred.
    """
    if isinstance(result, DeclinedElicitation):
        return FormOutcome("decline", deferred=True)
    if isinstance(result, CancelledElicitation):
        return FormOutcome("cancel", deferred=True)
    data = result.data
    if isinstance(data, FormOutcome):
        return data
    if isinstance(data, ConfirmationForm):
        return FormOutcome("accept", typed=data.typed, deferred=True)
    raise TypeError(f"unexpected confirmation value of type {type(data).__name__}")


# The tool body


async def run_destructive(
    ctx: ToolContext,
    action: DestructiveAction,
    deployment_id: str,
    token: str | None,
    confirmation: ElicitationResult[Any],
) -> CallToolResult:
    """Act on the deployment once the person confirmed, or return why nothing was done.

    Raises PolicyError for the deny policy and for a protected deployment, and
    ConfirmationError for a token that is rejected, before anything runs.
    """
    app = app_of(ctx)
    target = canonical_uuid(deployment_id, "deployment", "list_deployments")
    app.policy.check_confirmation_possible(action.name)
    deployment = await app.client.get_deployment(target)
    app.policy.check_not_protected(action.name, deployment.id, await model_name_of(app.client, deployment))
    if deployment.status in action.settled_statuses:
        return _result(
            app, action, deployment, "nothing_to_do", f"Nothing to do: deployment {_line(app, deployment)}"
        )

    form = _outcome_of_injected(confirmation)
    if form.kind != "not_asked":
        return await _finish_with_form(app, action, deployment, form)
    if _wants_form(ctx, app):
        hint = f"call {action.name} with deployment_id only, and the person confirms in the form"
        if token is not None:
            raise ConfirmationError(
                "this client supports forms, so the person confirms in a form and tokens are not accepted",
                hint=hint,
            )
        raise ConfirmationError(
            "the confirmation form was not sent because reading the deployment failed", hint=hint
        )
    if token is None:
        return _preview(app, action, deployment)

    app.guard.redeem(token, action.name, target)
    return await _act(app, action, deployment, "Done:")


async def _finish_with_form(
    app: AppContext, action: DestructiveAction, deployment: Deployment, form: FormOutcome
) -> CallToolResult:
    """Act when the person typed the model name or the deployment id, else return why nothing was done."""
    name = deployment.m_name or deployment.id
    timeout = app.policy.elicitation_timeout_seconds
    if form.deferred:
        age = app.guard.take_question_age(action.name, deployment.id)
        if form.kind == "accept" and (age is None or age > timeout):
            form = FormOutcome("timeout")

    nothing = "nothing was done"
    reasons: dict[str, tuple[Outcome, str]] = {
        "decline": ("declined", f"The person declined to {action.verb.lower()} {name}; {nothing}"),
        "cancel": ("cancelled", f"The person closed the form without responding; {nothing}"),
        "timeout": ("timed_out", f"The form timed out after {timeout:g} s without a response; {nothing}"),
        "error": ("form_failed", f"The confirmation form failed ({form.detail}); {nothing}"),
    }
    if form.kind in reasons:
        outcome, text = reasons[form.kind]
        return _result(app, action, deployment, outcome, f"{text}. Deployment {_line(app, deployment)}")

    typed = (form.typed or "").strip()
    if not _matches(typed, deployment):
        text = (
            f"Not confirmed: the person typed {typed!r}, which is neither the model name {name} "
            f"nor the deployment id; {nothing}. Deployment {_line(app, deployment)}"
        )
        return _result(app, action, deployment, "not_matched", text)
    return await _act(app, action, deployment, "Done: the person confirmed, and")


async def model_name_of(client: KamiwazaClient, deployment: Deployment) -> str | None:
    """Return the deployment's model name, asking the platform for the model when the deployment omits it.

    Returns None when the platform cannot tell; the protected-deployment check then fails closed.
    """
    if deployment.m_name:
        return deployment.m_name
    try:
        return (await client.get_model(deployment.m_id)).name
    except KamiwazaError as exc:
        logger.info(
            "Cannot read the model %s of deployment %s: %s: %s", deployment.m_id, deployment.id, exc.kind, exc
        )
        return None


def _matches(typed: str, deployment: Deployment) -> bool:
    if deployment.m_name and typed == deployment.m_name:
        return True
    try:
        return str(uuid.UUID(typed)) == deployment.id
    except ValueError:
        return False


async def _act(
    app: AppContext, action: DestructiveAction, deployment: Deployment, lead: str
) -> CallToolResult:
    await action.run(app.client, deployment.id)
    after = await app.client.get_deployment(deployment.id)
    return _result(app, action, after, "done", f"{lead} {action.name} ran. Deployment {_line(app, after)}")


def _preview(app: AppContext, action: DestructiveAction, deployment: Deployment) -> CallToolResult:
    view = deployment_view(app.client, deployment)
    token = app.guard.issue(action.name, deployment.id)
    ttl = app.guard.ttl_seconds
    result = ConfirmationResult(
        action=action.name,
        outcome="preview",
        done=False,
        deployment=deployment_summary(app.client, deployment),
        confirmation_token=token,
        expires_in_seconds=ttl,
    )
    text = (
        f"Preview, nothing was done. {action.name} would {action.effect}: deployment {deployment_line(view)}, "
        f"endpoint {view.endpoint_url}. Show this to the person; if they agree, call {action.name} again "
        f"with deployment_id {deployment.id} and confirmation_token {token} within {ttl:g} seconds."
    )
    return structured(text, result)


def _result(
    app: AppContext, action: DestructiveAction, deployment: Deployment, outcome: Outcome, text: str
) -> CallToolResult:
    result = ConfirmationResult(
        action=action.name,
        outcome=outcome,
        done=outcome == "done",
        deployment=deployment_summary(app.client, deployment),
        confirmation_token=None,
        expires_in_seconds=None,
    )
    return structured(text, result)


def _line(app: AppContext, deployment: Deployment) -> str:
    return deployment_line(deployment_view(app.client, deployment))
