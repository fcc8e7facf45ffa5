"""Routes under `/api/models`: listing, search, configs and registration of model folders."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ._http import json_response, parse_body, path_uuid, platform_of
from .schemas import ModelSearchRequest, ModelSearchResponse, ModelSearchResult, RegisterModelRequest
from .store import ModelRecord
from .views import default_config_of, model_view

__all__ = ["routes"]

_LISTING = "GET /api/models/ lists the models"


async def list_models(request: Request) -> JSONResponse:
    platform = platform_of(request)
    await platform.registry.sync()
    return json_response([model_view(record) for record in platform.registry.list_models()])


async def get_model(request: Request) -> JSONResponse:
    model_id = path_uuid(request, "model_id", "model", _LISTING)
    return json_response(model_view(platform_of(request).require_model(model_id)))


async def list_model_configs(request: Request) -> JSONResponse:
    """Return the model's configs; each local model has one, which is its default."""
    model_id = path_uuid(request, "model_id", "model", _LISTING)
    record = platform_of(request).require_model(model_id)
    return json_response([default_config_of(record)])


async def search_models(request: Request) -> JSONResponse:
    """Match the query against model names and repo ids, case-insensitively; `hubs_to_search` is ignored."""
    body = await parse_body(request, ModelSearchRequest)
    platform = platform_of(request)
    await platform.registry.sync()
    matches = [
        record
        for record in platform.registry.list_models()
        if _matches(record, body.query, exact=bool(body.exact))
    ]
    limit = body.limit if body.limit is not None else len(matches)
    results = [ModelSearchResult(id=record.id, model=model_view(record)) for record in matches[:limit]]
    return json_response(
        ModelSearchResponse(results=results, total_results=len(matches), local_results_only=True)
    )


async def register_model(request: Request) -> JSONResponse:
    body = await parse_body(request, RegisterModelRequest)
    return json_response(await platform_of(request).register_model(body.path))


def _matches(record: ModelRecord, query: str, *, exact: bool) -> bool:
    wanted = query.strip().casefold()
    names = [str(record.info.get("name", "")).casefold(), str(record.info.get("repo_id", "")).casefold()]
    if exact:
        return wanted in names
    return any(wanted in name for name in names)


# Paths are listed with and without their trailing slash, because Starlette would
# redirect the other form (or return 405) and API clients do not follow redirects.
routes = [
    Route("/api/models/", list_models, methods=["GET"]),
    Route("/api/models", list_models, methods=["GET"]),
    Route("/api/models/search/", search_models, methods=["POST"]),
    Route("/api/models/search", search_models, methods=["POST"]),
    Route("/api/models/register", register_model, methods=["POST"]),
    Route("/api/models/{model_id}", get_model, methods=["GET"]),
    Route("/api/models/{model_id}/configs", list_model_configs, methods=["GET"]),
]
