"""The local platform's Starlette app: the Kamiwaza API under `/api`, generation under `/runtime`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse

from . import routes_cluster, routes_models, routes_serving, runtime
from ._http import InternalErrorMiddleware, RequestValidationError
from .errors import PlatformError

if TYPE_CHECKING:
    from .platform import LocalPlatform

__all__ = ["create_app"]


def create_app(platform: LocalPlatform) -> Starlette:
    """Build the app; its routes reach `platform` through `app.state.platform`."""
    app = Starlette(
        routes=[*routes_cluster.routes, *routes_models.routes, *routes_serving.routes, *runtime.routes],
        middleware=[Middleware(InternalErrorMiddleware)],
        exception_handlers={
            HTTPException: _http_error,
            PlatformError: _platform_error,
            RequestValidationError: _validation_error,
        },
    )
    app.state.platform = platform
    return app


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, HTTPException):
        raise exc
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _platform_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, PlatformError):
        raise exc
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, RequestValidationError):
        raise exc
    return JSONResponse({"detail": exc.errors}, status_code=422)
