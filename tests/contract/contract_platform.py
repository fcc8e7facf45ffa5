"""The local platform under contract tests: hosting it, listing its routes, and checking its responses.

The local platform adds routes that Kamiwaza 1.2.0 does not have. `LOCAL_ROUTES`
lists them with the component schema of the body each one returns, so their
bodies are checked against the spec's shapes too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
from openapi_contract import API_PREFIX, OpenAPISpec
from platform_host import PlatformHost
from starlette.applications import Starlette
from starlette.routing import Route

__all__ = [
    "LOCAL_ROUTES",
    "PlatformHost",
    "local_route_of",
    "response_errors",
    "spec_routes_of",
]

# Local-only routes as (method, path template under /api), with the component schema of their 200 body.
LOCAL_ROUTES: dict[tuple[str, str], str] = {
    ("POST", "/serving/deployment/{deployment_id}/load"): "UIModelDeployment",
    ("POST", "/serving/deployment/{deployment_id}/unload"): "UIModelDeployment",
    ("POST", "/models/register"): "Model",
}
# Statuses the spec does not document but the platform returns, each with a `{"detail": str}` body.
DETAIL_STATUSES = frozenset({400, 404, 409})


def _app_routes(app: Starlette) -> Iterator[tuple[str, str]]:
    for route in app.routes:
        if isinstance(route, Route) and route.path.startswith(API_PREFIX + "/"):
            for method in sorted(route.methods or ()):
                if method != "HEAD":
                    yield method, route.path


def spec_routes_of(app: Starlette, spec: OpenAPISpec) -> tuple[set[str], set[tuple[str, str]]]:
    """Split the app's `/api` routes into spec operation labels and routes the spec lacks.

    A route that differs from a spec path only by its trailing slash is an alias of
    that operation.
    """
    in_spec: set[str] = set()
    outside: set[tuple[str, str]] = set()
    for method, path in _app_routes(app):
        matched = spec.match(method, path) or spec.match(method, path + "/")
        if matched is None:
            outside.add((method, path.removeprefix(API_PREFIX)))
        else:
            in_spec.add(matched[0].label)
    return in_spec, outside


def local_route_of(method: str, url_path: str) -> tuple[str, str] | None:
    """Return the local-only route that `url_path` (under /api) belongs to, if any."""
    path = url_path.removeprefix(API_PREFIX)
    for route_method, template in LOCAL_ROUTES:
        prefix, _, suffix = template.partition("{deployment_id}")
        if method != route_method:
            continue
        if path == template or (suffix and path.startswith(prefix) and path.endswith(suffix)):
            return route_method, template
    return None


def response_errors(spec: OpenAPISpec, response: httpx.Response) -> tuple[str, list[str]]:
    """Check a response of the platform against the spec; return the route's label and the errors.

    Documented statuses are checked against their schema. 400, 404 and 409, which
    the spec leaves out, must carry a JSON object with a string `detail`.
    """
    request = response.request
    label, pointer = _route_schema(spec, request.method, request.url.path, response.status_code)
    if label is None:
        return f"{request.method} {request.url.path}", ["the route is neither in the spec nor local"]
    if "application/json" not in response.headers.get("content-type", ""):
        return label, [f"content-type is {response.headers.get('content-type')!r}, not JSON"]

    body: Any = json.loads(response.content)
    if pointer is not None:
        return label, spec.errors(pointer, body)
    if response.status_code in DETAIL_STATUSES:
        return label, _detail_errors(body)
    return label, [f"HTTP {response.status_code} is not documented for {label}"]


def _route_schema(spec: OpenAPISpec, method: str, path: str, status: int) -> tuple[str | None, str | None]:
    matched = spec.match(method, path)
    if matched is not None:
        operation = matched[0]
        return operation.label, spec.response_pointer(operation, status)
    local = local_route_of(method, path)
    if local is None:
        return None, None
    label = f"{local[0]} {local[1]} [local]"
    if status == 200:
        return label, f"/components/schemas/{LOCAL_ROUTES[local]}"
    if status == 422:
        return label, "/components/schemas/HTTPValidationError"
    return label, None


def _detail_errors(body: Any) -> list[str]:
    if not isinstance(body, dict):
        return [f"error body is a {type(body).__name__}, not an object with 'detail'"]
    if not isinstance(body.get("detail"), str) or not body["detail"]:
        return [f"error body has no string 'detail': {body!r}"]
    return []
