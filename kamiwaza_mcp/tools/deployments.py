"""Tools that create, inspect and stop deployments."""

from __future__ import annotations

import json
from typing import Annotated, Any

from mcp.server.mcpserver.resolve import Elicit, ElicitationResult, Resolve
from mcp_types import CallToolResult
from pydantic import BaseModel, Field

from ..client import KamiwazaClient, KamiwazaError
from ..client.models import Deployment, DeploymentStatus
from ._common import (
    DEFAULT_PAGE_SIZE,
    ConfigId,
    ConfirmationToken,
    Cursor,
    DeploymentId,
    Limit,
    MaxConcurrentRequests,
    ModelReference,
    Replicas,
    ResponseFormat,
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
from ._paging import page_text, paginate
from ._views import (
    DeploymentEntry,
    DeploymentSummary,
    DeploymentView,
    deployment_entry,
    deployment_line,
    deployment_summary,
    deployment_view,
    entry_line,
)

__all__ = ["STOP", "TOOLS", "deployment_sort_key", "progress_text"]

# The runtime_env key that makes the platform skip its memory check, so a deployment
# is created even when the estimate reports that it does not fit.
FORCE_ENV = "KAMIWAZA_FORCE"


class DeploymentList(BaseModel):
    """One page of the deployments, oldest first."""

    deployments: list[DeploymentEntry] = Field(description="deployments of this page")
    total: int = Field(description="deployments that match, on all pages")
    next_cursor: str | None = Field(description="cursor of the next page; null on the last page")


class DeploymentStatusView(BaseModel):
    """The status word of one deployment."""

    deployment_id: str = Field(description="deployment UUID")
    status: str = Field(description="REQUESTED, DEPLOYING, DEPLOYED, UNLOADED, STOPPED or FAILED")
    ready: bool = Field(description="whether the deployment is DEPLOYED and can generate")
    terminal: bool = Field(description="whether the status will stay as it is without a new request")


STOP = DestructiveAction(
    name="stop_deployment",
    verb="Stop",
    effect="end every replica and free its memory permanently",
    settled_statuses=frozenset({DeploymentStatus.STOPPED}),
    run=KamiwazaClient.stop_deployment,
)


async def _ask_before_stop(
    ctx: ToolContext, deployment_id: str, confirmation_token: str | None
) -> Elicit[ConfirmationForm] | FormOutcome:
    return await ask_person(ctx, STOP, deployment_id, confirmation_token)


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
            description="serving engine (vllm, transformers, llamacpp); omit to let the platform choose",
        ),
    ] = None,
    wait: Annotated[bool, Field(description="wait until the deployment is DEPLOYED or FAILED")] = True,
    wait_timeout_seconds: WaitTimeoutSeconds = None,
    config_id: ConfigId = None,
    force: Annotated[bool, Field(description="deploy even when the estimate says it does not fit")] = False,
) -> Annotated[CallToolResult, DeploymentSummary]:
    """Create a new deployment of a model (check the fit with estimate_model_vram first).

    Waits until it is DEPLOYED or FAILED, sending the status as progress, and returns the deployment.
    """
    app = app_of(ctx)
    app.policy.check_replicas(replicas)
    found = await app.client.resolve_model(model)
    app.policy.check_model_allowed(found)
    if app.policy.max_deployments is not None:
        # NOTE: two deploy calls at the same moment can both pass this count.
        app.policy.check_deployment_count(await app.client.list_deployments())
    request = await app.client.deployment_request(
        found,
        config_id=config_id,
        replicas=replicas,
        max_concurrent_requests=max_concurrent_requests,
        engine_name=engine,
    )
    if force:
        request = request.model_copy(
            update={"runtime_env": {**(request.runtime_env or {}), FORCE_ENV: "true"}}
        )
    # NOTE: the body still carries `engine: "vllm"`, the API schema's default, when
    # `engine` is omitted. The local platform reads that as "choose"; whether a
    # Kamiwaza release does the same when engine_name is null is unverified.
    deployment_id = await app.client.deploy_model(request)
    timeout = wait_seconds(app, wait_timeout_seconds)
    try:
        if wait:
            deployment = await wait_for_terminal_status(
                app.client, deployment_id, timeout, app.poll_interval_seconds, progress_reporter(ctx)
            )
        else:
            deployment = await app.client.get_deployment(deployment_id)
    except KamiwazaError as exc:
        # The deployment exists even though reading it back failed, so the caller gets its id.
        created = f"deployment {deployment_id} was created; check it with get_deployment_status"
        exc.hint = f"{created}, and {exc.hint}" if exc.hint else created
        raise
    summary = deployment_summary(app.client, deployment)
    return structured(progress_text(summary, waited=wait, timeout=timeout), summary)


@tool("List deployments", read_only=True)
async def list_deployments(
    ctx: ToolContext,
    model: Annotated[
        str | None,
        Field(
            min_length=1, max_length=512, description="model UUID, name or repo id to filter by; omit for all"
        ),
    ] = None,
    limit: Limit = DEFAULT_PAGE_SIZE,
    cursor: Cursor = None,
    response_format: ResponseFormat = "concise",
) -> Annotated[CallToolResult, DeploymentList]:
    """List deployments, oldest first, with status, replicas up and id; optionally of one model only."""
    app = app_of(ctx)
    model_id = None
    if model is not None:
        model_id = (await app.client.resolve_model(model)).id or model
    detailed = response_format == "detailed"
    pairs = [
        (deployment, deployment_entry(app.client, deployment, detailed=detailed))
        for deployment in await app.client.list_deployments(model_id)
    ]

    page = paginate(
        pairs,
        tool="list_deployments",
        key=lambda pair: deployment_sort_key(pair[0]),
        limit=limit,
        cursor=cursor,
        size_of=lambda pair: max(len(_entry_text(pair[1])), len(pair[1].model_dump_json(exclude_unset=True))),
        max_tokens=app.policy.max_response_tokens,
    )
    entries = [entry for _deployment, entry in page.items]
    view = DeploymentList(deployments=entries, total=page.total, next_cursor=page.next_cursor)
    if page.total == 0:
        return structured("No deployments. Create one with deploy_model.", view)
    text = page_text(
        page,
        noun="deployments",
        lines=[_entry_text(entry) for entry in entries],
        max_tokens=app.policy.max_response_tokens,
        narrowing="filter with model, or pass response_format concise",
    )
    return structured(text, view)


@tool("Get deployment", read_only=True)
async def get_deployment(
    ctx: ToolContext, deployment_id: DeploymentId, response_format: ResponseFormat = "concise"
) -> Annotated[CallToolResult, DeploymentView]:
    """Return one deployment with its replicas, endpoint URL and last error."""
    client = app_of(ctx).client
    deployment = await client.get_deployment(canonical_uuid(deployment_id, "deployment", "list_deployments"))
    view = deployment_view(client, deployment, detailed=response_format == "detailed")
    text = f"{deployment_line(view)}; endpoint {view.endpoint_url}"
    if view.platform is not None:
        text += "\n" + _fields_text(view.platform)
    return structured(text, view)


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
    *,
    confirmation: Annotated[ElicitationResult[Any], Resolve(_ask_before_stop)],
) -> Annotated[CallToolResult, ConfirmationResult]:
    """End all replicas of a deployment for good (unload_model keeps the deployment); the person must confirm.

    They confirm in a form when the client supports one, otherwise with the token of a preview call.
    """
    return await run_destructive(ctx, STOP, deployment_id, confirmation_token, confirmation)


def progress_text(view: DeploymentSummary, *, waited: bool, timeout: float) -> str:
    """Return the text result of a deploy or load call: the deployment, and the next step if any."""
    text = f"Deployment {entry_line(view)}; endpoint {view.endpoint_url}"
    if view.status in DeploymentStatus.PENDING:
        if waited:
            text += f". Still {view.status} after {timeout:g} s"
        text += f"; call get_deployment_status with deployment_id {view.id} until it is DEPLOYED"
    elif view.status in DeploymentStatus.FAILURES:
        text += "; check the error above and the fit with estimate_model_vram"
    return text


def deployment_sort_key(deployment: Deployment) -> tuple[str, str]:
    """Return the key of the stable order of deployments: creation time, then id."""
    return (deployment.created_at, deployment.id)


def _entry_text(entry: DeploymentEntry) -> str:
    line = entry_line(entry)
    if entry.platform is not None:
        line += f"; endpoint {entry.endpoint_url}; engine {entry.engine}; created {entry.created_at}"
        for instance in entry.instances or []:
            line += f"\n  - replica {instance.id} {instance.status} at {instance.host}:{instance.port}"
    return line


def _fields_text(fields: dict[str, Any]) -> str:
    """Return one `name: value` line per field the platform returned, in its order."""
    lines = []
    for name, value in fields.items():
        shown = value if isinstance(value, str | int | float | bool) or value is None else json.dumps(value)
        lines.append(f"{name}: {shown}")
    return "\n".join(lines)


TOOLS = (deploy_model, list_deployments, get_deployment, get_deployment_status, stop_deployment)
