"""No credential leaves the server: a whole session's output is scanned for the configured secrets.

Each session runs a series of tools against a loopback platform that responds
with errors, 401s included, and ends with the credentials rejected outright.
Everything the session produced is captured: the text and structured content
of every tool result, and the server's log (caplog in memory, stderr of the
stdio subprocess at DEBUG level). No piece of a secret may appear in it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from loopback_platform import DEPLOY_PATH, DEPLOYMENTS_PATH, LoopbackPlatform, Reply, Reset
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from pydantic import SecretStr

from kamiwaza_mcp.client import Timeouts
from kamiwaza_mcp.config import ServerSettings
from kamiwaza_mcp.server import build_server

# Random hex, so that no piece of them occurs in ordinary output by chance.
API_KEY = "kz-b3c1f0e29d4a7786c5e1f3a9d02b4e6f"
PASSWORD = "pw-8e4f2a61c9d03b7e5f1a2c4d6e8b0a93"
ACCESS_TOKEN = "at-5d7c9e1b3a2f4d6c8e0a1b3c5d7e9f02"
USERNAME = "operator"
SECRETS = (API_KEY, PASSWORD, ACCESS_TOKEN)
# Length of the pieces of each secret that must not appear; shorter ones could match by chance.
PIECE = 10
UNVERIFIED_WARNING = "TLS certificate verification is off (KAMIWAZA_VERIFY_SSL=false)"
UNKNOWN_DEPLOYMENT = "5f3c7a8e-1d2b-4c5d-8e9f-0a1b2c3d4e5f"

# Tool calls of a session: successes, then the platform's errors, then (after
# the credentials are rejected) 401s on every route.
CALLS: list[tuple[str, dict[str, Any]]] = [
    ("list_models", {}),
    ("estimate_model_vram", {"model": "acme/tiny-llama"}),
    ("deploy_model", {"model": "acme/tiny-llama", "wait": False}),
    ("list_deployments", {}),
    ("get_status", {}),
    ("get_deployment", {"deployment_id": UNKNOWN_DEPLOYMENT}),
    ("get_health", {}),
]
CALLS_AFTER_REJECTION: list[tuple[str, dict[str, Any]]] = [
    ("list_models", {}),
    ("list_deployments", {}),
    ("deploy_model", {"model": "acme/tiny-llama"}),
]


def secret_pieces() -> set[str]:
    return {secret[i : i + PIECE] for secret in SECRETS for i in range(len(secret) - PIECE + 1)}


def leaked_pieces(captured: str) -> list[str]:
    return sorted(piece for piece in secret_pieces() if piece in captured)


def misbehaving_platform(login: bool) -> LoopbackPlatform:
    platform = LoopbackPlatform(
        api_key=None if login else API_KEY,
        login=(USERNAME, PASSWORD) if login else None,
        access_token=ACCESS_TOKEN,
    )
    platform.faults.update(
        {
            ("POST", DEPLOY_PATH): Reply(422, b'{"detail": [{"loc": ["body", "m_id"], "msg": "invalid"}]}'),
            ("GET", DEPLOYMENTS_PATH): Reply(500, b'{"detail": "database is locked"}'),
            ("GET", "/api/serving/status"): Reply(401, b'{"detail": "Token has expired"}'),
            ("GET", "/api/serving/health"): Reset(act_first=False),
        }
    )
    return platform


def reject_credentials(platform: LoopbackPlatform) -> None:
    """Make the platform reject the configured credentials from now on."""
    platform.faults.clear()
    platform.api_key = "kz-some-other-key" if platform.api_key else None
    if platform.login is not None:
        platform.login = (USERNAME, "pw-rotated")
        platform.access_token = "at-rotated"


def credentials_env(login: bool) -> dict[str, str]:
    if login:
        return {"KAMIWAZA_USERNAME": USERNAME, "KAMIWAZA_PASSWORD": PASSWORD}
    return {"KAMIWAZA_API_KEY": API_KEY}


async def run_calls(client: Client, platform: LoopbackPlatform) -> list[str]:
    """Run CALLS, reject the credentials, run CALLS_AFTER_REJECTION; return every result as text."""
    captured = []
    kinds = []
    for index, (tool, arguments) in enumerate(CALLS + CALLS_AFTER_REJECTION):
        if index == len(CALLS):
            reject_credentials(platform)
        with anyio.fail_after(30):
            result = await client.call_tool(tool, arguments)
        text = "\n".join(block.text for block in result.content if block.type == "text")
        captured.append(text)
        captured.append(json.dumps(result.structured_content))
        kinds.append(text.split(":", 1)[0] if result.is_error else "ok")
    assert kinds == [
        "ok",
        "ok",
        "APIError",
        "APIError",
        "AuthenticationError",
        "NotFoundError",
        "PlatformConnectionError",
        "AuthenticationError",
        "AuthenticationError",
        "AuthenticationError",
    ]
    return captured


def assert_secrets_were_used(platform: LoopbackPlatform, login: bool) -> None:
    """Check that the platform received the secrets, so that their absence from the output means something."""
    authorizations = {r.headers.get("authorization") for r in platform.received}
    if login:
        assert f"Bearer {ACCESS_TOKEN}" in authorizations
        assert any(PASSWORD in r.body.decode() for r in platform.requests_to("POST", "/api/auth/token"))
    else:
        assert f"Bearer {API_KEY}" in authorizations


@pytest.mark.parametrize("login", [False, True], ids=["api-key", "password"])
async def test_in_memory_session_leaks_no_secret(
    login: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    credentials: dict[str, Any] = (
        {"username": USERNAME, "password": SecretStr(PASSWORD)} if login else {"api_key": SecretStr(API_KEY)}
    )
    with anyio.fail_after(60):
        async with misbehaving_platform(login) as platform:
            settings = ServerSettings(
                base_url=platform.url, state_dir=tmp_path, timeouts=Timeouts(connect=2, read=5), **credentials
            )
            async with Client(build_server(settings)) as client:
                captured = await run_calls(client, platform)

    assert_secrets_were_used(platform, login)
    assert caplog.text, "the server logged nothing, so the log scan proves nothing"
    assert leaked_pieces("\n".join(captured)) == []
    assert leaked_pieces(caplog.text) == []
    assert leaked_pieces(repr(settings)) == []


@pytest.mark.parametrize("login", [False, True], ids=["api-key", "password"])
async def test_stdio_session_leaks_no_secret(login: bool, tmp_path: Path) -> None:
    async with misbehaving_platform(login) as platform:
        env = {key: value for key, value in os.environ.items() if not key.startswith("KAMIWAZA_")}
        env.update(credentials_env(login))
        env.update(
            {
                "KAMIWAZA_BASE_URL": platform.url,
                "KAMIWAZA_MCP_STATE_DIR": str(tmp_path / "state"),
                "KAMIWAZA_VERIFY_SSL": "false",
                "KAMIWAZA_READ_TIMEOUT": "5",
            }
        )
        parameters = StdioServerParameters(
            command=sys.executable, args=["-m", "kamiwaza_mcp", "--log-level", "DEBUG"], env=env
        )
        stderr_path = tmp_path / "stderr.log"
        with stderr_path.open("w") as stderr:
            with anyio.fail_after(60):
                async with Client(stdio_client(parameters, errlog=stderr)) as client:
                    captured = await run_calls(client, platform)
        logged = stderr_path.read_text()

    assert_secrets_were_used(platform, login)
    assert "DEBUG" in logged, "the server logged no DEBUG lines, so the log scan proves little"
    assert logged.count(UNVERIFIED_WARNING) == 1
    assert leaked_pieces("\n".join(captured)) == []
    assert leaked_pieces(logged) == []
