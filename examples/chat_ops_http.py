"""A chat-ops bot's read-only checks against kamiwaza-mcp over streamable HTTP, with a bearer token.

Connect to a server that already runs, for example one started with
`kamiwaza-mcp --transport http --generate-token`:

    KAMIWAZA_MCP_HTTP_TOKEN=<token> python examples/chat_ops_http.py --url http://127.0.0.1:8765/mcp

Without --url, the script starts `kamiwaza-mcp --transport http` itself on a free
127.0.0.1 port with a new random token, runs the checks, and stops it. That
server runs the embedded local platform in a temporary state folder unless
KAMIWAZA_BASE_URL is set.

The checks call only tools that change nothing: get_status, list_models,
list_deployments and get_health.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shutil
import sys
import tempfile
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import TextContent

TOKEN_ENV = "KAMIWAZA_MCP_HTTP_TOKEN"
STARTUP_TIMEOUT_SECONDS = 60.0
READ_ONLY_CHECKS = ("get_status", "list_models", "list_deployments", "get_health")
_SERVING = re.compile(r"Serving MCP over streamable HTTP at (http://\S+)")


def show(title: str, text: str) -> None:
    print(f"\n== {title}", flush=True)
    print(textwrap.indent(text.strip() or "(no text)", "   "), flush=True)


async def run_checks(url: str, token: str) -> None:
    """Open one MCP session with the token and call each read-only tool."""
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        tools = await client.list_tools()
        show("Tools", ", ".join(sorted(tool.name for tool in tools.tools)))
        for name in READ_ONLY_CHECKS:
            result = await client.call_tool(name, {})
            text = "\n".join(block.text for block in result.content if isinstance(block, TextContent))
            if result.is_error:
                raise SystemExit(f"{name} failed: {text}")
            show(name, text)


@asynccontextmanager
async def started_server(state_dir: Path, token: str) -> AsyncIterator[str]:
    """Start `kamiwaza-mcp --transport http` on a free port and yield its URL once it serves."""
    command = shutil.which("kamiwaza-mcp")
    prefix = [command] if command else [sys.executable, "-m", "kamiwaza_mcp"]
    env = {
        **os.environ,
        TOKEN_ENV: token,
        "KAMIWAZA_MCP_STATE_DIR": str(state_dir),
        "KAMIWAZA_MCP_MODELS_DIR": os.environ.get("KAMIWAZA_MCP_MODELS_DIR", str(state_dir / "models")),
    }
    process = await asyncio.create_subprocess_exec(
        *prefix,
        "--transport",
        "http",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        stdin=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert process.stderr is not None
    url: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    drain = asyncio.create_task(_watch_log(process.stderr, url))
    try:
        yield await asyncio.wait_for(asyncio.shield(url), STARTUP_TIMEOUT_SECONDS)
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()
        await drain


async def _watch_log(stream: asyncio.StreamReader, url: asyncio.Future[str]) -> None:
    """Read the server's log to its end, keeping the pipe drained, and resolve `url` from its serving line."""
    async for raw in stream:
        line = raw.decode(errors="replace").rstrip()
        match = _SERVING.search(line)
        if match and not url.done():
            url.set_result(match.group(1))
        if " ERROR " in line or " WARNING " in line:
            print(f"   [server] {line}", file=sys.stderr, flush=True)
    if not url.done():
        url.set_exception(RuntimeError("kamiwaza-mcp exited before it served; run it by hand to see why"))


async def main_async(url: str | None) -> None:
    if url is not None:
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            raise SystemExit(f"set {TOKEN_ENV} to the server's bearer token")
        await run_checks(url, token)
    else:
        token = secrets.token_urlsafe(32)
        with tempfile.TemporaryDirectory(prefix="kamiwaza-mcp-http-") as folder:
            async with started_server(Path(folder), token) as started_url:
                print(f"Started kamiwaza-mcp at {started_url}", flush=True)
                await run_checks(started_url, token)
    print("\nChecks finished: every read-only tool answered over HTTP.", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url",
        help=f"MCP endpoint of a running server, such as http://127.0.0.1:8765/mcp; its token is read from {TOKEN_ENV}",
    )
    options = parser.parse_args()
    try:
        asyncio.run(main_async(options.url))
    except (RuntimeError, TimeoutError) as exc:
        raise SystemExit(f"error: {exc or 'kamiwaza-mcp did not serve in time'}") from exc


if __name__ == "__main__":
    main()
