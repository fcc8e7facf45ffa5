"""Routes `POST /api/serving/start` and `GET /api/serving/status`, backed by Ray when it is installed."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ._http import http_error, json_response, parse_body, platform_of
from .ray_cluster import RayNotInstalledError
from .schemas import StartServingRequest

__all__ = ["LOCAL_EXTENSIONS", "routes"]

# Routes of the local platform that Kamiwaza 1.2.0 does not have:
# POST /api/serving/deployment/{id}/load, POST /api/serving/deployment/{id}/unload
# and POST /api/models/register.
LOCAL_EXTENSIONS = ("deployment_load", "deployment_unload", "model_register")


async def start_serving(request: Request) -> JSONResponse:
    body = await parse_body(request, StartServingRequest, required=False)
    address = request.query_params.get("address") or None
    try:
        result = await platform_of(request).ray.start(address, body.runtime_env, body.options)
    except RayNotInstalledError as exc:
        raise http_error(400, str(exc)) from exc
    return json_response(result)


async def serving_status(request: Request) -> JSONResponse:
    return json_response(await platform_of(request).ray.status())


async def ping(request: Request) -> JSONResponse:
    """Return `ok` and the routes this platform has beyond Kamiwaza 1.2.0, so clients can detect them."""
    return json_response({"status": "ok", "extensions": list(LOCAL_EXTENSIONS)})


routes = [
    Route("/api/ping", ping, methods=["GET"]),
    Route("/api/serving/start", start_serving, methods=["POST"]),
    Route("/api/serving/status", serving_status, methods=["GET"]),
]
