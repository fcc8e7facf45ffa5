"""Request parsing and JSON responses shared by the local platform's route modules.

Errors follow the Kamiwaza API: `{"detail": "..."}` for 4xx errors, and for 422
the `HTTPValidationError` shape `{"detail": [{"loc": [...], "msg": ..., "type": ...}]}`.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from .platform import LocalPlatform

__all__ = [
    "InternalErrorMiddleware",
    "RequestValidationError",
    "http_error",
    "json_response",
    "parse_body",
    "path_uuid",
    "platform_of",
    "query_bool",
    "query_int",
    "query_uuid",
]

logger = logging.getLogger(__name__)

BodyModel = TypeVar("BodyModel", bound=BaseModel)


class RequestValidationError(Exception):
    """A request's body or query is invalid; the app returns 422 with `errors` as the detail."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} validation errors")
        self.errors = errors


def platform_of(request: Request) -> LocalPlatform:
    platform: LocalPlatform = request.app.state.platform
    return platform


def http_error(status_code: int, detail: str) -> HTTPException:
    return HTTPException(status_code=status_code, detail=detail)


def json_response(content: Any, status_code: int = 200) -> JSONResponse:
    """Serialize a pydantic model, a list of them, or plain JSON data."""
    if isinstance(content, BaseModel):
        content = content.model_dump(mode="json")
    elif isinstance(content, list) and all(isinstance(item, BaseModel) for item in content):
        content = [item.model_dump(mode="json") for item in content]
    return JSONResponse(content, status_code=status_code)


async def parse_body(request: Request, model: type[BodyModel], *, required: bool = True) -> BodyModel:
    """Validate the JSON body against `model`; raise RequestValidationError when it does not fit."""
    raw = await request.body()
    if not raw.strip():
        if required:
            raise RequestValidationError([{"loc": ["body"], "msg": "Field required", "type": "missing"}])
        raw = b"{}"
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = _error_list(exc)
        for error in errors:
            error["loc"] = ["body", *error["loc"]]
        raise RequestValidationError(errors) from exc


def _error_list(exc: ValidationError) -> list[dict[str, Any]]:
    """Return the validation errors as JSON data.

    A body that is not valid UTF-8 cannot be echoed back as `input`, so then every
    error leaves its input out.
    """
    try:
        errors: list[dict[str, Any]] = json.loads(exc.json(include_url=False, include_context=False))
    except ValueError:
        return [
            {"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]}
            for error in exc.errors(include_url=False, include_context=False, include_input=False)
        ]
    return errors


def path_uuid(request: Request, name: str, what: str, listing: str) -> str:
    """Return the path parameter `name` as a canonical UUID string.

    An id that is not a UUID cannot name anything, so it gets the same 404 as an
    unknown one. `listing` names the route that lists valid ids.
    """
    value = str(request.path_params[name])
    try:
        return str(UUID(value))
    except ValueError:
        raise http_error(404, f"{what} {value!r} not found: it is not a UUID; {listing}") from None


def query_uuid(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    try:
        return str(UUID(value))
    except ValueError:
        raise RequestValidationError(
            [
                {
                    "loc": ["query", name],
                    "msg": "Input should be a valid UUID",
                    "type": "uuid_parsing",
                    "input": value,
                }
            ]
        ) from None


def query_bool(request: Request, name: str, default: bool = False) -> bool:
    value = request.query_params.get(name)
    if value is None:
        return default
    if value.lower() in ("true", "1", "yes", "on"):
        return True
    if value.lower() in ("false", "0", "no", "off"):
        return False
    raise RequestValidationError(
        [
            {
                "loc": ["query", name],
                "msg": "Input should be a valid boolean",
                "type": "bool_parsing",
                "input": value,
            }
        ]
    )


def query_int(request: Request, name: str, *, default: int, minimum: int, maximum: int) -> int:
    """Return the integer query parameter `name`, or raise RequestValidationError when it is out of range."""
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or not minimum <= number <= maximum:
        raise RequestValidationError(
            [
                {
                    "loc": ["query", name],
                    "msg": f"Input should be an integer from {minimum} to {maximum}",
                    "type": _int_error_type(number, minimum),
                    "input": value,
                }
            ]
        )
    return number


def _int_error_type(number: int | None, minimum: int) -> str:
    if number is None:
        return "int_parsing"
    return "greater_than_equal" if number < minimum else "less_than_equal"


class InternalErrorMiddleware:
    """Turn an unhandled exception into a 500 JSON response instead of re-raising it.

    Starlette's own error middleware re-raises after its 500 page, and through
    `httpx.ASGITransport` that exception would reach the caller of the client as a
    raw Python error. The error is logged here with its traceback.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response_started = False

        async def send_and_track(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, send_and_track)
        except Exception:
            logger.exception("Unhandled error in %s %s", scope["method"], scope["path"])
            if response_started:
                raise
            detail = "internal error in the local platform; its log has the traceback"
            await JSONResponse({"detail": detail}, status_code=500)(scope, receive, send)
