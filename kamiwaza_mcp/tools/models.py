"""Tools for the models registered on the platform."""

from __future__ import annotations

from typing import Annotated, Any

from mcp_types import CallToolResult
from pydantic import BaseModel, Field

from ..client.models import Model
from ._common import (
    DEFAULT_PAGE_SIZE,
    ConfigId,
    Cursor,
    Limit,
    MaxConcurrentRequests,
    ModelReference,
    Replicas,
    ResponseFormat,
    ToolContext,
    app_of,
    structured,
    tool,
)
from ._paging import page_text, paginate
from ._views import PLATFORM_FIELD_DESCRIPTION, platform_fields

__all__ = ["TOOLS", "model_sort_key"]

# Keys of the estimate response that the result maps to its own fields; every
# other key goes into the breakdown.
_MAPPED_ESTIMATE_KEYS = frozenset(
    {
        "computed_vram_estimate",
        "per_replica_bytes",
        "total_bytes",
        "highest_node_vram",
        "available_bytes",
        "fits",
        "estimate_source",
        "replicas",
        "context_length",
    }
)


class ModelView(BaseModel):
    """A model the platform can deploy; response_format detailed fills the optional fields."""

    name: str = Field(description="model name")
    id: str | None = Field(description="model UUID")
    repo_id: str | None = Field(description="Hugging Face repo id, when the model came from a hub")
    size_bytes: int = Field(
        description="total size of the model's files in bytes, where the platform reports it"
    )
    family: str | None = Field(default=None, description="model family, such as llama")
    hosted: str | None = Field(default=None, description="where the model is hosted, such as local")
    files: list[str] | None = Field(default=None, description="names of the model's files")
    platform: dict[str, Any] | None = Field(default=None, description=PLATFORM_FIELD_DESCRIPTION)


class ModelList(BaseModel):
    """One page of the models, by name."""

    models: list[ModelView] = Field(description="models of this page")
    total: int = Field(description="models on all pages")
    next_cursor: str | None = Field(description="cursor of the next page; null on the last page")


class VramEstimate(BaseModel):
    """Memory a deployment of a model needs, and whether it fits."""

    model_id: str = Field(description="UUID of the model estimated")
    model_name: str = Field(description="name of the model estimated")
    replicas: int = Field(description="replicas the estimate is for")
    max_concurrent_requests: int | None = Field(description="concurrency the estimate assumes, when given")
    context_length: int | None = Field(
        description="context length in tokens the estimate assumes, when reported"
    )
    per_replica_bytes: int = Field(description="bytes one replica needs")
    total_bytes: int = Field(description="bytes all replicas need together")
    available_bytes: int | None = Field(description="bytes available on the largest node, when reported")
    fits: bool | None = Field(
        description="whether the deployment fits; null when the available memory is unknown"
    )
    source: str | None = Field(
        description="what the estimate was computed from, such as safetensors or config"
    )
    breakdown: dict[str, Any] | None = Field(
        description="further figures the platform reported, such as weights_bytes and kv_cache_bytes"
    )


def _model_view(model: Model, *, detailed: bool) -> ModelView:
    view = ModelView(
        name=model.name,
        id=model.id,
        repo_id=model.repo_modelId,
        size_bytes=sum(file.size or 0 for file in model.m_files),
    )
    if detailed:
        view.family = model.modelfamily
        view.hosted = model.hosted
        view.files = [file.name for file in model.m_files]
        view.platform = platform_fields(model)
    return view


def model_sort_key(model: ModelView) -> tuple[str, str]:
    """Return the key of the stable order of models: name ignoring case, then id."""
    return (model.name.casefold(), model.id or "")


@tool("List models", read_only=True)
async def list_models(
    ctx: ToolContext,
    limit: Limit = DEFAULT_PAGE_SIZE,
    cursor: Cursor = None,
    response_format: ResponseFormat = "concise",
) -> Annotated[CallToolResult, ModelList]:
    """List the models the platform can deploy, by name, with their ids and repo ids.

    Pass a model's name, id or repo id to estimate_model_vram or deploy_model.
    """
    app = app_of(ctx)
    detailed = response_format == "detailed"
    views = [_model_view(model, detailed=detailed) for model in await app.client.list_models()]
    page = paginate(
        views,
        tool="list_models",
        key=model_sort_key,
        limit=limit,
        cursor=cursor,
        size_of=lambda view: max(len(_model_line(view)), len(view.model_dump_json(exclude_unset=True))),
        max_tokens=app.policy.max_response_tokens,
    )
    result = ModelList(models=page.items, total=page.total, next_cursor=page.next_cursor)
    if page.total == 0:
        return structured(
            "No models. Add a Hugging Face model folder to the platform's models folder.", result
        )
    text = page_text(
        page,
        noun="models",
        lines=[_model_line(view) for view in page.items],
        max_tokens=app.policy.max_response_tokens,
        narrowing="pass response_format concise",
    )
    return structured(text, result)


def _model_line(view: ModelView) -> str:
    line = f"{view.name} (id {view.id}" + (f", repo {view.repo_id})" if view.repo_id else ")")
    line += f", {view.size_bytes / 2**30:.2f} GiB"
    if view.files is not None:
        line += f"; family {view.family}; hosted {view.hosted}; files {', '.join(view.files)}"
    return line


@tool("Estimate model memory", read_only=True)
async def estimate_model_vram(
    ctx: ToolContext,
    model: ModelReference,
    replicas: Replicas = 1,
    max_concurrent_requests: MaxConcurrentRequests = None,
    context_length: Annotated[
        int | None,
        Field(
            ge=1,
            le=10_000_000,
            description="context length in tokens; omit for the model's configured length",
        ),
    ] = None,
    config_id: ConfigId = None,
) -> Annotated[CallToolResult, VramEstimate]:
    """Estimate the memory a deployment of a model needs (GPU, or RAM on a CPU platform), and whether it fits.

    Call it before deploy_model to choose replicas and concurrency.
    """
    client = app_of(ctx).client
    found = await client.resolve_model(model)
    request = await client.deployment_request(
        found, config_id=config_id, replicas=replicas, max_concurrent_requests=max_concurrent_requests
    )
    model_id = request.m_id
    estimate = await client.estimate_model_vram(request)
    if context_length is not None:
        estimate = _with_context_length(estimate, context_length, replicas)
    view = _estimate_view(found.name, model_id, replicas, max_concurrent_requests, estimate)
    return structured(_estimate_text(view), view)


def _with_context_length(estimate: dict[str, Any], context_length: int, replicas: int) -> dict[str, Any]:
    """Return the estimate with its KV cache scaled from the platform's context length to `context_length`.

    CreateModelDeployment (API 1.2.0) has no context-length field, so the platform
    estimates at the length of the model's configuration. The KV cache grows
    linearly with the context length, so it is rescaled here.
    """
    # NOTE: an overhead the platform computes as a fraction of the KV cache is not
    # rescaled. An estimate without kv_cache_bytes and context_length, as remote
    # platforms may return, is left unchanged, with a note in the breakdown.
    kv_bytes = _positive_int(estimate.get("kv_cache_bytes"))
    platform_length = _positive_int(estimate.get("context_length"))
    per_replica = _positive_int(estimate.get("per_replica_bytes", estimate.get("computed_vram_estimate")))
    if kv_bytes is None or platform_length is None or per_replica is None:
        note = f"context_length {context_length} was not applied: the platform reports no KV cache size"
        return {**estimate, "note": note}

    scaled_kv = kv_bytes * context_length // platform_length
    scaled_per_replica = per_replica - kv_bytes + scaled_kv
    available = estimate.get("available_bytes", estimate.get("highest_node_vram"))
    scaled = {
        **estimate,
        "kv_cache_bytes": scaled_kv,
        "per_replica_bytes": scaled_per_replica,
        "computed_vram_estimate": scaled_per_replica,
        "total_bytes": scaled_per_replica * replicas,
        "context_length": context_length,
        "platform_context_length": platform_length,
    }
    if isinstance(available, int | float):
        scaled["fits"] = scaled_per_replica * replicas <= available
    return scaled


def _positive_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _estimate_view(
    model_name: str,
    model_id: str,
    replicas: int,
    max_concurrent_requests: int | None,
    estimate: dict[str, Any],
) -> VramEstimate:
    per_replica = int(estimate.get("per_replica_bytes") or estimate.get("computed_vram_estimate") or 0)
    total = int(estimate.get("total_bytes") or per_replica * replicas)
    available_raw = estimate.get("available_bytes", estimate.get("highest_node_vram"))
    available = int(available_raw) if isinstance(available_raw, int | float) else None
    fits = estimate.get("fits")
    if not isinstance(fits, bool):
        fits = None if available is None else total <= available
    context = estimate.get("context_length")
    breakdown = {key: value for key, value in estimate.items() if key not in _MAPPED_ESTIMATE_KEYS}
    return VramEstimate(
        model_id=model_id,
        model_name=model_name,
        replicas=replicas,
        max_concurrent_requests=max_concurrent_requests,
        context_length=context if isinstance(context, int) else None,
        per_replica_bytes=per_replica,
        total_bytes=total,
        available_bytes=available,
        fits=fits,
        source=estimate.get("estimate_source"),
        breakdown=breakdown or None,
    )


def _estimate_text(view: VramEstimate) -> str:
    text = (
        f"{view.model_name}: {_gib(view.per_replica_bytes)} per replica, "
        f"{_gib(view.total_bytes)} for {view.replicas} replica(s)"
    )
    if view.available_bytes is not None:
        text += f"; {_gib(view.available_bytes)} available"
    if view.fits is not None:
        text += "; fits" if view.fits else "; does NOT fit: lower replicas or max_concurrent_requests"
    return text + "."


def _gib(size: int) -> str:
    return f"{size / 2**30:.2f} GiB"


TOOLS = (list_models, estimate_model_vram)
