"""Helpers of the MCP tests, shared by conftest.py and the test modules."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio
import uvicorn
from mcp import Client
from mcp.client.session import ClientRequestContext
from mcp_types import CallToolResult, ElicitRequestFormParams, ElicitRequestParams, ElicitResult

from kamiwaza_mcp.client import KamiwazaClient
from kamiwaza_mcp.config import ServerSettings
from kamiwaza_mcp.local import LocalPlatform, LocalPlatformSettings
from kamiwaza_mcp.policy import Policy
from kamiwaza_mcp.server import build_server

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


class FormResponses:
    """An elicitation callback that responds to every form the same way and keeps the forms it received.

    `action` is accept, decline or cancel; an accepted form carries `typed`.
    With `respond=False` the callback never returns, like a person who walked away.
    """

    def __init__(self, action: str = "accept", typed: str | None = None, *, respond: bool = True) -> None:
        self.action = action
        self.typed = typed
        self.respond = respond
        self.forms: list[ElicitRequestFormParams] = []

    async def __call__(self, context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
        assert isinstance(params, ElicitRequestFormParams), params
        self.forms.append(params)
        if not self.respond:
            await anyio.sleep_forever()
        content = {"typed": self.typed} if self.action == "accept" else None
        return ElicitResult(action=self.action, content=content)  # type: ignore[arg-type]


class ProgressLog:
    """A progress callback that keeps every notification as (progress, total, message)."""

    def __init__(self) -> None:
        self.notes: list[tuple[float, float | None, str | None]] = []

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.notes.append((progress, total, message))

    @property
    def messages(self) -> list[str | None]:
        return [message for _progress, _total, message in self.notes]


@asynccontextmanager
async def connect(
    platform_url: str,
    mode: str,
    *,
    policy: Policy | None = None,
    forms: FormResponses | None = None,
    clock: FakeClock | None = None,
) -> AsyncIterator[Connection]:
    """Connect an MCP client, responding to forms with `forms` when given, to a server of the shared platform."""
    clock = clock or FakeClock()
    settings = ServerSettings(base_url=platform_url, policy=policy or Policy(max_wait_seconds=DEPLOY_TIMEOUT))
    server = build_server(settings, clock=clock)
    async with Client(server, mode=mode, elicitation_callback=forms) as client:
        yield Connection(client=client, mode=mode, clock=clock)


@asynccontextmanager
async def serve_platform(settings: LocalPlatformSettings) -> AsyncIterator[str]:
    """Serve a local platform on a free 127.0.0.1 port and yield its API base URL."""
    async with LocalPlatform(settings) as platform:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
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
