"""Third-party MCP clients against the real server: MCP Inspector's CLI and the TypeScript SDK.

The npm packages come from .ci/node (`npm ci --prefix .ci/node`); each test skips
with the reason when node or that folder is missing. The Python SDK's client is
tested over stdio in tests/test_stdio.py and over HTTP in tests/transport.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server_process import (
    TEST_TOKEN,
    HTTPServer,
    http_server,
    listed_tool_names,
    node_module,
    node_tool,
    server_env,
    stdio_command,
)

TS_CLIENT = Path(__file__).with_name("ts_client.mjs")
CLIENT_TIMEOUT = 120


@pytest.fixture(scope="module")
def expected_tools() -> set[str]:
    import anyio

    return anyio.run(listed_tool_names)


@pytest.fixture(scope="module", params=["stateful", "stateless"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HTTPServer]:
    args = ["--stateless"] if request.param == "stateless" else []
    with http_server(tmp_path_factory.mktemp(f"clients-{request.param}"), args) as running:
        yield running


def run_json(command: list[str], env: dict[str, str]) -> Any:
    """Run a client command, check that it succeeded, and parse the JSON it printed."""
    completed = subprocess.run(command, capture_output=True, text=True, timeout=CLIENT_TIMEOUT, env=env)
    assert completed.returncode == 0, f"{command[:3]} exited with {completed.returncode}:\n{completed.stderr}"
    return json.loads(completed.stdout)


def inspector_server_env(state_dir: Path) -> list[str]:
    """Return `-e KEY=VALUE` options: the Inspector gives a stdio server only the variables passed this way."""
    options: list[str] = []
    for key in ("KAMIWAZA_MCP_STATE_DIR", "KAMIWAZA_MCP_MODELS_DIR", "HF_HUB_OFFLINE"):
        options.extend(["-e", f"{key}={server_env(state_dir)[key]}"])
    return options


def test_inspector_lists_tools_over_stdio(tmp_path: Path, expected_tools: set[str]) -> None:
    # NOTE: Inspector 2.12.0 declares Node.js >= 22.19; its CLI mode passes these tests on Node.js 20.
    inspector = node_tool("mcp-inspector")
    # --strict makes the Inspector exit non-zero when a tool schema has an error-severity portability problem.
    command = [
        str(inspector),
        "--cli",
        "--method",
        "tools/list",
        "--strict",
        *inspector_server_env(tmp_path),
        *stdio_command(),
    ]

    listing = run_json(command, server_env(tmp_path))

    names = [tool["name"] for tool in listing["tools"]]
    assert sorted(names) == sorted(expected_tools)
    for tool in listing["tools"]:
        assert tool["inputSchema"]["type"] == "object", tool["name"]
        assert "outputSchema" in tool, tool["name"]


def test_inspector_calls_get_status_over_stdio(tmp_path: Path) -> None:
    inspector = node_tool("mcp-inspector")
    command = [
        str(inspector),
        "--cli",
        "--method",
        "tools/call",
        "--tool-name",
        "get_status",
        *inspector_server_env(tmp_path),
        *stdio_command(),
    ]

    result = run_json(command, server_env(tmp_path))

    assert result["isError"] is False
    assert result["structuredContent"]["status"] == "not running"
    assert result["structuredContent"]["running"] is False


def test_inspector_lists_tools_over_http(
    server: HTTPServer, expected_tools: set[str], tmp_path: Path
) -> None:
    inspector = node_tool("mcp-inspector")
    command = [
        str(inspector),
        "--cli",
        "--method",
        "tools/list",
        "--transport",
        "http",
        "--server-url",
        server.url,
        "--header",
        f"Authorization: Bearer {TEST_TOKEN}",
    ]

    listing = run_json(command, server_env(tmp_path))

    assert {tool["name"] for tool in listing["tools"]} == expected_tools


def test_typescript_sdk_over_stdio(tmp_path: Path, expected_tools: set[str]) -> None:
    node_module("@modelcontextprotocol/sdk")

    output = run_json(["node", str(TS_CLIENT), "stdio", *stdio_command()], server_env(tmp_path))

    assert output["server"]["name"] == "kamiwaza"
    assert set(output["tools"]) == expected_tools
    assert output["result"]["isError"] is False
    assert output["result"]["structuredContent"]["status"] == "not running"


def test_typescript_sdk_over_http(server: HTTPServer, expected_tools: set[str], tmp_path: Path) -> None:
    node_module("@modelcontextprotocol/sdk")
    env = server_env(tmp_path, MCP_BEARER_TOKEN=TEST_TOKEN, MCP_TOOL="list_deployments")

    output = run_json(["node", str(TS_CLIENT), "http", server.url], env)

    assert output["server"]["name"] == "kamiwaza"
    assert set(output["tools"]) == expected_tools
    assert output["result"]["isError"] is False
    assert output["result"]["structuredContent"]["deployments"] == []
    if "--stateless" in server.process.args:  # type: ignore[operator]
        assert output["sessionId"] is None
    else:
        assert output["sessionId"]


def test_typescript_sdk_without_token_fails(server: HTTPServer, tmp_path: Path) -> None:
    node_module("@modelcontextprotocol/sdk")

    completed = subprocess.run(
        ["node", str(TS_CLIENT), "http", server.url],
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT,
        env=server_env(tmp_path),
    )

    assert completed.returncode != 0
    assert "401" in completed.stderr
    assert completed.stdout == ""
