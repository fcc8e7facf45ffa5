"""Fixtures of the MCP tests, loaded by `pytest_plugins = ["mcp_fixtures"]` in the modules that use them.

The file is not named conftest.py because tests/conftest.py is imported by
that module name elsewhere in the suite.

One local platform is served on 127.0.0.1 for the whole session, and the
servers under test reach it as a remote platform, so MCP clients of both
connection modes share one 2-replica deployment. Tests that change a
deployment create their own.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import pytest_asyncio
import uvicorn
from mcp import Client
from mcp_support import DEPLOY_TIMEOUT, MODES, TINY_MODEL, Connection, FakeClock, Held, text_of

from kamiwaza_mcp.client import KamiwazaClient
from kamiwaza_mcp.config import ServerSettings
from kamiwaza_mcp.local import LocalPlatform, LocalPlatformSettings
from kamiwaza_mcp.server import build_server


@asynccontextmanager
async def serve_platform(settings: LocalPlatformSettings) -> AsyncIterator[str]:
    """Serve a local platform on a free 127.0.0.1 port and yield its API base URL."""
    async with LocalPlatform(settings) as platform:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        config = uvicorn.Config(platform.app, lifespan="off", ws="none", log_config=None, access_log=False)
        server = uvicorn.Server(config)
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(server.serve, [listener])
            # uvicorn reports readiness only through this flag.
            with anyio.fail_after(30):
                while not server.started:  # noqa: ASYNC110
                    await anyio.sleep(0.02)
            yield f"http://127.0.0.1:{port}/api"
            server.should_exit = True


@pytest.fixture(scope="session")
def models_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding the session's tiny model, linked under its own name."""
    folder = tmp_path_factory.mktemp("mcp-models")
    (folder / TINY_MODEL).symlink_to(tiny_model_dir, target_is_directory=True)
    return folder


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def platform_url(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    settings = LocalPlatformSettings(state_dir=tmp_path_factory.mktemp("mcp-platform"), models_dir=models_dir)
    held = Held(serve_platform(settings))
    url = await held.start()
    yield url
    await held.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def rest(platform_url: str) -> AsyncIterator[KamiwazaClient]:
    """A Kamiwaza client of the shared platform, for the values the tools must report."""
    client = KamiwazaClient(platform_url)
    yield client
    await client.aclose()


@pytest_asyncio.fixture(scope="session", loop_scope="session", params=MODES)
async def conn(request: pytest.FixtureRequest, platform_url: str) -> AsyncIterator[Connection]:
    """An MCP client, in each connection mode, of a server that uses the shared platform."""
    clock = FakeClock()
    server = build_server(ServerSettings(base_url=platform_url), clock=clock)
    held = Held(Client(server, mode=request.param))
    client = await held.start()
    yield Connection(client=client, mode=request.param, clock=clock)
    await held.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def shared_deployment(platform_url: str) -> AsyncIterator[dict[str, Any]]:
    """The session's 2-replica deployment of the tiny model, as deploy_model returned it."""
    held = Held(Client(build_server(ServerSettings(base_url=platform_url)), mode="legacy"))
    client = await held.start()
    try:
        with anyio.fail_after(DEPLOY_TIMEOUT + 30):
            result = await client.call_tool(
                "deploy_model", {"model": TINY_MODEL, "replicas": 2, "wait_timeout_seconds": DEPLOY_TIMEOUT}
            )
        assert result.is_error is False, text_of(result)
        assert result.structured_content is not None
        yield result.structured_content
    finally:
        await held.close()
