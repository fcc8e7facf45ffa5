"""DeadlineASGITransport: the read timeout bounds an in-process request."""

from __future__ import annotations

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from kamiwaza_mcp.client import KamiwazaClient, PlatformTimeoutError, Timeouts
from kamiwaza_mcp.inprocess import DeadlineASGITransport


async def slow_status(request: Request) -> JSONResponse:
    await anyio.sleep(30)
    return JSONResponse({"status": "running"})


async def models(request: Request) -> JSONResponse:
    return JSONResponse([])


APP = Starlette(routes=[Route("/api/serving/status", slow_status), Route("/api/models/", models)])


def local_client() -> KamiwazaClient:
    return KamiwazaClient(
        "http://kamiwaza.local/api",
        transport=DeadlineASGITransport(APP),
        timeouts=Timeouts(read=0.2),
        max_retries=0,
    )


async def test_hanging_route_times_out() -> None:
    async with local_client() as client:
        with anyio.fail_after(10), pytest.raises(PlatformTimeoutError) as caught:
            await client.get_status()

    assert caught.value.message == (
        "GET /api/serving/status timed out waiting for the response (read timeout 0.2 s)"
    )


async def test_fast_route_answers() -> None:
    async with local_client() as client:
        with anyio.fail_after(10):
            models = await client.list_models()

    assert models == []
