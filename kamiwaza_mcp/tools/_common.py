"""Pieces every tool group uses: the tool decorator, error results, shared parameters.

`tool(...)` wraps each tool function once, so every tool gets the same
treatment. A tool the policy disables rejects the call. Arguments the tool
does not declare are rejected before it runs. Client errors become error
results whose text starts with the error's kind, names the value and gives
the next step. A text result longer than the policy's token budget is cut,
with a note on how to request less.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
import time
import typing
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeAlias

import anyio
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.resolve import Resolve
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, BeforeValidator, Field

from ..app_context import AppContext
from ..client import InvalidRequestError, KamiwazaClient, KamiwazaError
from ..client.models import Deployment, DeploymentStatus

__all__ = [
    "ConfigId",
    "ConfirmationToken",
    "Cursor",
    "DeploymentId",
    "Limit",
    "MaxConcurrentRequests",
    "ModelReference",
    "Replicas",
    "ResponseFormat",
    "StatusCallback",
    "ToolContext",
    "ToolSpec",
    "WaitTimeoutSeconds",
    "app_of",
    "canonical_uuid",
    "estimated_tokens",
    "progress_reporter",
    "structured",
    "tool",
    "wait_for_terminal_status",
    "wait_seconds",
]

logger = logging.getLogger(__name__)

ToolContext: TypeAlias = Context[AppContext, Any]
ToolFunction: TypeAlias = Callable[..., Awaitable[CallToolResult]]
StatusCallback: TypeAlias = Callable[[str], Awaitable[None]]

# Sanity bounds, not capacity limits: they stop a slip such as replicas=1000
# before it reaches the platform, which checks the real capacity.
MAX_REPLICAS = 32
MAX_CONCURRENT_REQUESTS = 4096
MAX_WAIT_SECONDS = 600
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 200
# Tokens are estimated as characters / 4, a common rule of thumb for English
# text and JSON; no tokenizer of any host is consulted.
CHARS_PER_TOKEN = 4

# The way to request less from each tool, for the note of a cut result.
_NARROWING_HINTS = {
    "generate": "pass a lower max_tokens",
    "simple_generate": "pass a lower max_tokens",
    "get_deployment": "pass response_format concise",
    "get_health": "pass deployment_id, a lower limit, or the next_cursor",
    "get_deployment_logs": "pass a lower lines, or an instance_id",
}


def _reject_boolean_token(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError(
            f"confirmation_token must be the token string a preview call returned, not {str(value).lower()}; "
            "call the tool without confirmation_token to get a preview and a token"
        )
    return value


DeploymentId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        description="deployment UUID; list_deployments shows it",
    ),
]
ModelReference = Annotated[
    str,
    Field(
        min_length=1,
        max_length=512,
        description="model name, UUID or Hugging Face repo id; list_models shows them",
    ),
]
Replicas = Annotated[int, Field(ge=1, le=MAX_REPLICAS, description="number of replicas (copies) to run")]
ConfigId = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=64,
        description="UUID of the model configuration to deploy with; omit for the model's default",
    ),
]
MaxConcurrentRequests = Annotated[
    int | None,
    Field(
        ge=1,
        le=MAX_CONCURRENT_REQUESTS,
        description="requests a deployment serves at once; omit for the default",
    ),
]
WaitTimeoutSeconds = Annotated[
    float | None,
    Field(
        ge=0,
        le=MAX_WAIT_SECONDS,
        description="seconds to wait; default and maximum: the server's limit, 60 unless set",
    ),
]
Limit = Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE, description="items per page")]
Cursor = Annotated[
    str | None,
    Field(min_length=1, max_length=512, description="next_cursor of the previous page; omit for the first"),
]
ResponseFormat = Annotated[
    Literal["concise", "detailed"],
    Field(description="concise: the fields an agent needs; detailed: adds all the platform returned"),
]
ConfirmationToken = Annotated[
    str | None,
    BeforeValidator(_reject_boolean_token),
    Field(
        max_length=256,
        description="token from a preview call of this tool; omit it to get the preview and a token",
    ),
]


@dataclass(frozen=True)
class ToolSpec:
    """A tool function with the title, description and hints it is published with."""

    fn: ToolFunction
    title: str
    description: str
    annotations: ToolAnnotations

    @property
    def name(self) -> str:
        return self.fn.__name__

    @property
    def read_only(self) -> bool:
        return self.annotations.read_only_hint is True

    @property
    def destructive(self) -> bool:
        return self.annotations.destructive_hint is True


def tool(
    title: str,
    *,
    read_only: bool,
    destructive: bool = False,
    idempotent: bool = True,
) -> Callable[[ToolFunction], ToolSpec]:
    """Wrap a tool function and describe it for registration.

    The function must take the context as `ctx`, and its docstring is the
    description the model reads. Every tool here talks only to the configured
    Kamiwaza platform, so openWorldHint is false.
    """
    # The title is published once, as the tool's own `title`; hosts read
    # `annotations.title` only when that is missing.
    hints = ToolAnnotations(
        read_only_hint=read_only,
        destructive_hint=destructive,
        idempotent_hint=idempotent,
        open_world_hint=False,
    )

    def decorate(fn: ToolFunction) -> ToolSpec:
        parameters = inspect.signature(fn).parameters
        if "ctx" not in parameters:
            raise TypeError(f"tool {fn.__name__} must take the context as a parameter named ctx")
        if not fn.__doc__:
            raise TypeError(f"tool {fn.__name__} needs a docstring: it is the description the model reads")
        # Parameters filled by a resolver are not arguments a caller may send.
        resolved = _resolved_parameters(fn)
        accepted = tuple(name for name in parameters if name != "ctx" and name not in resolved)
        wrapped = _guarded(fn, accepted, read_only=read_only, destructive=destructive)
        return ToolSpec(fn=wrapped, title=title, description=inspect.cleandoc(fn.__doc__), annotations=hints)

    return decorate


def _resolved_parameters(fn: ToolFunction) -> frozenset[str]:
    """Return the names of `fn`'s parameters annotated `Annotated[T, Resolve(...)]`.

    get_type_hints raises when an annotation cannot be evaluated, so a resolver
    defined after its tool fails at import instead of being missed.
    """
    hints = typing.get_type_hints(fn, include_extras=True)
    return frozenset(
        name
        for name, hint in hints.items()
        if typing.get_origin(hint) is Annotated
        and any(isinstance(marker, Resolve) for marker in typing.get_args(hint)[1:])
    )


def _guarded(
    fn: ToolFunction, accepted: tuple[str, ...], *, read_only: bool, destructive: bool
) -> ToolFunction:
    name = fn.__name__

    @functools.wraps(fn)
    async def run(*args: Any, **kwargs: Any) -> CallToolResult:
        ctx: ToolContext = kwargs["ctx"]
        try:
            policy = app_of(ctx).policy
            # Disabled tools are also left out of tools/list; this rejects a call made anyway.
            policy.check_enabled(name, read_only=read_only, destructive=destructive)
            _reject_unknown_arguments(name, ctx, accepted)
            result = await fn(*args, **kwargs)
            return _fit_text(result, name, policy.max_response_tokens)
        except KamiwazaError as exc:
            logger.info("Tool %s failed: %s: %s", name, exc.kind, exc)
            return error_result(f"{exc.kind}: {exc}")
        except Exception:
            logger.exception("Tool %s raised an unexpected exception", name)
            return error_result(
                f"InternalError: {name} failed unexpectedly; the server log has the details. "
                "Retry, and report the failure if it repeats"
            )

    return run


def _reject_unknown_arguments(tool_name: str, ctx: ToolContext, accepted: tuple[str, ...]) -> None:
    """Raise InvalidRequestError when the call carried an argument the tool does not declare.

    The SDK drops undeclared arguments silently, but a caller who sends
    `confirm: true` must learn that nothing was confirmed.
    """
    params = ctx.request_context.params or {}
    arguments = params.get("arguments") or {}
    if not isinstance(arguments, Mapping):
        return
    unknown = sorted(str(key) for key in arguments if key not in accepted)
    if not unknown:
        return
    listed = ", ".join(accepted) if accepted else "none"
    raise InvalidRequestError(
        f"{tool_name} does not accept the argument{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
        f"nothing was done",
        hint=f"call it again with only these arguments: {listed}",
    )


def _fit_text(result: CallToolResult, tool_name: str, max_tokens: int) -> CallToolResult:
    """Cut a text result longer than `max_tokens` estimated tokens, ending it with a note.

    Only the text block is cut. List tools keep their structured content
    within the budget themselves, by ending the page early.
    """
    # NOTE: the structured content of a single object (get_deployment with
    # response_format detailed, generated text) is not cut, so it can exceed the budget.
    if len(result.content) != 1 or result.content[0].type != "text":
        return result
    text = result.content[0].text
    if estimated_tokens(text) <= max_tokens:
        return result
    hint = _NARROWING_HINTS.get(
        tool_name, "request less: a filter, a lower limit, or response_format concise"
    )
    note = (
        f"\n[Cut: the result exceeded the server's limit of {max_tokens} tokens, estimated as characters / 4; "
        f"{hint}.]"
    )
    kept = text[: max(0, max_tokens * CHARS_PER_TOKEN - len(note))]
    return result.model_copy(update={"content": [TextContent(type="text", text=kept + note)]})


def estimated_tokens(text: str) -> int:
    """Return the token estimate of `text`: its length in characters divided by 4, rounded up."""
    return -(-len(text) // CHARS_PER_TOKEN)


def error_result(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


def structured(text: str, view: BaseModel) -> CallToolResult:
    """Return a result with `text` for the reader and `view` as the structured content.

    Fields never set on the view are left out, so the optional fields that
    only response_format detailed fills do not appear as nulls.
    """
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=view.model_dump(mode="json", exclude_unset=True),
    )


def app_of(ctx: ToolContext) -> AppContext:
    return ctx.request_context.lifespan_context


def canonical_uuid(value: str, what: str, listing_tool: str) -> str:
    """Return `value` as a lower-case hyphenated UUID, or raise InvalidRequestError naming it."""
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        raise InvalidRequestError(
            f"invalid {what} id {value!r}: expected a UUID such as 5f3c2a8e-0c1d-4b7a-9e2f-1a2b3c4d5e6f",
            hint=f"call {listing_tool} to find the id",
        ) from None


def wait_seconds(app: AppContext, requested: float | None) -> float:
    """Return how long a deploy or load call waits: `requested`, capped at the policy's limit."""
    limit = app.policy.max_wait_seconds
    return limit if requested is None else min(requested, limit)


def progress_reporter(ctx: ToolContext) -> StatusCallback:
    """Return a callback that sends each polled status as a progress notification.

    The progress value counts the polls. The SDK sends nothing when the
    caller's request carried no progress token.
    """
    polls = itertools.count(1)

    async def report(status: str) -> None:
        await ctx.report_progress(next(polls), None, status)

    return report


async def wait_for_terminal_status(
    client: KamiwazaClient,
    deployment_id: str,
    timeout_seconds: float,
    interval_seconds: float,
    on_status: StatusCallback | None = None,
) -> Deployment:
    """Poll the deployment's status until it is terminal (see DeploymentStatus) or time runs out.

    `on_status` is awaited with each polled status. Returns the deployment as
    it is at the end, and its status shows which happened. No request is
    cancelled midway, so the last poll may end up to one request's duration
    after the deadline.
    """
    deadline = time.monotonic() + timeout_seconds
    while True:
        status = await client.get_deployment_status(deployment_id)
        if on_status is not None:
            await on_status(status)
        remaining = deadline - time.monotonic()
        if status in DeploymentStatus.TERMINAL or remaining <= 0:
            break
        await anyio.sleep(min(interval_seconds, remaining))
    return await client.get_deployment(deployment_id)
