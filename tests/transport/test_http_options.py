"""The HTTP listener's option checks, Host and Origin allow-lists, and bearer token middleware, in process."""

from __future__ import annotations

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from kamiwaza_mcp.config import ConfigurationError
from kamiwaza_mcp.http_app import (
    BearerTokenMiddleware,
    HTTPOptions,
    generate_token,
    is_loopback,
    transport_security,
    validate_options,
)

TOKEN = "unit-test-token-0123456789"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_is_loopback_accepts_loopback(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "192.0.2.1", "mcp.example.com", "localhost.example.com", ""]
)
def test_is_loopback_rejects_others(host: str) -> None:
    assert not is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "mcp.example.com"])
def test_non_loopback_without_token_is_rejected(host: str) -> None:
    with pytest.raises(ConfigurationError, match="needs a bearer token"):
        validate_options(HTTPOptions(host=host))


def test_non_loopback_with_token_is_valid() -> None:
    validate_options(HTTPOptions(host="0.0.0.0", token=TOKEN))


def test_short_token_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="at least 16"):
        validate_options(HTTPOptions(token="abc"))


def test_generated_tokens_are_long_and_distinct() -> None:
    tokens = {generate_token() for _ in range(10)}

    assert len(tokens) == 10
    assert all(len(token) == 43 for token in tokens)


def test_token_hidden_from_repr() -> None:
    assert TOKEN not in repr(HTTPOptions(token=TOKEN))


def test_loopback_allow_lists() -> None:
    settings = transport_security(HTTPOptions())

    assert settings.enable_dns_rebinding_protection is True
    assert "127.0.0.1:*" in settings.allowed_hosts
    assert "localhost:*" in settings.allowed_hosts
    assert "[::1]:*" in settings.allowed_hosts
    assert "http://127.0.0.1:*" in settings.allowed_origins
    assert not any("0.0.0.0" in host for host in settings.allowed_hosts)


def test_bound_address_and_extra_hosts_are_allowed() -> None:
    options = HTTPOptions(
        host="192.0.2.5",
        token=TOKEN,
        allowed_hosts=("mcp.example.com", "proxy.example.com:443"),
        allowed_origins=("https://chat.example.com",),
    )

    settings = transport_security(options)

    assert "192.0.2.5:*" in settings.allowed_hosts
    assert "mcp.example.com" in settings.allowed_hosts
    assert "mcp.example.com:*" in settings.allowed_hosts
    assert "proxy.example.com:443" in settings.allowed_hosts
    assert "proxy.example.com:443:*" not in settings.allowed_hosts
    assert "https://mcp.example.com" in settings.allowed_origins
    assert "https://chat.example.com" in settings.allowed_origins


def test_other_loopback_address_is_allowed() -> None:
    settings = transport_security(HTTPOptions(host="127.0.0.2"))

    assert "127.0.0.2:*" in settings.allowed_hosts
    assert "http://127.0.0.2:*" in settings.allowed_origins


def test_wildcard_bind_adds_no_host() -> None:
    settings = transport_security(HTTPOptions(host="0.0.0.0", token=TOKEN))

    assert settings.allowed_hosts == transport_security(HTTPOptions()).allowed_hosts


def test_ipv6_bound_address_is_bracketed() -> None:
    settings = transport_security(HTTPOptions(host="2001:db8::5", token=TOKEN))

    assert "[2001:db8::5]:*" in settings.allowed_hosts
    assert "http://[2001:db8::5]:*" in settings.allowed_origins


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Authorization": f"Bearer {TOKEN}"}, 200),
        ({}, 401),
        ({"Authorization": TOKEN}, 401),
        ({"Authorization": f"bearer {TOKEN}"}, 200),
        ({"Authorization": f"Basic {TOKEN}"}, 401),
        ({"Authorization": f"Bearer  {TOKEN}"}, 401),
        ({"Authorization": f"Bearer {TOKEN[:-1]}"}, 401),
        ({"Authorization": "Bearer"}, 401),
    ],
)
async def test_middleware_checks_bearer_token(headers: dict[str, str], status: int) -> None:
    app = BearerTokenMiddleware(_ok, TOKEN)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://127.0.0.1") as client:
        response = await client.get("/mcp", headers=headers)

    assert response.status_code == status


async def test_middleware_rejects_repeated_authorization_header() -> None:
    app = BearerTokenMiddleware(_ok, TOKEN)
    headers = [("Authorization", f"Bearer {TOKEN}"), ("Authorization", "Bearer other")]

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://127.0.0.1") as client:
        response = await client.get("/mcp", headers=headers)

    assert response.status_code == 401
