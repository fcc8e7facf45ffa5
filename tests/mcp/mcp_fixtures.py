"""Fixtures of the MCP tests, loaded by `pytest_plugins = ["mcp_fixtures"]` in the modules that use them.

The file is not named conftest.py because tests/conftest.py is imported by
that module name elsewhere in the suite.

One local platform is served on 127.0.0.1 for the whole session, and the
servers under test reach it as a remote platform, so MCP clients of both
connection modes share one 2-replica deployment. Tests that change a
deployment create their own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import pytest_asyncio
from mcp import Client
from mcp_support import (
    DEPLOY_TIMEOUT,
    MODES,
    TINY_MODEL,
    Connection,
    FakeClock,
    Held,
    serve_platform,
    text_of,
)

from kamiwaza_mcp.client import KamiwazaClient
from kamiwaza_mcp.config import ServerSettings
from kamiwaza_mcp.local import LocalPlatformSettings
from kamiwaza_mcp.policy import Policy
from kamiwaza_mcp.server import build_server

# Lets deploy_model and load_model wait as long as a worker may take to start on a loaded machine.
SLOW_WAIT = Policy(max_wait_seconds=DEPLOY_TIMEOUT)


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
    server = build_server(ServerSettings(base_url=platform_url, policy=SLOW_WAIT), clock=clock)
    held = Held(Client(server, mode=request.param))
    client = await held.start()
    yield Connection(client=client, mode=request.param, clock=clock)
    await held.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def shared_deployment(platform_url: str) -> AsyncIterator[dict[str, Any]]:
    """The session's 2-replica deployment of the tiny model, as get_deployment returns it after deploy_model."""
    held = Held(Client(build_server(ServerSettings(base_url=platform_url, policy=SLOW_WAIT)), mode="legacy"))
    client = await held.start()
    try:
        with anyio.fail_after(DEPLOY_TIMEOUT + 30):
            result = await client.call_tool(
                "deploy_model", {"model": TINY_MODEL, "replicas": 2, "wait_timeout_seconds": DEPLOY_TIMEOUT}
            )
        assert result.is_error is False, text_of(result)
        assert result.structured_content is not None
        deployment_id = result.structured_content["id"]
        view = await client.call_tool("get_deployment", {"deployment_id": deployment_id})
        assert view.structured_content is not None, text_of(view)
        yield view.structured_content
    finally:
        await held.close()
