"""Helpers of the reliability suite: hosted platforms, seeded deployments, in-memory connections.

The suite drives the real server through the in-memory MCP `Client` from
synchronous hypothesis tests, so every async piece (local platforms, uvicorn,
clients) runs in one blocking portal: an event loop in a thread of its own.

The platforms are served on 127.0.0.1 behind `BearerCheck`, which responds with 401
unless a request carries `KNOWN_API_KEY`, so a server in remote mode works only
if it really sends its configured key. The local platform itself takes no
credentials.

`KAMIWAZA_MCP_RELIABILITY=full` selects the full run (more than 2,000 fuzzed
calls); unset or `ci`, the bounded subset that the default `python -m pytest` runs.
"""

from __future__ import annotations

import functools
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn
from anyio.from_thread import BlockingPortal
from mcp import Client
from mcp_types import CallToolResult
from starlette.types import ASGIApp, Receive, Scope, Send

from kamiwaza_mcp.config import ServerSettings
from kamiwaza_mcp.local import LocalPlatform, LocalPlatformSettings
from kamiwaza_mcp.local.store import DeploymentRecord, InstanceRecord, Store, utc_now
from kamiwaza_mcp.server import build_server

PROFILE_VARIABLE = "KAMIWAZA_MCP_RELIABILITY"


@dataclass(frozen=True)
class Profile:
    """How much the suite fuzzes: examples per tool and connection, guard examples, fixed or fresh inputs."""

    fuzz_examples_per_tool: int
    guard_examples: int
    # True draws the same inputs every run, so a CI failure reproduces. The full run draws
    # fresh ones each time, and hypothesis prints how to reproduce a failure.
    derandomize: bool


# The full profile makes 70 fuzzed calls per tool on each of 2 connections: 2,380 for 17 tools.
PROFILES = {
    "ci": Profile(fuzz_examples_per_tool=15, guard_examples=40, derandomize=True),
    "full": Profile(fuzz_examples_per_tool=70, guard_examples=300, derandomize=False),
}
# Seconds one tool call may take before the suite reports a hang; calls that fail fast take milliseconds.
CALL_TIMEOUT = 30.0
# The key every remote-mode server is configured with, fresh each session so that no earlier
# run's output matches. Its random part is what the secret scan looks for.
KNOWN_API_KEY_RANDOM = secrets.token_hex(24)
KNOWN_API_KEY = f"kmz_{KNOWN_API_KEY_RANDOM}"
SEEDED_MODEL_NAME = "fuzz-llama"


def profile() -> Profile:
    name = os.environ.get(PROFILE_VARIABLE, "ci").strip().lower() or "ci"
    if name not in PROFILES:
        raise pytest.UsageError(f"invalid {PROFILE_VARIABLE}={name!r}: expected one of {', '.join(PROFILES)}")
    return PROFILES[name]


class BearerCheck:
    """An ASGI app that passes only HTTP requests carrying `Authorization: Bearer <token>` to `app`.

    Every request's method and path is appended to `requests`, so a test can
    tell which platform routes were called.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()
        self.requests: list[tuple[str, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.requests.append((scope["method"], scope["path"]))
        headers = dict(scope["headers"])
        if headers.get(b"authorization") == self.expected:
            await self.app(scope, receive, send)
            return
        body = b'{"detail":"missing or invalid bearer token"}'
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


@dataclass(frozen=True)
class Seeded:
    """Deployments written into a platform's store, none with a worker process."""

    model_id: str
    unloaded: str
    unloaded_instance: str
    failed: str
    stopped: str

    @property
    def deployment_ids(self) -> tuple[str, ...]:
        return (self.unloaded, self.failed, self.stopped)

    @property
    def statuses(self) -> dict[str, str]:
        return {self.unloaded: "UNLOADED", self.failed: "FAILED", self.stopped: "STOPPED"}


SEEDED = Seeded(
    model_id="6f0c3d2e-2b7a-4f1e-9c1d-5a4b3c2d1e0f",
    unloaded="2c9a1e7b-0d4f-4b8e-a6c5-3f2e1d0c9b8a",
    unloaded_instance="4b3a2918-7c6d-4e5f-8a9b-0c1d2e3f4a5b",
    failed="8e7d6c5b-4a39-4281-9f0e-d1c2b3a49586",
    stopped="d3c2b1a0-9f8e-4d7c-8b6a-5f4e3d2c1b0a",
)


def deployment_record(
    deployment_id: str, status: str, error: tuple[str, str] | None = None
) -> DeploymentRecord:
    now = utc_now()
    return DeploymentRecord(
        id=deployment_id,
        model_id=SEEDED.model_id,
        model_name=SEEDED_MODEL_NAME,
        config_id="9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a",
        config_name="default",
        engine="transformers",
        served_model_name=SEEDED_MODEL_NAME,
        context_length=2048,
        request={"m_id": SEEDED.model_id, "starting_copies": 1, "max_concurrent_requests": 4},
        status=status,
        last_error_code=error[0] if error else None,
        last_error_message=error[1] if error else None,
        last_error_at=now if error else None,
        requested_at=now,
        created_at=now,
        deployed_at=None,
        updated_at=now,
    )


def seed_store(store: Store, logs_dir: Path) -> None:
    """Write the SEEDED deployments: UNLOADED with one stopped replica, FAILED and STOPPED."""
    store.insert_deployment(deployment_record(SEEDED.unloaded, "UNLOADED"))
    store.insert_deployment(
        deployment_record(
            SEEDED.failed, "FAILED", ("MODEL_LOADING_FAILURE", "the folder of fuzz-llama is gone")
        )
    )
    store.insert_deployment(deployment_record(SEEDED.stopped, "STOPPED"))
    now = utc_now()
    store.insert_instance(
        InstanceRecord(
            id=SEEDED.unloaded_instance,
            deployment_id=SEEDED.unloaded,
            replica=0,
            status="STOPPED",
            pid=None,
            host="127.0.0.1",
            port=None,
            log_file=str(logs_dir / SEEDED.unloaded / "replica-0.log"),
            created_at=now,
            deployed_at=now,
            updated_at=now,
        )
    )


@dataclass
class HostedPlatform:
    """A local platform served on 127.0.0.1 from the portal's event loop, behind a BearerCheck."""

    platform: LocalPlatform
    url: str
    guard: BearerCheck


@asynccontextmanager
async def serve_platform(settings: LocalPlatformSettings, token: str) -> AsyncIterator[HostedPlatform]:
    async with LocalPlatform(settings) as platform:
        guard = BearerCheck(platform.app, token)
        # IPPROTO_TCP makes asyncio set TCP_NODELAY on the accepted connections; without it a
        # response written in two parts waits for the client's delayed ACK.
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        config = uvicorn.Config(guard, lifespan="off", ws="none", log_config=None, access_log=False)
        server = uvicorn.Server(config)
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(server.serve, [listener])
            with anyio.fail_after(30):
                while not server.started:  # noqa: ASYNC110 - uvicorn reports readiness only through this flag
                    await anyio.sleep(0.02)
            yield HostedPlatform(platform=platform, url=f"http://127.0.0.1:{port}/api", guard=guard)
            server.should_exit = True


class ManualClock:
    """A monotonic clock for the confirmation guard that the tests move forward by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Connection:
    """An in-memory MCP client of a server under test, and what its calls returned."""

    name: str
    portal: BlockingPortal
    client: Client
    clock: ManualClock
    transcript: list[str] = field(default_factory=list)

    def call(self, tool: str, arguments: dict[str, Any]) -> CallToolResult:
        """Call `tool` and return its result; raise TimeoutError after CALL_TIMEOUT seconds."""
        result = self.portal.call(functools.partial(_call_within, self.client, tool, arguments))
        self.transcript.append(_result_text(result))
        return result


async def _call_within(client: Client, tool: str, arguments: dict[str, Any]) -> CallToolResult:
    with anyio.fail_after(CALL_TIMEOUT):
        return await client.call_tool(tool, arguments)


def _result_text(result: CallToolResult) -> str:
    texts = [getattr(block, "text", repr(block)) for block in result.content]
    return "\n".join([*texts, repr(result.structured_content)])


def text_of(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if block.type == "text")


def open_connection(
    portal: BlockingPortal,
    settings: ServerSettings,
    name: str,
    mode: str,
    stack: list[Callable[[], None]],
) -> Connection:
    """Start a server with `settings` and an in-memory client of it in the portal; `stack` gets its closer."""
    clock = ManualClock()
    server = build_server(settings, clock=clock)
    manager = portal.wrap_async_context_manager(Client(server, mode=mode))  # type: ignore[arg-type]
    client = manager.__enter__()
    stack.append(lambda: manager.__exit__(None, None, None))
    return Connection(name=name, portal=portal, client=client, clock=clock)


def secret_hits(texts: list[str], secret: str = KNOWN_API_KEY_RANDOM) -> list[str]:
    """Return an excerpt around each text that contains `secret`, or 12 characters of it in a row.

    `secret` is random hex, such as KNOWN_API_KEY's random part. A 12-character
    piece of it does not appear by chance, so any hit is a whole or cut-off copy
    of the key, such as a log line showing `key[:12]`.
    """
    pieces = {secret[start : start + 12] for start in range(len(secret) - 11)}
    hits = []
    for text in texts:
        for piece in pieces:
            index = text.find(piece)
            if index != -1:
                hits.append(text[max(0, index - 60) : index + 72])
                break
    return hits
