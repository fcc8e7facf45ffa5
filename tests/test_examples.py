"""The host configurations and the chat-ops HTTP script in examples/, run against the real server."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from server_process import REPO_ROOT, TEST_TOKEN, http_server, server_env

from kamiwaza_mcp.cli import _parser
from kamiwaza_mcp.config import ServerSettings

EXAMPLES = REPO_ROOT / "examples"
HOST_CONFIGS = [EXAMPLES / "claude_desktop_config.json", EXAMPLES / "cursor" / "mcp.json"]
# Variables a host configuration may set for the server.
SERVER_VARIABLES = {"KAMIWAZA_BASE_URL", "KAMIWAZA_API_KEY", "KAMIWAZA_VERIFY_SSL", "KAMIWAZA_MCP_MODELS_DIR"}
SAMPLE_VALUES = {"KAMIWAZA_API_KEY": "pat-0123456789", "KAMIWAZA_MCP_HTTP_TOKEN": TEST_TOKEN}
_CURSOR_VARIABLE = re.compile(r"\$\{(env:[A-Z_]+|userHome)\}")


def expand(value: str, home: Path) -> str:
    """Expand Cursor's `${env:NAME}` and `${userHome}` the way Cursor does, with sample values."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        return str(home) if name == "userHome" else SAMPLE_VALUES[name.removeprefix("env:")]

    return _CURSOR_VARIABLE.sub(replace, value)


def servers_of(path: Path) -> dict[str, dict[str, Any]]:
    servers: dict[str, dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))["mcpServers"]
    return servers


@pytest.mark.parametrize("path", HOST_CONFIGS, ids=lambda path: path.name)
def test_stdio_entries_configure_valid_settings(path: Path, tmp_path: Path) -> None:
    entries = {name: entry for name, entry in servers_of(path).items() if "command" in entry}

    assert entries, f"{path} has no stdio entry"
    for name, entry in entries.items():
        assert entry["command"] == "kamiwaza-mcp", name
        assert set(entry["env"]) <= SERVER_VARIABLES, name
        env = {key: expand(value, tmp_path) for key, value in entry["env"].items()}
        settings = ServerSettings.from_env(env)
        assert settings.is_local == ("KAMIWAZA_BASE_URL" not in env), name


async def test_cursor_local_entry_serves(tmp_path: Path) -> None:
    entry = servers_of(EXAMPLES / "cursor" / "mcp.json")["kamiwaza-local"]
    env = {**server_env(tmp_path), **{key: expand(value, tmp_path) for key, value in entry["env"].items()}}
    command = shutil.which(entry["command"], path=str(Path(sys.executable).parent))
    assert command is not None, "the kamiwaza-mcp console script is not installed next to this interpreter"

    with anyio.fail_after(60):
        async with Client(
            StdioServerParameters(command=command, args=entry.get("args", []), env=env)
        ) as client:
            status = await client.call_tool("get_status", {})

    assert status.is_error is False
    assert env["KAMIWAZA_MCP_MODELS_DIR"] == str(tmp_path / "models")


async def test_cursor_http_entry_connects(tmp_path: Path) -> None:
    entry = servers_of(EXAMPLES / "cursor" / "mcp.json")["kamiwaza-http"]
    headers = {key: expand(value, tmp_path) for key, value in entry["headers"].items()}
    assert entry["url"] == "http://127.0.0.1:8765/mcp"

    with http_server(tmp_path) as running:
        url = entry["url"].replace(":8765/", f":{running.port}/")
        with anyio.fail_after(60):
            async with (
                httpx2.AsyncClient(headers=headers) as http,
                Client(streamable_http_client(url, http_client=http)) as client,
            ):
                status = await client.call_tool("get_status", {})

    assert status.is_error is False


def claude_code_commands() -> list[list[str]]:
    text = (EXAMPLES / "claude_code.md").read_text(encoding="utf-8")
    return [shlex.split(line) for line in text.splitlines() if line.startswith("claude mcp add ")]


def test_claude_code_stdio_commands() -> None:
    commands = [command for command in claude_code_commands() if "--" in command]

    assert len(commands) == 3
    for command in commands:
        separator = command.index("--")
        assert command[separator + 1] == "kamiwaza-mcp", command
        variables = [
            command[index + 1].split("=", 1)[0] for index, word in enumerate(command) if word == "--env"
        ]
        assert set(variables) <= SERVER_VARIABLES, command
        # The server's own parser accepts the arguments after the command name.
        _parser().parse_args(command[separator + 2 :])


def test_claude_code_http_command() -> None:
    commands = [command for command in claude_code_commands() if "--transport" in command]

    assert len(commands) == 1
    command = commands[0]
    assert command[command.index("--transport") + 1] == "http"
    assert "http://127.0.0.1:8765/mcp" in command
    assert command[command.index("--header") + 1] == "Authorization: Bearer $KAMIWAZA_MCP_HTTP_TOKEN"


def test_chat_ops_http_starts_its_own_server(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / "chat_ops_http.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env=server_env(tmp_path),
    )

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "== get_status" in completed.stdout
    assert "== list_deployments" in completed.stdout
    assert "Checks finished: every read-only tool answered over HTTP." in completed.stdout


def test_chat_ops_http_connects_with_token(tmp_path: Path) -> None:
    with http_server(tmp_path / "server") as running:
        completed = subprocess.run(
            [sys.executable, str(EXAMPLES / "chat_ops_http.py"), "--url", running.url],
            capture_output=True,
            text=True,
            timeout=120,
            env={**server_env(tmp_path), "KAMIWAZA_MCP_HTTP_TOKEN": TEST_TOKEN},
        )
        without_token = subprocess.run(
            [sys.executable, str(EXAMPLES / "chat_ops_http.py"), "--url", running.url],
            capture_output=True,
            text=True,
            timeout=120,
            env=server_env(tmp_path),
        )

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "Checks finished" in completed.stdout
    assert without_token.returncode != 0
    assert "set KAMIWAZA_MCP_HTTP_TOKEN" in without_token.stderr


def test_examples_name_no_real_secret() -> None:
    for path in [*HOST_CONFIGS, EXAMPLES / "claude_code.md"]:
        text = path.read_text(encoding="utf-8")
        assert "Bearer ey" not in text, path
        assert os.environ.get("KAMIWAZA_API_KEY", "\0") not in text, path
