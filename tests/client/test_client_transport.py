"""Retries, credential hints, configuration choice and endpoint routing of the client.

httpx.MockTransport replaces the platform; the same behaviour against
real misbehaving servers is in tests/faults.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from kamiwaza_mcp.client import (
    APIError,
    AuthenticationError,
    BearerAuth,
    InvalidRequestError,
    KamiwazaClient,
    NotFoundError,
    PasswordLoginAuth,
    PlatformConnectionError,
    PlatformTimeoutError,
)
from kamiwaza_mcp.client.models import Deployment, Model

BASE = "https://kamiwaza.test/api"
DEPLOYMENT_ID = "5f3c7a8e-1d2b-4c5d-8e9f-0a1b2c3d4e5f"
MODEL_ID = "0b6f6a0e-7f43-4d0c-9a43-2c1d1e3f4a5b"
FIRST_CONFIG = "6d2f9a70-1c3b-4e5d-8f9a-0b1c2d3e4f50"
SECOND_CONFIG = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
TIMESTAMP = "2026-12-04T10:00:00Z"

Handler = Callable[[httpx.Request], httpx.Response]


def deployment_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": DEPLOYMENT_ID,
        "m_id": MODEL_ID,
        "m_config_id": FIRST_CONFIG,
        "requested_at": TIMESTAMP,
        "created_at": TIMESTAMP,
        "status": "DEPLOYED",
    }
    body.update(overrides)
    return body


class FailingThenOk:
    """Fail the first `failures` requests with `fail`, then return `body` with a 200; count the requests."""

    def __init__(self, fail: Callable[[httpx.Request], httpx.Response], failures: int, body: Any) -> None:
        self.fail = fail
        self.failures = failures
        self.body = body
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.calls <= self.failures:
            return self.fail(request)
        return httpx.Response(200, json=self.body)


def status(code: int) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(code, json={"detail": f"status {code}"})


def raising(error: type[httpx.TransportError], text: str = "") -> Callable[[httpx.Request], httpx.Response]:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error(text, request=request)

    return fail


def tls_failure(request: httpx.Request) -> httpx.Response:
    cause = ssl.SSLCertVerificationError("certificate verify failed: self-signed certificate")
    raise httpx.ConnectError(f"[SSL: CERTIFICATE_VERIFY_FAILED] {cause}", request=request) from cause


def client_of(handler: Handler, **options: Any) -> KamiwazaClient:
    return KamiwazaClient(BASE, api_key="kz-test", transport=httpx.MockTransport(handler), **options)


# Retries


@pytest.mark.parametrize(
    "fail",
    [
        status(502),
        status(503),
        status(504),
        raising(httpx.ConnectError, "Connection refused"),
        raising(httpx.ReadError),
        raising(httpx.RemoteProtocolError, "Server disconnected without sending a response."),
    ],
    ids=["502", "503", "504", "connect-error", "read-error", "disconnected"],
)
async def test_get_is_retried(fail: Callable[[httpx.Request], httpx.Response]) -> None:
    handler = FailingThenOk(fail, failures=2, body=[])

    async with client_of(handler, max_retries=2) as client:
        assert await client.list_deployments() == []

    assert handler.calls == 3


@pytest.mark.parametrize(
    ("fail", "error_type"),
    [
        (status(500), APIError),
        (status(404), NotFoundError),
        (raising(httpx.ReadTimeout), PlatformTimeoutError),
        (raising(httpx.ConnectTimeout), PlatformTimeoutError),
        (tls_failure, PlatformConnectionError),
    ],
    ids=["500", "404", "read-timeout", "connect-timeout", "tls"],
)
async def test_get_is_not_retried(
    fail: Callable[[httpx.Request], httpx.Response], error_type: type[Exception]
) -> None:
    handler = FailingThenOk(fail, failures=1, body=[])

    async with client_of(handler, max_retries=2) as client:
        with pytest.raises(error_type):
            await client.list_deployments()

    assert handler.calls == 1


@pytest.mark.parametrize(
    "fail", [status(503), raising(httpx.ConnectError, "Connection refused")], ids=["503", "connect"]
)
async def test_stop_is_retried(fail: Callable[[httpx.Request], httpx.Response]) -> None:
    handler = FailingThenOk(fail, failures=1, body=True)

    async with client_of(handler, max_retries=2) as client:
        assert await client.stop_deployment(DEPLOYMENT_ID) is True

    assert handler.calls == 2


@pytest.mark.parametrize(
    "operation",
    ["start_ray", "chat_completion", "completion"],
)
async def test_other_writes_are_not_retried(operation: str) -> None:
    handler = FailingThenOk(status(503), failures=1, body={})
    deployment = Deployment.model_validate(deployment_body())
    calls = {
        "start_ray": lambda c: c.start_ray(),
        "chat_completion": lambda c: c.chat_completion(deployment, {"messages": []}),
        "completion": lambda c: c.completion(deployment, {"prompt": "hi"}),
    }

    async with client_of(handler, max_retries=2) as client:
        with pytest.raises(APIError):
            await calls[operation](client)

    assert handler.calls == 1


async def test_native_unload_is_not_retried() -> None:
    posts = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal posts
        if request.url.path == "/api/ping":
            return httpx.Response(200, json={"extensions": ["deployment_load", "deployment_unload"]})
        posts += 1
        return httpx.Response(503, json={"detail": "busy"})

    async with client_of(handler, max_retries=2) as client:
        with pytest.raises(APIError):
            await client.unload_model(DEPLOYMENT_ID)

    assert posts == 1


# Credentials


@pytest.mark.parametrize(
    ("auth", "status_code", "hint"),
    [
        (
            BearerAuth("kz-test"),
            401,
            "set KAMIWAZA_API_KEY (or KAMIWAZA_API_TOKEN) to a valid, unexpired token",
        ),
        (
            BearerAuth("kz-test"),
            403,
            "the token in KAMIWAZA_API_KEY lacks access to this route; use a token of an account that has it",
        ),
        (
            PasswordLoginAuth(f"{BASE}/auth/token", "operator", "pw"),
            401,
            "check KAMIWAZA_USERNAME and KAMIWAZA_PASSWORD: the platform rejected the login or its token",
        ),
        (
            PasswordLoginAuth(f"{BASE}/auth/token", "operator", "pw"),
            403,
            "the user in KAMIWAZA_USERNAME lacks access to this route; use an account that has it",
        ),
        (
            None,
            401,
            "the platform requires a login: set KAMIWAZA_API_KEY, or KAMIWAZA_USERNAME and KAMIWAZA_PASSWORD",
        ),
    ],
    ids=["key-401", "key-403", "login-401", "login-403", "none-401"],
)
async def test_auth_error_names_variable(auth: httpx.Auth | None, status_code: int, hint: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/auth/token":
            return httpx.Response(200, json={"access_token": "at", "expires_in": 60})
        return httpx.Response(status_code, json={"detail": "denied"})

    transport = httpx.MockTransport(handler)
    async with KamiwazaClient(BASE, auth=auth, transport=transport) as client:
        with pytest.raises(AuthenticationError) as caught:
            await client.list_models()

    assert caught.value.hint == hint
    assert caught.value.status_code == status_code


async def test_failed_login_is_not_repeated() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path == "/api/auth/token":
            return httpx.Response(401, json={"detail": "Invalid username or password"})
        return httpx.Response(401, json={"detail": "Not authenticated"})

    auth = PasswordLoginAuth(f"{BASE}/auth/token", "operator", "wrong")
    async with KamiwazaClient(BASE, auth=auth, transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(AuthenticationError):
            await client.list_models()

    assert seen == ["/api/auth/token", "/api/models/"]


async def test_login_carries_request_timeout() -> None:
    login_timeouts: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/auth/token":
            login_timeouts.append(request.extensions.get("timeout"))
            return httpx.Response(200, json={"access_token": "at", "expires_in": 60})
        return httpx.Response(200, json=[])

    auth = PasswordLoginAuth(f"{BASE}/auth/token", "operator", "pw")
    async with KamiwazaClient(BASE, auth=auth, transport=httpx.MockTransport(handler)) as client:
        await client.list_models()

    assert login_timeouts == [{"connect": 5.0, "read": 30.0, "write": 30.0, "pool": 30.0}]


# Error details


async def test_validation_detail_is_readable() -> None:
    detail = [
        {"type": "missing", "loc": ["body", "m_id"], "msg": "Field required"},
        {"type": "greater_than_equal", "loc": ["body", "min_copies"], "msg": "Input should be >= 1"},
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(422, json={"detail": detail})

    async with client_of(handler) as client:
        with pytest.raises(APIError) as caught:
            await client.list_models()

    assert caught.value.message == (
        "GET /api/models/ failed with HTTP 422: body.m_id: Field required; body.min_copies: Input should be >= 1"
    )
    assert caught.value.detail == detail


async def test_echoed_token_is_redacted() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"detail": f"bad header {request.headers['authorization']}"})

    async with client_of(handler) as client:
        with pytest.raises(AuthenticationError) as caught:
            await client.list_models()

    assert caught.value.message == "GET /api/models/ failed with HTTP 401: bad header Bearer [secure]"
    assert "kz-test" not in str(caught.value)


async def test_long_detail_is_cut() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"detail": "x" * 5000})

    async with client_of(handler, max_retries=0) as client:
        with pytest.raises(APIError) as caught:
            await client.list_models()

    assert caught.value.message == "GET /api/models/ failed with HTTP 500: " + "x" * 500 + "…"


async def test_html_404_points_at_base_url() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, text="<html>Not Found</html>", headers={"content-type": "text/html"})

    async with client_of(handler) as client:
        with pytest.raises(APIError) as caught:
            await client.get_deployment(DEPLOYMENT_ID)

    assert type(caught.value) is APIError
    assert caught.value.hint == "check that KAMIWAZA_BASE_URL is the platform's API base URL, ending in /api"


async def test_ping_404_means_no_load_route() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"detail": "Not Found"})

    async with client_of(handler) as client:
        assert await client.supports_load_unload() is False


# Configuration choice


def configs_handler(configs: list[dict[str, Any]]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == f"/api/models/{MODEL_ID}/configs"
        return httpx.Response(200, json=configs)

    return handler


def config_body(config_id: str, name: str, *, default: bool) -> dict[str, Any]:
    return {"id": config_id, "m_id": MODEL_ID, "name": name, "default": default}


@pytest.mark.parametrize(
    ("configs", "chosen", "expected"),
    [
        (
            [config_body(FIRST_CONFIG, "a", default=False), config_body(SECOND_CONFIG, "b", default=True)],
            None,
            SECOND_CONFIG,
        ),
        (
            [config_body(FIRST_CONFIG, "a", default=False), config_body(SECOND_CONFIG, "b", default=False)],
            None,
            FIRST_CONFIG,
        ),
        (
            [config_body(FIRST_CONFIG, "a", default=False), config_body(SECOND_CONFIG, "b", default=True)],
            FIRST_CONFIG,
            FIRST_CONFIG,
        ),
        ([config_body(FIRST_CONFIG, "a", default=True)], FIRST_CONFIG.upper(), FIRST_CONFIG),
    ],
    ids=["default", "first-without-default", "chosen", "chosen-upper-case"],
)
async def test_select_config(configs: list[dict[str, Any]], chosen: str | None, expected: str) -> None:
    async with client_of(configs_handler(configs)) as client:
        config = await client.select_config(MODEL_ID, chosen)

    assert config.id == expected


async def test_select_config_rejects_non_uuid() -> None:
    async with client_of(configs_handler([config_body(FIRST_CONFIG, "a", default=True)])) as client:
        with pytest.raises(InvalidRequestError) as caught:
            await client.select_config(MODEL_ID, "small")

    assert str(caught.value) == (
        "invalid config id 'small': expected a UUID; omit config_id to use the model's default configuration"
    )


async def test_deployment_request_uses_config() -> None:
    configs = [{**config_body(FIRST_CONFIG, "a", default=True), "m_file_id": SECOND_CONFIG}]
    model = Model.model_validate({"id": MODEL_ID, "name": "tiny-llama"})

    async with client_of(configs_handler(configs)) as client:
        request = await client.deployment_request(
            model, replicas=3, max_concurrent_requests=2, engine_name="vllm"
        )

    assert json.loads(request.model_dump_json(exclude_defaults=True)) == {
        "m_id": MODEL_ID,
        "m_config_id": FIRST_CONFIG,
        "m_file_id": SECOND_CONFIG,
        "min_copies": 3,
        "starting_copies": 3,
        "max_concurrent_requests": 2,
        "engine_name": "vllm",
    }


# Endpoint routing: access_path when set, else the load-balancer port unless 0 or 443, else the runtime path.


@pytest.mark.parametrize(
    ("base", "overrides", "expected"),
    [
        (
            BASE,
            {"access_path": "/runtime/custom/abc", "lb_port": 61100},
            "https://kamiwaza.test/runtime/custom/abc/v1",
        ),
        (BASE, {"access_path": "/runtime/custom/abc/v1/"}, "https://kamiwaza.test/runtime/custom/abc/v1"),
        (BASE, {"access_path": "runtime/custom/abc"}, "https://kamiwaza.test/runtime/custom/abc/v1"),
        (BASE, {"access_path": "", "lb_port": 61100}, "https://kamiwaza.test:61100/v1"),
        ("http://10.0.0.5:7777/api", {"lb_port": 61100}, "http://10.0.0.5:61100/v1"),
        (
            "http://10.0.0.5:7777/api",
            {"lb_port": 0},
            f"http://10.0.0.5:7777/runtime/models/{DEPLOYMENT_ID}/v1",
        ),
        (
            "https://kamiwaza.test:8443/api",
            {"lb_port": 443},
            f"https://kamiwaza.test:8443/runtime/models/{DEPLOYMENT_ID}/v1",
        ),
    ],
    ids=[
        "access-path-wins-over-port",
        "access-path-ending-in-v1",
        "access-path-without-slash",
        "empty-access-path-uses-port",
        "port-replaces-base-port",
        "port-0-keeps-base-port",
        "port-443-keeps-base-port",
    ],
)
def test_endpoint_url_routing(base: str, overrides: dict[str, Any], expected: str) -> None:
    client = KamiwazaClient(base)
    deployment = Deployment.model_validate(deployment_body(**overrides))

    assert client.endpoint_url(deployment) == expected
