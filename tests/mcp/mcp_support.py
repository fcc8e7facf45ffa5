"""Helpers of the MCP tests, shared by conftest.py and the test modules."""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio
from mcp import Client
from mcp_types import CallToolResult

from kamiwaza_mcp.client import KamiwazaClient

T = TypeVar("T")

MODES = ("legacy", "auto")
TINY_MODEL = "tiny-llama"
# Workers of the tiny model start in about 5 s on 2 cores; the margin covers a loaded CI machine.
DEPLOY_TIMEOUT = 240


class Held(Generic[T]):
    """An async context manager entered, held and exited by a task of its own.

    pytest-asyncio runs a fixture's setup and teardown in different tasks, while
    LocalPlatform, uvicorn and the MCP Client open anyio cancel scopes that must
    close in the task that opened them.
    """

    def __init__(self, manager: AbstractAsyncContextManager[T]) -> None:
        self._manager = manager
        self._release = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> T:
        entered: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._task = asyncio.get_running_loop().create_task(self._hold(entered))
        return await entered

    async def close(self) -> None:
        self._release.set()
        if self._task is not None:
            await self._task

    async def _hold(self, entered: asyncio.Future[T]) -> None:
        try:
            async with self._manager as value:
                entered.set_result(value)
                await self._release.wait()
        except BaseException as exc:
            if entered.done():
                raise
            entered.set_exception(exc)


class FakeClock:
    """A monotonic clock the tests move forward by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Connection:
    """An MCP client connected to a server under test, with that server's guard clock."""

    client: Client
    mode: str
    clock: FakeClock

    async def call(
        self, name: str, arguments: dict[str, Any] | None = None, within: float = 60
    ) -> CallToolResult:
        with anyio.fail_after(within):
            return await self.client.call_tool(name, arguments or {})

    async def call_ok(
        self, name: str, arguments: dict[str, Any] | None = None, within: float = 60
    ) -> dict[str, Any]:
        """Call a tool that must succeed and return its structured content."""
        result = await self.call(name, arguments, within)
        assert result.is_error is False, f"{name} failed: {text_of(result)}"
        content: dict[str, Any] | None = result.structured_content
        assert content is not None, name
        return content

    async def status_of(self, deployment_id: str) -> str:
        content = await self.call_ok("get_deployment_status", {"deployment_id": deployment_id})
        status = content["status"]
        assert isinstance(status, str)
        return status


def text_of(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if block.type == "text")


async def tiny_model_id(rest: KamiwazaClient) -> str:
    """Return the id of the tiny model, the only model of the shared platform."""
    models = await rest.list_models()
    assert [model.name for model in models] == [TINY_MODEL]
    model_id = models[0].id
    assert model_id is not None
    return model_id
