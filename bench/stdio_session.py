"""A raw JSON-RPC session with an MCP server started as a subprocess on stdio.

The benchmarks speak the wire protocol directly, without the SDK's client, so
the client side costs only a `json.dumps`, a pipe write, a `readline` and a
`json.loads` per message, and the exact characters the server wrote can be counted.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["PROTOCOL_VERSION", "ServerExited", "StdioSession", "rss_kib"]

# The protocol version of the `initialize` handshake; MCP SDK 2.x servers accept it.
PROTOCOL_VERSION = "2025-11-25"


class ServerExited(RuntimeError):
    """The server closed stdout or sent no message in time; the message contains the end of its stderr."""


def rss_kib(pid: int) -> int:
    """Return the resident set size (VmRSS in /proc/<pid>/status) of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS line")


class StdioSession:
    """A server subprocess and the JSON-RPC messages exchanged with it over its stdin and stdout.

    stderr goes to `stderr_path`, so a chatty server can never block on a full pipe.
    Every read waits at most `timeout` seconds.
    """

    def __init__(
        self, command: Sequence[str], env: Mapping[str, str], stderr_path: Path, *, timeout: float = 120.0
    ) -> None:
        self.timeout = timeout
        self.stderr_path = stderr_path
        self._stderr = stderr_path.open("wb")
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=dict(env)
        )
        self._next_id = 0
        self._buffer = b""
        self._selector = selectors.DefaultSelector()
        assert self.process.stdout is not None
        self._selector.register(self.process.stdout, selectors.EVENT_READ)

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, method: str, params: Mapping[str, Any] | None = None, *, notify: bool = False) -> int:
        """Write one request (or notification) and return its id (0 for a notification)."""
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        message_id = 0
        if not notify:
            self._next_id += 1
            message_id = message["id"] = self._next_id
        if params is not None:
            message["params"] = dict(params)
        self.write_lines([json.dumps(message)])
        return message_id

    def write_lines(self, lines: Sequence[str]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(("\n".join(lines) + "\n").encode())
        self.process.stdin.flush()

    def request_line(self, method: str, params: Mapping[str, Any] | None = None) -> tuple[int, str]:
        """Build one request without sending it; return its id and its JSON line."""
        self._next_id += 1
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": self._next_id, "method": method}
        if params is not None:
            message["params"] = dict(params)
        return self._next_id, json.dumps(message)

    def read_response(self, message_id: int) -> tuple[dict[str, Any], str]:
        """Read lines until the response to `message_id`; return it parsed and as the raw line.

        Notifications and log messages the server sends meanwhile are skipped.
        """
        while True:
            line = self._read_line()
            message = json.loads(line)
            if message.get("id") == message_id and ("result" in message or "error" in message):
                return message, line

    def read_responses(self, message_ids: set[int]) -> None:
        """Read lines until a response to each of `message_ids` has arrived."""
        pending = set(message_ids)
        while pending:
            message = json.loads(self._read_line())
            if "result" in message or "error" in message:
                pending.discard(message.get("id"))

    def call(self, method: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Send one request and return the `result` of its response; raise on a JSON-RPC error."""
        response, _ = self.read_response(self.send(method, params))
        if "error" in response:
            raise RuntimeError(f"{method} failed: {response['error']}")
        result: dict[str, Any] = response["result"]
        return result

    def initialize(self) -> dict[str, Any]:
        """Run the `initialize` handshake and send `notifications/initialized`; return the result."""
        result = self.call(
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "kamiwaza-mcp-bench", "version": "1"},
            },
        )
        self.send("notifications/initialized", notify=True)
        return result

    def close(self) -> int:
        """Close stdin, which ends a stdio server, and return its exit code; kill it after 30 s."""
        assert self.process.stdin is not None
        # A server that already exited leaves a pipe that fails to flush on close.
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.close()
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(timeout=30)
        self._selector.close()
        assert self.process.stdout is not None
        self.process.stdout.close()
        self._stderr.close()
        return code

    def _read_line(self) -> str:
        # Lines are split from raw os.read chunks, not with readline(): a buffered
        # reader can hold complete lines that select() no longer reports as readable.
        assert self.process.stdout is not None
        deadline = time.monotonic() + self.timeout
        while True:
            newline = self._buffer.find(b"\n")
            if newline != -1:
                line, self._buffer = self._buffer[: newline + 1], self._buffer[newline + 1 :]
                if line.strip():
                    return line.decode()
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._selector.select(remaining):
                raise ServerExited(
                    f"no message from the server within {self.timeout:g} s{self._stderr_tail()}"
                )
            chunk = os.read(self.process.stdout.fileno(), 1 << 16)
            if not chunk:
                raise ServerExited(f"the server closed stdout{self._stderr_tail()}")
            self._buffer += chunk

    def _stderr_tail(self) -> str:
        self._stderr.flush()
        text = self.stderr_path.read_text(errors="replace")[-2000:]
        return f"; end of its stderr ({self.stderr_path}):\n{text}" if text else ""


def server_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """Return this process's environment without KAMIWAZA_* variables, plus `extra`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("KAMIWAZA_")}
    env.update(extra)
    return env
