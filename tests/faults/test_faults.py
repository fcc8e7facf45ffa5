"""Faults of the platform and the network, each from a real misbehaving server on 127.0.0.1, seen through the tools.

Every case drives the MCP server (in-memory client) against a loopback
server that misbehaves in one way. The tool result must be an error that
starts with the error's kind and names the URL path and the next step, never
a credential. It must arrive within the configured timeout plus MARGIN, and
the server must serve the next call. A deploy must reach the platform once.

One fault is not an error: when the connection resets after the platform
created the deployment, deploy_model finds that deployment and returns it.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio
import pytest
from loopback_platform import (
    DEPLOY_PATH,
    DEPLOYMENTS_PATH,
    Fault,
    Hang,
    LoopbackPlatform,
    Reply,
    Reset,
    StalledTLSServer,
    Trickle,
    closed_port_url,
)
from loopback_tls import make_self_signed
from mcp import Client
from mcp_types import CallToolResult
from pydantic import SecretStr

from kamiwaza_mcp.client import Timeouts
from kamiwaza_mcp.config import ServerSettings
from kamiwaza_mcp.server import build_server

API_KEY = "kz-fault-api-key-2b7e151628aed2a6"
USERNAME = "operator"
PASSWORD = "fault-password-9f86d081884c"
TIMEOUTS = Timeouts(connect=0.5, read=1.0, deploy=1.5, generate=1.5)
# Time the MCP round trip, the retry backoff of safe requests (at most 0.75 s
# with two retries) and a loaded test machine may add to the timeout.
MARGIN = 1.5
DEPLOYMENT_ID = "5f3c7a8e-1d2b-4c5d-8e9f-0a1b2c3d4e5f"
DEPLOY_ARGUMENTS = {"model": "acme/tiny-llama", "wait": False}

Target = Literal["platform", "closed-port", "stalled-tls", "self-signed-tls"]


def text_of(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if block.type == "text")


def on(method: str, path: str, fault: Fault) -> Callable[[LoopbackPlatform], None]:
    def arm(platform: LoopbackPlatform) -> None:
        platform.faults[(method, path)] = fault

    return arm


def rotate_password(platform: LoopbackPlatform) -> None:
    """Change the account's password on the platform, so the server's login fails."""
    platform.login = (USERNAME, "rotated-password")


@dataclass(frozen=True)
class FaultCase:
    """One misbehaviour, the tool call that meets it, and what the error result must contain."""

    id: str
    tool: str
    arguments: dict[str, Any]
    kind: str
    path: str
    next_step: str
    # Seconds the configured timeouts allow the call; MARGIN is added on top.
    budget: float
    target: Target = "platform"
    arm: Callable[[LoopbackPlatform], None] | None = None
    login: bool = False
    # Text the error message must contain besides the kind, path and next step.
    expected_text: str | None = None
    deploy_posts: int | None = None
    requests_to_path: int | None = None


VALIDATION_DETAIL = {
    "detail": [
        {
            "type": "greater_than_equal",
            "loc": ["body", "min_copies"],
            "msg": "Input should be greater than or equal to 1",
            "input": 0,
        }
    ]
}

CASES = [
    FaultCase(
        id="connection-refused",
        tool="list_deployments",
        arguments={},
        kind="PlatformConnectionError",
        path=DEPLOYMENTS_PATH,
        next_step="check KAMIWAZA_BASE_URL and that the platform is running",
        budget=0,
        target="closed-port",
        expected_text="could not connect",
    ),
    FaultCase(
        id="connect-timeout",
        tool="list_deployments",
        arguments={},
        kind="PlatformTimeoutError",
        path=DEPLOYMENTS_PATH,
        next_step="raise KAMIWAZA_CONNECT_TIMEOUT",
        budget=TIMEOUTS.connect,
        target="stalled-tls",
        expected_text="timed out connecting (connect timeout 0.5 s)",
    ),
    FaultCase(
        id="read-timeout",
        tool="list_deployments",
        arguments={},
        kind="PlatformTimeoutError",
        path=DEPLOYMENTS_PATH,
        next_step="raise KAMIWAZA_READ_TIMEOUT",
        budget=TIMEOUTS.read,
        arm=on("GET", DEPLOYMENTS_PATH, Hang()),
        expected_text="timed out waiting for the response (read timeout 1 s)",
        # Timeouts are not retried.
        requests_to_path=1,
    ),
    FaultCase(
        id="500-json-detail",
        tool="list_deployments",
        arguments={},
        kind="APIError",
        path=DEPLOYMENTS_PATH,
        next_step="check the platform's logs, then retry",
        budget=0,
        arm=on("GET", DEPLOYMENTS_PATH, Reply(500, b'{"detail": "database is locked"}')),
        expected_text="failed with HTTP 500: database is locked",
        requests_to_path=1,
    ),
    FaultCase(
        id="503-retried",
        tool="list_deployments",
        arguments={},
        kind="APIError",
        path=DEPLOYMENTS_PATH,
        next_step="check the platform's logs, then retry",
        budget=0,
        arm=on("GET", DEPLOYMENTS_PATH, Reply(503, b'{"detail": "warming up"}')),
        expected_text="failed with HTTP 503: warming up",
        # The first attempt and two retries.
        requests_to_path=3,
    ),
    FaultCase(
        id="404-html-page",
        tool="get_deployment",
        arguments={"deployment_id": DEPLOYMENT_ID},
        kind="APIError",
        path=f"/api/serving/deployment/{DEPLOYMENT_ID}",
        next_step="check that KAMIWAZA_BASE_URL is the platform's API base URL, ending in /api",
        budget=0,
        arm=on(
            "GET",
            f"/api/serving/deployment/{DEPLOYMENT_ID}",
            Reply(404, b"<html><body><h1>404 Not Found</h1>nginx</body></html>", "text/html"),
        ),
        expected_text="failed with HTTP 404 (an HTML page, not the API's JSON)",
    ),
    FaultCase(
        id="401-api-key",
        tool="list_deployments",
        arguments={},
        kind="AuthenticationError",
        path=DEPLOYMENTS_PATH,
        next_step="set KAMIWAZA_API_KEY (or KAMIWAZA_API_TOKEN) to a valid, unexpired token",
        budget=0,
        arm=on("GET", DEPLOYMENTS_PATH, Reply(401, b'{"detail": "Token has expired"}')),
        expected_text="failed with HTTP 401: Token has expired",
    ),
    FaultCase(
        id="401-password-login",
        tool="list_deployments",
        arguments={},
        kind="AuthenticationError",
        path=DEPLOYMENTS_PATH,
        next_step="check KAMIWAZA_USERNAME and KAMIWAZA_PASSWORD",
        budget=0,
        arm=rotate_password,
        login=True,
        expected_text="failed with HTTP 401: Not authenticated",
    ),
    FaultCase(
        id="login-read-timeout",
        tool="list_models",
        arguments={},
        kind="PlatformTimeoutError",
        path="/api/auth/token",
        next_step="raise KAMIWAZA_READ_TIMEOUT",
        budget=TIMEOUTS.read,
        arm=on("POST", "/api/auth/token", Hang()),
        login=True,
        expected_text="timed out waiting for the response (read timeout 1 s)",
    ),
    FaultCase(
        id="malformed-json",
        tool="list_deployments",
        arguments={},
        kind="APIError",
        path=DEPLOYMENTS_PATH,
        next_step="check that KAMIWAZA_BASE_URL points at the Kamiwaza API",
        budget=0,
        arm=on("GET", DEPLOYMENTS_PATH, Reply(200, b'[{"id": "5f3c7a8e-')),
        expected_text="returned a body that is not valid JSON",
    ),
    FaultCase(
        id="trickling-body",
        tool="list_deployments",
        arguments={},
        kind="PlatformTimeoutError",
        path=DEPLOYMENTS_PATH,
        next_step="raise KAMIWAZA_READ_TIMEOUT",
        # Each byte arrives well within the read timeout; the whole response may take connect + read.
        budget=TIMEOUTS.connect + TIMEOUTS.read,
        arm=on("GET", DEPLOYMENTS_PATH, Trickle(json.dumps([{"id": "x" * 40}]).encode(), interval=0.2)),
        expected_text="timed out waiting for the response (read timeout 1 s)",
        requests_to_path=1,
    ),
    FaultCase(
        id="reset-after-deploy-sent",
        tool="deploy_model",
        arguments=DEPLOY_ARGUMENTS,
        kind="DeploymentError",
        path=DEPLOY_PATH,
        next_step="call list_deployments before deploying again, so that no duplicate is created",
        budget=0,
        arm=on("POST", DEPLOY_PATH, Reset(act_first=False)),
        expected_text="new deployments of this model: none",
        deploy_posts=1,
    ),
    FaultCase(
        id="deploy-read-timeout",
        tool="deploy_model",
        arguments=DEPLOY_ARGUMENTS,
        kind="DeploymentError",
        path=DEPLOY_PATH,
        next_step="call list_deployments before deploying again, so that no duplicate is created",
        budget=TIMEOUTS.deploy,
        arm=on("POST", DEPLOY_PATH, Hang()),
        expected_text="timed out waiting for the response (deploy timeout 1.5 s)",
        deploy_posts=1,
    ),
    FaultCase(
        id="422-validation-detail",
        tool="deploy_model",
        arguments=DEPLOY_ARGUMENTS,
        kind="APIError",
        path=DEPLOY_PATH,
        next_step="fix the fields named in the detail and call again",
        budget=0,
        arm=on("POST", DEPLOY_PATH, Reply(422, json.dumps(VALIDATION_DETAIL).encode())),
        expected_text="failed with HTTP 422: body.min_copies: Input should be greater than or equal to 1",
        deploy_posts=1,
    ),
    FaultCase(
        id="self-signed-tls",
        tool="list_deployments",
        arguments={},
        kind="PlatformConnectionError",
        path=DEPLOYMENTS_PATH,
        next_step="give the CA bundle in KAMIWAZA_CA_BUNDLE, or set KAMIWAZA_VERIFY_SSL=false",
        budget=0,
        target="self-signed-tls",
        expected_text="failed the TLS handshake",
    ),
]


@asynccontextmanager
async def open_target(target: Target, folder: Path) -> AsyncIterator[tuple[str, LoopbackPlatform | None]]:
    """Start the server of `target` on 127.0.0.1 and yield its API URL and, for a platform, the platform."""
    if target == "closed-port":
        async with closed_port_url() as url:
            yield url, None
    elif target == "stalled-tls":
        async with StalledTLSServer() as stalled:
            yield stalled.url, None
    else:
        tls = make_self_signed(folder).server_context() if target == "self-signed-tls" else None
        platform = LoopbackPlatform(api_key=API_KEY, login=(USERNAME, PASSWORD), tls=tls)
        async with platform:
            yield platform.url, platform


def settings_for(url: str, state_dir: Path, *, login: bool) -> ServerSettings:
    credentials: dict[str, Any] = (
        {"username": USERNAME, "password": SecretStr(PASSWORD)} if login else {"api_key": SecretStr(API_KEY)}
    )
    return ServerSettings(base_url=url, state_dir=state_dir, timeouts=TIMEOUTS, **credentials)


async def timed_call(client: Client, tool: str, arguments: dict[str, Any]) -> tuple[CallToolResult, float]:
    started = time.monotonic()
    # A hard stop well past any budget, so a hang fails the test instead of blocking the run.
    with anyio.fail_after(30):
        result = await client.call_tool(tool, arguments)
    return result, time.monotonic() - started


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
async def test_fault_is_reported_in_time(case: FaultCase, tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with open_target(case.target, tmp_path) as (url, platform):
            if platform is not None and case.arm is not None:
                case.arm(platform)
            async with Client(build_server(settings_for(url, tmp_path, login=case.login))) as client:
                result, elapsed = await timed_call(client, case.tool, case.arguments)
                text = text_of(result)

                assert result.is_error is True, text
                assert text.startswith(f"{case.kind}: "), text
                assert case.path in text, text
                assert case.next_step in text, text
                if case.expected_text is not None:
                    assert case.expected_text in text, text
                assert API_KEY not in text
                assert PASSWORD not in text
                assert elapsed <= case.budget + MARGIN, f"the error took {elapsed:.2f} s"

                if platform is not None:
                    platform.faults.clear()
                    platform.login = (USERNAME, PASSWORD)
                following, following_elapsed = await timed_call(client, "list_models", {})

            if case.target != "platform":
                # Nothing that the client accepts responds at that address, so the next call fails the same way, in time.
                assert following.is_error is True
                assert text_of(following).startswith(f"{case.kind}: ")
                assert following_elapsed <= case.budget + MARGIN
            else:
                assert following.is_error is False, text_of(following)
                assert following.structured_content is not None
            if platform is not None and case.deploy_posts is not None:
                assert len(platform.deploy_posts) == case.deploy_posts
                assert platform.deployments == {}
            if platform is not None and case.requests_to_path is not None:
                assert len(platform.requests_to("GET", case.path)) == case.requests_to_path


async def test_reset_after_deploy_finds_created_deployment(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with LoopbackPlatform(api_key=API_KEY) as platform:
            platform.faults[("POST", DEPLOY_PATH)] = Reset(act_first=True)
            async with Client(build_server(settings_for(platform.url, tmp_path, login=False))) as client:
                result, elapsed = await timed_call(client, "deploy_model", DEPLOY_ARGUMENTS)

    assert result.is_error is False, text_of(result)
    assert len(platform.deploy_posts) == 1
    assert len(platform.deployments) == 1
    (created,) = platform.deployments
    assert result.structured_content is not None
    assert result.structured_content["id"] == created
    assert elapsed <= MARGIN
