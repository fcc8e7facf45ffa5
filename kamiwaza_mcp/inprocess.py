"""The in-process HTTP transport to the embedded local platform."""

from __future__ import annotations

import anyio
import httpx
from starlette.types import ASGIApp

__all__ = ["DeadlineASGITransport"]


class DeadlineASGITransport(httpx.AsyncBaseTransport):
    """`httpx.ASGITransport` that bounds each request by the request's read timeout.

    ASGITransport applies no timeouts, so without this a route that hangs would
    hold its tool call forever. The app runs in-process, so the whole request,
    body included, must finish within the read timeout. Past it, the app call is
    cancelled and httpx.ReadTimeout is raised, as from a network transport.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._inner = httpx.ASGITransport(app=app)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout") or {}
        seconds = timeouts.get("read")
        if seconds is None:
            return await self._inner.handle_async_request(request)

        with anyio.move_on_after(seconds) as scope:
            return await self._inner.handle_async_request(request)
        if scope.cancelled_caught:
            raise httpx.ReadTimeout(f"no response within {seconds:g} s", request=request)
        raise AssertionError("unreachable: the request returns, raises or is cancelled")

    async def aclose(self) -> None:
        await self._inner.aclose()
