"""Credentials and TLS settings of a server for a remote platform, against loopback platforms."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from loopback_platform import LoopbackPlatform
from loopback_tls import make_ca_signed, make_self_signed
from mcp import Client
from mcp_types import CallToolResult
from pydantic import SecretStr

from kamiwaza_mcp.client import Timeouts
from kamiwaza_mcp.config import ConfigurationError, ServerSettings
from kamiwaza_mcp.server import build_server

USERNAME = "operator"
PASSWORD = " pass word with spaces "
API_KEY = "kz-auth-api-key-6a09e667f3bcc908"
TIMEOUTS = Timeouts(connect=2, read=5, deploy=5, generate=5)
UNVERIFIED_WARNING = "TLS certificate verification is off (KAMIWAZA_VERIFY_SSL=false)"


def text_of(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if block.type == "text")


@asynccontextmanager
async def session(settings: ServerSettings) -> AsyncIterator[Client]:
    """Yield an in-memory MCP client of a server with `settings`; the whole session is bounded."""
    with anyio.fail_after(60):
        async with Client(build_server(settings)) as client:
            yield client


async def call(client: Client, tool: str, arguments: dict[str, Any] | None = None) -> CallToolResult:
    with anyio.fail_after(20):
        return await client.call_tool(tool, arguments or {})


def remote(url: str, **fields: Any) -> ServerSettings:
    return ServerSettings(base_url=url, timeouts=TIMEOUTS, **fields)


# Password login


async def test_password_login_signs_requests(tmp_path: Path) -> None:
    login = {"username": USERNAME, "password": SecretStr(PASSWORD), "state_dir": tmp_path}
    async with (
        LoopbackPlatform(login=(USERNAME, PASSWORD)) as platform,
        session(remote(platform.url, **login)) as client,
    ):
        first = await call(client, "list_models")
        second = await call(client, "list_deployments")

    assert first.is_error is False, text_of(first)
    assert second.is_error is False, text_of(second)
    logins = platform.requests_to("POST", "/api/auth/token")
    assert len(logins) == 1
    form = logins[0].body.decode()
    assert "username=operator" in form
    assert "grant_type=password" in form
    signed = [r for r in platform.received if r.path != "/api/auth/token"]
    assert len(signed) == 2
    for request in signed:
        assert request.headers["authorization"] == f"Bearer {platform.access_token}"


async def test_rejected_token_is_renewed_once(tmp_path: Path) -> None:
    login = {"username": USERNAME, "password": SecretStr(PASSWORD), "state_dir": tmp_path}
    async with (
        LoopbackPlatform(login=(USERNAME, PASSWORD)) as platform,
        session(remote(platform.url, **login)) as client,
    ):
        await call(client, "list_models")
        platform.access_token = "kz-loopback-access-token-renewed"
        renewed = await call(client, "list_models")

    assert renewed.is_error is False, text_of(renewed)
    assert len(platform.requests_to("POST", "/api/auth/token")) == 2
    assert platform.received[-1].headers["authorization"] == "Bearer kz-loopback-access-token-renewed"


async def test_api_key_is_sent_as_bearer(tmp_path: Path) -> None:
    async with (
        LoopbackPlatform(api_key=API_KEY) as platform,
        session(remote(platform.url, api_key=SecretStr(API_KEY), state_dir=tmp_path)) as client,
    ):
        result = await call(client, "list_models")

    assert result.is_error is False, text_of(result)
    assert [r.headers["authorization"] for r in platform.received] == [f"Bearer {API_KEY}"]


async def test_no_credentials_names_both_ways(tmp_path: Path) -> None:
    async with (
        LoopbackPlatform(api_key=API_KEY) as platform,
        session(remote(platform.url, state_dir=tmp_path)) as client,
    ):
        result = await call(client, "list_models")

    assert result.is_error is True
    assert text_of(result) == (
        "AuthenticationError: GET /api/models/ failed with HTTP 401: Not authenticated; the platform requires "
        "a login: set KAMIWAZA_API_KEY, or KAMIWAZA_USERNAME and KAMIWAZA_PASSWORD"
    )


# TLS


async def test_ca_bundle_trusts_platform(tmp_path: Path) -> None:
    certificate = make_ca_signed(tmp_path)
    settings = ServerSettings.from_env(
        {"KAMIWAZA_BASE_URL": "https://127.0.0.1:1/api", "KAMIWAZA_CA_BUNDLE": str(certificate.issuer)}
    )
    async with LoopbackPlatform(tls=certificate.server_context()) as platform:
        trusted = settings.model_copy(update={"base_url": platform.url, "state_dir": tmp_path})
        async with session(trusted) as client:
            result = await call(client, "list_models")

    assert platform.url.startswith("https://")
    assert result.is_error is False, text_of(result)


async def test_unverified_tls_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    certificate = make_self_signed(tmp_path)
    async with LoopbackPlatform(tls=certificate.server_context()) as platform:
        settings = remote(platform.url, verify_ssl=False, state_dir=tmp_path)
        async with session(settings) as client:
            first = await call(client, "list_models")
            second = await call(client, "list_deployments")

    assert first.is_error is False, text_of(first)
    assert second.is_error is False, text_of(second)
    warnings = [r for r in caplog.records if UNVERIFIED_WARNING in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING


async def test_verified_tls_has_no_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with LoopbackPlatform() as platform, session(remote(platform.url, state_dir=tmp_path)) as client:
        await call(client, "list_models")

    assert UNVERIFIED_WARNING not in caplog.text


# Settings


def test_username_and_password_are_read() -> None:
    settings = ServerSettings.from_env(
        {
            "KAMIWAZA_BASE_URL": "https://kamiwaza.example.com/api",
            "KAMIWAZA_USERNAME": f" {USERNAME} ",
            "KAMIWAZA_PASSWORD": PASSWORD,
        }
    )

    assert settings.username == USERNAME
    assert settings.password is not None
    assert settings.password.get_secret_value() == PASSWORD
    assert settings.api_key is None
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in settings.model_dump_json()


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        (
            {"KAMIWAZA_USERNAME": USERNAME},
            "KAMIWAZA_PASSWORD is not set: the password login needs both KAMIWAZA_USERNAME and "
            "KAMIWAZA_PASSWORD; set KAMIWAZA_PASSWORD, or unset the other one",
        ),
        (
            {"KAMIWAZA_PASSWORD": PASSWORD},
            "KAMIWAZA_USERNAME is not set: the password login needs both KAMIWAZA_USERNAME and "
            "KAMIWAZA_PASSWORD; set KAMIWAZA_USERNAME, or unset the other one",
        ),
        (
            {"KAMIWAZA_API_TOKEN": API_KEY, "KAMIWAZA_USERNAME": USERNAME, "KAMIWAZA_PASSWORD": PASSWORD},
            "both an API key (KAMIWAZA_API_KEY or KAMIWAZA_API_TOKEN) and KAMIWAZA_USERNAME/KAMIWAZA_PASSWORD "
            "are set; unset one of the two ways to log in",
        ),
    ],
)
def test_incomplete_login_is_rejected(environment: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        ServerSettings.from_env(environment)

    assert str(caught.value) == message
    assert PASSWORD not in str(caught.value)
    assert API_KEY not in str(caught.value)
