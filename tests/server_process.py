"""Helpers that start `kamiwaza-mcp` as a real process and find the npm tools the client tests run.

The server runs its embedded local platform in a temporary state folder, so
the read-only tools return results without a cluster or a model.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = REPO_ROOT / ".ci" / "node"
NODE_BIN = NODE_DIR / "node_modules" / ".bin"
# A token of the minimum length the server accepts is enough for tests.
TEST_TOKEN = "test-token-0123456789abcdef"
STARTUP_TIMEOUT = 60.0

_SERVING = re.compile(r"Serving MCP over streamable HTTP at (http://\S+)")


def server_env(state_dir: Path, **extra: str) -> dict[str, str]:
    """Return this process's environment without KAMIWAZA_* variables, with a fresh local platform."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("KAMIWAZA_")}
    env["KAMIWAZA_MCP_STATE_DIR"] = str(state_dir)
    env["KAMIWAZA_MCP_MODELS_DIR"] = str(state_dir / "models")
    env["HF_HUB_OFFLINE"] = "1"
    env.update(extra)
    return env


def stdio_command() -> list[str]:
    """The command an MCP host runs to start the server on stdio."""
    return [sys.executable, "-m", "kamiwaza_mcp"]


@dataclass
class HTTPServer:
    """A running `kamiwaza-mcp --transport http` process."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].split("/", 1)[0])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def http_server(
    state_dir: Path, args: Sequence[str] = (), *, token: str | None = TEST_TOKEN
) -> Iterator[HTTPServer]:
    """Start the HTTP server on a free 127.0.0.1 port, yield it once it serves, and stop it with SIGTERM.

    The server's stderr goes to a file in `state_dir`, so a long test cannot block on a full pipe.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "server.log"
    extra = {"KAMIWAZA_MCP_HTTP_TOKEN": token} if token is not None else {}
    command = [*stdio_command(), "--transport", "http", "--host", "127.0.0.1", "--port", "0", *args]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=server_env(state_dir, **extra)
        )
    try:
        server = HTTPServer(url=_wait_for_url(process, log_path), process=process, log_path=log_path)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
            raise AssertionError(
                f"the server ignored SIGTERM for 30 s; log:\n{log_path.read_text()}"
            ) from None
    # uvicorn re-raises a SIGTERM it handled once it has shut down, so -SIGTERM is a clean stop.
    assert process.returncode in (0, -signal.SIGTERM), (
        f"the server exited with {process.returncode}; log:\n{log_path.read_text()}"
    )


def _wait_for_url(process: subprocess.Popen[bytes], log_path: Path) -> str:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        match = _SERVING.search(log_path.read_text(errors="replace"))
        if match:
            return match.group(1)
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}; log:\n{log_path.read_text()}")
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"the server did not serve within {STARTUP_TIMEOUT} s; log:\n{log_path.read_text()}")


def node_tool(name: str) -> Path:
    """Return the path of an npm-installed command from .ci/node, or skip the test when it is missing."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed; install Node.js 20 or newer to run the npm client tests")
    path = NODE_BIN / name
    if not path.exists():
        pytest.skip(f"{path} is missing; run `npm ci --prefix .ci/node` to install the npm clients")
    return path


def node_module(name: str) -> Path:
    """Return the folder of an npm package in .ci/node, or skip the test when it is missing."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed; install Node.js 20 or newer to run the npm client tests")
    path = NODE_DIR / "node_modules" / name
    if not path.is_dir():
        pytest.skip(f"{path} is missing; run `npm ci --prefix .ci/node` to install the npm clients")
    return path


async def listed_tool_names() -> set[str]:
    """Return the tool names the server lists, from an in-process server that starts no platform."""
    from kamiwaza_mcp.config import ServerSettings
    from kamiwaza_mcp.server import build_server

    tools = await build_server(ServerSettings()).list_tools()
    return {tool.name for tool in tools}
