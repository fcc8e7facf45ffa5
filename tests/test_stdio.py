"""The server as a subprocess over stdio, the way an MCP host starts it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

EXPECTED_TOOLS = {
    "start_ray",
    "get_status",
    "estimate_model_vram",
    "deploy_model",
    "list_deployments",
    "get_deployment",
    "get_deployment_status",
    "stop_deployment",
    "list_model_instances",
    "get_model_instance",
    "get_health",
    "get_deployment_logs",
    "unload_model",
    "load_model",
    "simple_generate",
    "generate",
    "list_models",
}


def server_env(state_dir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("KAMIWAZA_")}
    env["KAMIWAZA_MCP_STATE_DIR"] = str(state_dir)
    env["KAMIWAZA_MCP_MODELS_DIR"] = str(state_dir / "models")
    env["HF_HUB_OFFLINE"] = "1"
    return env


def jsonrpc(message_id: int | None, method: str, params: dict[str, Any] | None = None) -> str:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if message_id is not None:
        message["id"] = message_id
    if params is not None:
        message["params"] = params
    return json.dumps(message) + "\n"


def test_stdout_carries_only_jsonrpc(tmp_path: Path) -> None:
    requests = "".join(
        [
            jsonrpc(
                1,
                "initialize",
                {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "stdio-test", "version": "1"},
                },
            ),
            jsonrpc(None, "notifications/initialized"),
            jsonrpc(2, "tools/list", {}),
            jsonrpc(3, "tools/call", {"name": "get_status", "arguments": {}}),
            jsonrpc(4, "tools/call", {"name": "list_deployments", "arguments": {}}),
            jsonrpc(
                5, "tools/call", {"name": "get_deployment", "arguments": {"deployment_id": "not-a-uuid"}}
            ),
        ]
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "kamiwaza_mcp", "--log-level", "DEBUG"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=server_env(tmp_path),
        text=True,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    process.stdin.write(requests)
    process.stdin.flush()

    # Read until the last response arrives.
    lines: list[str] = []
    answered: set[int] = set()
    while answered != {1, 2, 3, 4, 5}:
        line = process.stdout.readline()
        assert line, f"server closed stdout early; stderr:\n{process.stderr.read() if process.stderr else ''}"
        lines.append(line)
        message = json.loads(line)
        if "id" in message:
            answered.add(message["id"])
    # communicate() closes stdin, and the server exits at end of input.
    rest, stderr = process.communicate(timeout=60)
    lines.extend(rest.splitlines(keepends=True))

    for line in lines:
        message = json.loads(line)
        assert message["jsonrpc"] == "2.0", line
    assert process.returncode == 0, stderr
    assert "DEBUG" in stderr or "INFO" in stderr, "logs are expected on stderr"

    by_id = {json.loads(line).get("id"): json.loads(line) for line in lines}
    tool_names = {tool["name"] for tool in by_id[2]["result"]["tools"]}
    assert tool_names == EXPECTED_TOOLS
    assert by_id[3]["result"]["isError"] is False
    assert by_id[5]["result"]["isError"] is True
    assert "not-a-uuid" in by_id[5]["result"]["content"][0]["text"]


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_client_over_stdio_lists_typed_tools(tmp_path: Path, mode: str) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "kamiwaza_mcp"], env=server_env(tmp_path)
    )

    with anyio.fail_after(60):
        async with Client(params, mode=mode) as client:  # type: ignore[arg-type]
            listing = await client.list_tools()
            status = await client.call_tool("get_status", {})

    tools = {tool.name: tool for tool in listing.tools}
    assert set(tools) == EXPECTED_TOOLS
    for name, tool in tools.items():
        assert tool.input_schema.get("type") == "object", name
        assert tool.output_schema is not None, name
        assert tool.title, name
        assert tool.description, name
        annotations = tool.annotations
        assert annotations is not None, name
        hints = (
            annotations.read_only_hint,
            annotations.destructive_hint,
            annotations.idempotent_hint,
            annotations.open_world_hint,
        )
        assert None not in hints, f"{name} leaves an annotation unset: {hints}"
    assert tools["stop_deployment"].annotations.destructive_hint is True  # type: ignore[union-attr]
    assert tools["unload_model"].annotations.destructive_hint is True  # type: ignore[union-attr]
    assert tools["list_deployments"].annotations.read_only_hint is True  # type: ignore[union-attr]
    assert tools["deploy_model"].annotations.idempotent_hint is False  # type: ignore[union-attr]
    assert status.is_error is False
    assert status.structured_content is not None
    assert status.structured_content["status"] == "not running"


def test_console_script_and_module_both_start(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("kamiwaza-mcp")
    for command in ([str(script), "--version"], [sys.executable, "-m", "kamiwaza_mcp", "--version"]):
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=60, env=server_env(tmp_path)
        )
        assert completed.returncode == 0, completed.stderr
        assert "0.1.0" in completed.stdout
