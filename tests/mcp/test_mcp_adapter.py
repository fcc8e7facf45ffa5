"""The tool decorator: unexpected exceptions are logged and sanitised, and a tool must take ctx."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.tools import Tool
from mcp_support import text_of
from mcp_types import CallToolResult

from kamiwaza_mcp.app_context import AppContext
from kamiwaza_mcp.client import KamiwazaClient
from kamiwaza_mcp.guard import ConfirmationGuard
from kamiwaza_mcp.tools._common import ToolContext, tool

SECRET_DETAIL = "password=hunter2"


@tool("Crash", read_only=True)
async def crash(ctx: ToolContext) -> CallToolResult:
    """Raise an exception no tool expects."""
    raise RuntimeError(f"database said {SECRET_DETAIL}")


@asynccontextmanager
async def unused_platform(_server: MCPServer[AppContext]) -> AsyncIterator[AppContext]:
    # The crashing tool never calls the platform, so nothing listens at this address.
    async with KamiwazaClient("http://127.0.0.1:9/api") as client:
        yield AppContext(client=client, guard=ConfirmationGuard())


async def test_unexpected_exception_is_sanitised(caplog: pytest.LogCaptureFixture) -> None:
    server = MCPServer(tools=[Tool.from_function(crash.fn, name=crash.name)], lifespan=unused_platform)
    caplog.set_level(logging.INFO)

    with anyio.fail_after(30):
        async with Client(server, mode="legacy") as client:
            result = await client.call_tool("crash", {})

    assert result.is_error is True
    assert text_of(result) == (
        "InternalError: crash failed unexpectedly; the server log has the details. "
        "Retry, and report the failure if it repeats"
    )
    assert SECRET_DETAIL not in text_of(result)
    [record] = [r for r in caplog.records if r.name == "kamiwaza_mcp.tools._common"]
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "Tool crash raised an unexpected exception"
    assert record.exc_info is not None
    assert record.exc_info[0] is RuntimeError


def test_tool_without_ctx_is_rejected() -> None:
    async def no_context() -> CallToolResult:
        return CallToolResult(content=[])

    with pytest.raises(TypeError, match="tool no_context must take the context as a parameter named ctx"):
        tool("No context", read_only=True)(no_context)
