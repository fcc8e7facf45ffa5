"""The configured API key never appears in what the server prints or logs, even at DEBUG.

The server runs as a host starts it, `python -m kamiwaza_mcp` on stdio, in
remote mode against a platform that accepts only that key as a bearer token.
Its stdout and stderr, with logging at DEBUG, are scanned after calls that
succeed, fail at the platform, fail validation and issue confirmation tokens.
A second run with a key the platform rejects checks the authentication errors.
The fuzz tests scan their own output the same way.
"""

from __future__ import annotations

import json
import os
import secrets
import selectors
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from reliability_support import KNOWN_API_KEY, SEEDED, HostedPlatform, secret_hits

pytest_plugins = ["reliability_fixtures"]
pytestmark = pytest.mark.reliability

# Seconds the stdio server may take to respond to every call, or to exit after its input ends.
RESPONSE_TIMEOUT = 60.0
# Calls of the stdio run: reads, a platform error, validation errors, a preview with a token, a bad token.
CALLS: list[tuple[str, dict[str, Any]]] = [
    ("get_status", {}),
    ("list_models", {}),
    ("list_deployments", {}),
    ("get_deployment", {"deployment_id": SEEDED.failed}),
    ("get_deployment", {"deployment_id": "5f3c2a8e-0c1d-4b7a-9e2f-1a2b3c4d5e6f"}),
    ("get_deployment", {"deployment_id": "not-a-uuid"}),
    ("get_health", {}),
    ("list_model_instances", {"deployment_id": SEEDED.unloaded}),
    ("estimate_model_vram", {"model": "no-such-model"}),
    ("deploy_model", {"model": "no-such-model", "replicas": 1}),
    ("stop_deployment", {"deployment_id": SEEDED.unloaded}),
    ("stop_deployment", {"deployment_id": SEEDED.unloaded, "confirmation_token": "made-up"}),
    ("generate", {"deployment_id": SEEDED.unloaded, "prompt": "hello"}),
    ("generate", {"deployment_id": SEEDED.unloaded, "prompt": "hello", "temperature": 9}),
    ("load_model", {"deployment_id": SEEDED.stopped}),
]


def jsonrpc_requests() -> list[dict[str, Any]]:
    """Return the handshake, tools/list and a tools/call for each of CALLS, with ids 0, 1, 2, ..."""
    handshake = {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "secret-scan", "version": "1"},
    }
    messages: list[dict[str, Any]] = [
        {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": handshake},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}},
    ]
    for index, (name, arguments) in enumerate(CALLS, start=2):
        params = {"name": name, "arguments": arguments}
        messages.append({"jsonrpc": "2.0", "id": index, "method": "tools/call", "params": params})
    return messages


def read_lines_until_answered(process: subprocess.Popen[str], expected: set[int]) -> list[str]:
    """Read stdout lines until a response to each id in `expected` arrived; fail after RESPONSE_TIMEOUT."""
    assert process.stdout is not None
    descriptor = process.stdout.fileno()
    deadline = time.monotonic() + RESPONSE_TIMEOUT
    lines: list[str] = []
    answered: set[int] = set()
    pending = b""
    with selectors.DefaultSelector() as selector:
        selector.register(descriptor, selectors.EVENT_READ)
        while answered != expected:
            remaining = deadline - time.monotonic()
            timed_out = f"no response within {RESPONSE_TIMEOUT:g} s; answered so far: {sorted(answered)}"
            assert remaining > 0, timed_out
            assert selector.select(remaining), timed_out
            # Raw reads, because a buffered readline() could hold lines that select() no longer reports.
            chunk = os.read(descriptor, 1 << 16)
            assert chunk, f"the server closed stdout after answering {sorted(answered)}"
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                line = raw.decode()
                lines.append(line + "\n")
                answered.add(json.loads(line).get("id", -1))
    # The start of a message written after the last response; communicate() reads its rest.
    if pending:
        lines.append(pending.decode())
    return lines


def run_stdio_server(
    platform_url: str, api_key: str, state_dir: Path
) -> tuple[list[dict[str, Any]], str, str]:
    """Run the server on stdio for CALLS and return the responses, its stdout and its stderr."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("KAMIWAZA_")}
    env["KAMIWAZA_BASE_URL"] = platform_url
    env["KAMIWAZA_API_KEY"] = api_key
    env["KAMIWAZA_MCP_STATE_DIR"] = str(state_dir)
    process = subprocess.Popen(
        [sys.executable, "-m", "kamiwaza_mcp", "--log-level", "DEBUG"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert process.stdin is not None

    try:
        process.stdin.write("".join(json.dumps(message) + "\n" for message in jsonrpc_requests()))
        process.stdin.flush()
        lines = read_lines_until_answered(process, set(range(len(CALLS) + 2)))
        # communicate() closes stdin, and the server exits at the end of its input.
        rest, stderr = process.communicate(timeout=RESPONSE_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)

    stdout = "".join(lines) + rest
    responses = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    return responses, stdout, stderr


def results_by_id(responses: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {response["id"]: response["result"] for response in responses if "result" in response}


def test_stdio_output_hides_key(fuzz_platform: HostedPlatform, tmp_path: Path) -> None:
    responses, stdout, stderr = run_stdio_server(fuzz_platform.url, KNOWN_API_KEY, tmp_path)

    results = results_by_id(responses)
    listed = results[2 + CALLS.index(("list_deployments", {}))]
    assert listed["isError"] is False, listed
    preview = results[2 + CALLS.index(("stop_deployment", {"deployment_id": SEEDED.unloaded}))]
    assert preview["structuredContent"]["confirmation_token"], preview
    assert "DEBUG" in stderr, "the server logged nothing at DEBUG"
    assert secret_hits([stdout, stderr]) == []


def test_rejected_key_is_not_echoed(fuzz_platform: HostedPlatform, tmp_path: Path) -> None:
    random_part = secrets.token_hex(24)
    responses, stdout, stderr = run_stdio_server(fuzz_platform.url, f"kmz_{random_part}", tmp_path)

    results = results_by_id(responses)
    listed = results[2 + CALLS.index(("list_deployments", {}))]
    assert listed["isError"] is True, listed
    assert listed["content"][0]["text"].startswith("AuthenticationError"), listed
    assert secret_hits([stdout, stderr], random_part) == []


def test_scan_finds_whole_and_cut_off_keys() -> None:
    # "kmz_" and 12 random characters: the shortest cut-off copy the scan reports.
    cut_off = KNOWN_API_KEY[:16]
    texts = ["no key here", f"Authorization: Bearer {KNOWN_API_KEY}", f"key starts {cut_off}…"]

    hits = secret_hits(texts)

    assert len(hits) == 2
    assert KNOWN_API_KEY in hits[0]
    assert cut_off in hits[1]
