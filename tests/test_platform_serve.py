"""`kamiwaza-mcp platform serve` as a real process on 127.0.0.1, behind a bearer token."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kamiwaza_mcp import cli
from kamiwaza_mcp.client import KamiwazaClient
from kamiwaza_mcp.local import serve

TOKEN = "platform-serve-test-token"
LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+/api)$")
START_TIMEOUT = 30


def platform_env(tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("KAMIWAZA_")}
    env["KAMIWAZA_MCP_STATE_DIR"] = str(tmp_path / "state")
    env["KAMIWAZA_MCP_MODELS_DIR"] = str(tmp_path / "models")
    env["HF_HOME"] = str(tmp_path / "hf")
    env["HF_HUB_OFFLINE"] = "1"
    return env


class ServedPlatform:
    """A running `platform serve` process, with its stderr collected line by line."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line.rstrip("\n"))

    def wait_for_url(self) -> str:
        while True:
            line = self.lines.get(timeout=START_TIMEOUT)
            self.seen.append(line)
            found = LISTENING.search(line)
            if found:
                return found.group(1)

    def close(self) -> None:
        """Kill the process if it still runs, and close its stderr pipe once the reader is done."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        self._reader.join(timeout=10)
        assert self.process.stderr is not None
        self.process.stderr.close()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=30)
        self._reader.join(timeout=10)
        while not self.lines.empty():
            self.seen.append(self.lines.get_nowait())
        return code


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedPlatform]:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    command = [sys.executable, "-m", "kamiwaza_mcp", "platform", "serve", "--host", "127.0.0.1"]
    command += ["--port", "0", "--token-file", str(token_file)]
    process = subprocess.Popen(command, env=platform_env(tmp_path), stderr=subprocess.PIPE, text=True)
    platform = ServedPlatform(process)
    try:
        yield platform
    finally:
        platform.close()


async def test_platform_serve_requires_token(served: ServedPlatform) -> None:
    url = served.wait_for_url()

    async with httpx.AsyncClient(timeout=10) as http:
        rejected = await http.get(url + "/models/")
    async with KamiwazaClient(url, api_key=TOKEN) as client:
        models = await client.list_models()
        status = await client.get_status()

    assert rejected.status_code == 401
    assert models == []
    assert status.status != ""
    assert served.stop() == 0
    assert not any(TOKEN in line for line in served.seen)
    assert not any(" INFO httpx:" in line for line in served.seen)


def test_platform_serve_rejects_remote_host_without_token(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "kamiwaza_mcp", "platform", "serve", "--host", "0.0.0.0", "--port", "0"]
    result = subprocess.run(command, env=platform_env(tmp_path), capture_output=True, text=True, timeout=60)

    assert result.returncode == 2
    assert "cannot serve on 0.0.0.0 without a token" in result.stderr


def test_platform_serve_rejects_mcp_server_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["--transport", "http", "platform", "serve"])

    assert caught.value.code == 2
    assert "--transport: options of the MCP server, not of 'platform serve'" in capsys.readouterr().err


def test_platform_defaults_match_local_serve() -> None:
    assert cli._PLATFORM_TOKEN_ENV == serve.TOKEN_ENV
    assert cli._PLATFORM_DEFAULT_PORT == serve.DEFAULT_PORT
