"""`kamiwaza-mcp --transport http` as a real process on 127.0.0.1: token, Host and Origin checks, load."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from server_process import TEST_TOKEN, HTTPServer, http_server, server_env, stdio_command

MODES = ("legacy", "auto")
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "http-test", "version": "1"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
AUTHORIZED = {**MCP_HEADERS, "Authorization": f"Bearer {TEST_TOKEN}"}
CONCURRENT_SESSIONS = 200
# The test took about 9 s on a 2-core machine; the bound leaves room for a loaded CI machine.
CONCURRENT_SESSIONS_TIMEOUT = 90


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HTTPServer]:
    with http_server(tmp_path_factory.mktemp("http-server")) as running:
        yield running


@pytest.fixture(scope="module")
def stateless_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HTTPServer]:
    with http_server(tmp_path_factory.mktemp("http-stateless"), ["--stateless"]) as running:
        yield running


def authorized_client(url: str, mode: str, token: str = TEST_TOKEN) -> tuple[httpx2.AsyncClient, Client]:
    """Return an HTTP client that sends the bearer token and an MCP client that uses it."""
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"})
    return http, Client(streamable_http_client(url, http_client=http), mode=mode)


async def call_status(url: str, mode: str, token: str = TEST_TOKEN) -> dict[str, Any]:
    http, client = authorized_client(url, mode, token)
    async with http, client:
        result = await client.call_tool("get_status", {})
    assert result.is_error is False, result.content
    content: dict[str, Any] | None = result.structured_content
    assert content is not None
    return content


@pytest.mark.parametrize("mode", MODES)
async def test_call_with_token(server: HTTPServer, mode: str) -> None:
    with anyio.fail_after(60):
        status = await call_status(server.url, mode)

    assert status["status"] == "not running"
    assert status["running"] is False


@pytest.mark.parametrize("mode", MODES)
async def test_stateless_call_with_token(stateless_server: HTTPServer, mode: str) -> None:
    with anyio.fail_after(60):
        status = await call_status(stateless_server.url, mode)

    assert status["status"] == "not running"


def test_stateless_server_issues_no_session(stateless_server: HTTPServer, server: HTTPServer) -> None:
    stateless = httpx.post(stateless_server.url, json=INITIALIZE, headers=AUTHORIZED, timeout=30)
    stateful = httpx.post(server.url, json=INITIALIZE, headers=AUTHORIZED, timeout=30)

    assert stateless.status_code == 200
    assert "mcp-session-id" not in stateless.headers
    assert stateful.status_code == 200
    assert stateful.headers.get("mcp-session-id")


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token-0123456789abcdef", f"Basic {TEST_TOKEN}", f"Bearer {TEST_TOKEN}x", "Bearer"],
)
def test_request_without_valid_token_gets_401(server: HTTPServer, authorization: str | None) -> None:
    headers = dict(MCP_HEADERS)
    if authorization is not None:
        headers["Authorization"] = authorization

    response = httpx.post(server.url, json=INITIALIZE, headers=headers, timeout=30)

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer ")
    assert response.json()["error"] == "invalid_token"
    assert "mcp-session-id" not in response.headers


def test_get_and_delete_without_token_get_401(server: HTTPServer) -> None:
    for method in ("GET", "DELETE"):
        response = httpx.request(method, server.url, headers={"Accept": "text/event-stream"}, timeout=30)
        assert response.status_code == 401, method


def test_python_client_without_token_fails(server: HTTPServer) -> None:
    async def connect() -> None:
        async with Client(server.url, mode="legacy"):
            pass

    with pytest.raises(BaseExceptionGroup) as caught:
        anyio.run(connect)

    # The SDK reports any non-2xx response as the same MCPError, so the log shows it was a 401.
    assert caught.group_contains(MCPError, match="error response")
    assert '"POST /mcp HTTP/1.1" 401' in server.log()


@pytest.mark.parametrize("origin", ["http://attacker.invalid", "https://127.0.0.1.attacker.invalid", "null"])
def test_foreign_origin_gets_403(server: HTTPServer, origin: str) -> None:
    response = httpx.post(server.url, json=INITIALIZE, headers={**AUTHORIZED, "Origin": origin}, timeout=30)

    assert response.status_code == 403


@pytest.mark.parametrize("origin", ["http://127.0.0.1:{port}", "http://localhost:{port}"])
def test_loopback_origin_is_accepted(server: HTTPServer, origin: str) -> None:
    headers = {**AUTHORIZED, "Origin": origin.format(port=server.port)}

    response = httpx.post(server.url, json=INITIALIZE, headers=headers, timeout=30)

    assert response.status_code == 200


@pytest.mark.parametrize("host", ["attacker.invalid", "attacker.invalid:{port}", "192.0.2.7:{port}"])
def test_foreign_host_gets_421(server: HTTPServer, host: str) -> None:
    headers = {**AUTHORIZED, "Host": host.format(port=server.port)}

    response = httpx.post(server.url, json=INITIALIZE, headers=headers, timeout=30)

    assert response.status_code == 421


def test_oversized_body_gets_413(server: HTTPServer) -> None:
    padding = "x" * (1024 * 1024)
    body = {**INITIALIZE, "params": {**INITIALIZE["params"], "padding": padding}}  # type: ignore[dict-item]

    response = httpx.post(server.url, json=body, headers=AUTHORIZED, timeout=30)

    assert response.status_code == 413


def test_body_limit_follows_flag(tmp_path: Path) -> None:
    with http_server(tmp_path, ["--max-request-bytes", "100"]) as small:
        accepted = httpx.post(small.url, content=b"{}", headers=AUTHORIZED, timeout=30)
        rejected = httpx.post(small.url, json=INITIALIZE, headers=AUTHORIZED, timeout=30)

    assert accepted.status_code != 413
    assert rejected.status_code == 413


def test_log_holds_no_token(server: HTTPServer) -> None:
    httpx.post(server.url, json=INITIALIZE, headers=AUTHORIZED, timeout=30)
    httpx.post(
        server.url, json=INITIALIZE, headers={"Authorization": "Bearer guessed-token-0000000000"}, timeout=30
    )

    log = server.log()
    assert TEST_TOKEN not in log
    assert "guessed-token" not in log
    assert "without a valid bearer token" in log


async def test_generated_token_printed_once_and_required(tmp_path: Path) -> None:
    with http_server(tmp_path, ["--generate-token"], token=None) as running:
        printed = re.findall(r"Bearer token for this server \(shown only now\): (\S+)", running.log())
        assert len(printed) == 1
        token = printed[0]
        assert len(token) >= 32
        with anyio.fail_after(60):
            status = await call_status(running.url, "legacy", token)
        async with httpx.AsyncClient(timeout=30) as http:
            unauthorized = await http.post(running.url, json=INITIALIZE, headers=MCP_HEADERS)

    assert status["status"] == "not running"
    assert unauthorized.status_code == 401
    assert running.log().count(token) == 1


def test_loopback_without_token_needs_none(tmp_path: Path) -> None:
    with http_server(tmp_path, token=None) as running:
        response = httpx.post(running.url, json=INITIALIZE, headers=MCP_HEADERS, timeout=30)

    assert response.status_code == 200
    assert "no token, loopback only" in running.log()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "example.invalid"])
def test_non_loopback_bind_without_token_is_refused(tmp_path: Path, host: str) -> None:
    # The server rejects these options before it resolves or binds anything.
    completed = subprocess.run(
        [*stdio_command(), "--transport", "http", "--host", host, "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env=server_env(tmp_path),
    )

    assert completed.returncode == 2
    assert "needs a bearer token" in completed.stderr
    assert "Serving MCP" not in completed.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--transport", "http", "--token-file", "{tmp}/missing.txt"], "cannot read --token-file"),
        (["--transport", "http", "--port", "70000"], "invalid port 70000"),
        (["--transport", "http", "--max-request-bytes", "0"], "invalid --max-request-bytes 0"),
        (["--transport", "http", "--allowed-origin", "chat.example.com"], "invalid --allowed-origin"),
    ],
)
def test_invalid_http_options_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    command = [*stdio_command(), *(arg.format(tmp=tmp_path) for arg in args)]

    completed = subprocess.run(command, capture_output=True, text=True, timeout=60, env=server_env(tmp_path))

    assert completed.returncode == 2
    assert message in completed.stderr


def test_short_token_is_refused(tmp_path: Path) -> None:
    completed = subprocess.run(
        [*stdio_command(), "--transport", "http", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env=server_env(tmp_path, KAMIWAZA_MCP_HTTP_TOKEN="tiny-secret"),
    )

    assert completed.returncode == 2
    assert "at least 16" in completed.stderr
    assert "tiny-secret" not in completed.stderr


def test_http_flags_rejected_with_stdio(tmp_path: Path) -> None:
    completed = subprocess.run(
        [*stdio_command(), "--port", "8765", "--stateless"],
        capture_output=True,
        text=True,
        timeout=60,
        env=server_env(tmp_path),
    )

    assert completed.returncode == 2
    assert "--port, --stateless: valid only with --transport http" in completed.stderr


async def test_concurrent_sessions_all_succeed(tmp_path: Path) -> None:
    """Open 200 sessions at once, hold them all open, then call a read-only tool in each."""
    with http_server(tmp_path) as running:
        all_open = anyio.Event()
        opened = 0
        results: dict[int, dict[str, Any]] = {}
        errors: list[str] = []

        async def session(index: int) -> None:
            nonlocal opened
            tool = "get_status" if index % 2 == 0 else "list_deployments"
            try:
                http, client = authorized_client(running.url, "legacy")
                async with http, client:
                    opened += 1
                    if opened == CONCURRENT_SESSIONS:
                        all_open.set()
                    await all_open.wait()
                    result = await client.call_tool(tool, {})
                if result.is_error or result.structured_content is None:
                    errors.append(f"session {index}: {tool} failed: {result.content}")
                else:
                    results[index] = result.structured_content
            except Exception as exc:
                errors.append(f"session {index}: {exc!r}")
                all_open.set()

        started = time.monotonic()
        with anyio.fail_after(CONCURRENT_SESSIONS_TIMEOUT):
            async with anyio.create_task_group() as group:
                for index in range(CONCURRENT_SESSIONS):
                    group.start_soon(session, index)
        elapsed = time.monotonic() - started
        log = running.log()

    assert errors == []
    assert "Traceback" not in log
    assert len(results) == CONCURRENT_SESSIONS
    assert opened == CONCURRENT_SESSIONS
    for index, content in results.items():
        if index % 2 == 0:
            assert content["status"] == "not running", index
        else:
            assert content["deployments"] == [], index
    print(f"{CONCURRENT_SESSIONS} sessions in {elapsed:.1f} s")
