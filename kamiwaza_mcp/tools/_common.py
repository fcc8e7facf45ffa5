"""Pieces every tool group uses: the tool decorator, error results, shared parameters.

`tool(...)` wraps each tool function once, so every tool gets the same
treatment: arguments the tool does not declare are rejected before it runs,
and client errors become error results whose text starts with the error's
kind, names the value and gives the next step.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, TypeAlias

import anyio
from mcp.server.mcpserver import Context
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, BeforeValidator, Field

from ..app_context import AppContext
from ..client import InvalidRequestError, KamiwazaClient, KamiwazaError
from ..client.models import Deployment, DeploymentStatus

__all__ = [
    "ConfirmationToken",
    "DeploymentId",
    "MaxConcurrentRequests",
    "ModelReference",
    "Replicas",
    "ToolContext",
    "ToolSpec",
    "WaitTimeoutSeconds",
    "app_of",
    "canonical_uuid",
    "structured",
    "tool",
    "wait_for_terminal_status",
]

logger = logging.getLogger(__name__)

ToolContext: TypeAlias = Context[AppContext, Any]
ToolFunction: TypeAlias = Callable[..., Awaitable[CallToolResult]]

# Sanity bounds, not capacity limits: they stop a slip such as replicas=1000
# before it reaches the platform, which checks the real capacity.
MAX_REPLICAS = 32
MAX_CONCURRENT_REQUESTS = 4096
MAX_WAIT_SECONDS = 600


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
        description="deployment UUID, as list_deployments or deploy_model returns it",
    ),
]
ModelReference = Annotated[
    str,
    Field(
        min_length=1,
        max_length=512,
        description="model UUID, model name or Hugging Face repo id (such as Qwen/Qwen3-4B); list_models shows them",
    ),
]
Replicas = Annotated[int, Field(ge=1, le=MAX_REPLICAS, description="number of replicas (copies) to run")]
MaxConcurrentRequests = Annotated[
    int | None,
    Field(
        ge=1,
        le=MAX_CONCURRENT_REQUESTS,
        description="requests a deployment serves at once; omit for the default",
    ),
]
WaitTimeoutSeconds = Annotated[
    float,
    Field(ge=0, le=MAX_WAIT_SECONDS, description="seconds to wait for the deployment to finish starting"),
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
    """A tool function with the title and hints it is published with."""

    fn: ToolFunction
    title: str
    annotations: ToolAnnotations

    @property
    def name(self) -> str:
        return self.fn.__name__


def tool(
    title: str,
    *,
    read_only: bool,
    destructive: bool = False,
    idempotent: bool = True,
) -> Callable[[ToolFunction], ToolSpec]:
    """Wrap a tool function and describe it for registration.

    The function must take the context as `ctx`. Every tool here talks only
    to the configured Kamiwaza platform, so openWorldHint is false.
    """
    hints = ToolAnnotations(
        title=title,
        read_only_hint=read_only,
        destructive_hint=destructive,
        idempotent_hint=idempotent,
        open_world_hint=False,
    )

    def decorate(fn: ToolFunction) -> ToolSpec:
        parameters = inspect.signature(fn).parameters
        if "ctx" not in parameters:
            raise TypeError(f"tool {fn.__name__} must take the context as a parameter named ctx")
        accepted = tuple(name for name in parameters if name != "ctx")
        return ToolSpec(fn=_guarded(fn, accepted), title=title, annotations=hints)

    return decorate


def _guarded(fn: ToolFunction, accepted: tuple[str, ...]) -> ToolFunction:
    name = fn.__name__

    @functools.wraps(fn)
    async def run(*args: Any, **kwargs: Any) -> CallToolResult:
        try:
            _reject_unknown_arguments(name, kwargs["ctx"], accepted)
            return await fn(*args, **kwargs)
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


def error_result(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


def structured(text: str, view: BaseModel) -> CallToolResult:
    """Return a result with `text` for the reader and `view` as the structured content."""
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=view.model_dump(mode="json"),
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


async def wait_for_terminal_status(
    client: KamiwazaClient, deployment_id: str, timeout_seconds: float, interval_seconds: float
) -> Deployment:
    """Poll the deployment's status until it is terminal (see DeploymentStatus) or time runs out.

    Returns the deployment as it is at the end, and its status shows which
    happened. No request is cancelled midway, so the last poll may end up to one
    request's duration after the deadline.
    """
    deadline = time.monotonic() + timeout_seconds
    while True:
        status = await client.get_deployment_status(deployment_id)
        remaining = deadline - time.monotonic()
        if status in DeploymentStatus.TERMINAL or remaining <= 0:
            break
        await anyio.sleep(min(interval_seconds, remaining))
    return await client.get_deployment(deployment_id)
