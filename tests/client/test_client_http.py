"""The client against scripted platform answers (httpx.MockTransport stands in for the platform)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from kamiwaza_mcp.client import (
    APIError,
    AuthenticationError,
    DeploymentError,
    InvalidRequestError,
    KamiwazaClient,
    KamiwazaError,
    NotFoundError,
    PlatformConnectionError,
    PlatformTimeoutError,
    ResourceError,
)
from kamiwaza_mcp.client.models import CreateModelDeployment, Deployment

BASE = "https://kamiwaza.test/api"
SECRET = "kz-test-secret-token-0123456789"
DEPLOYMENT_ID = "5f3c7a8e-1d2b-4c5d-8e9f-0a1b2c3d4e5f"
MODEL_ID = "0b6f6a0e-7f43-4d0c-9a43-2c1d1e3f4a5b"
CONFIG_ID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"

Handler = Callable[[httpx.Request], httpx.Response]


def make_client(handler: Handler, **kwargs: Any) -> KamiwazaClient:
    return KamiwazaClient(BASE, api_key=SECRET, transport=httpx.MockTransport(handler), **kwargs)


def deployment_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": DEPLOYMENT_ID,
        "m_id": MODEL_ID,
        "m_config_id": CONFIG_ID,
        "requested_at": "2026-12-04T10:00:00Z",
        "created_at": "2026-12-04T10:00:00Z",
        "status": "DEPLOYED",
        "instances": [],
    }
    body.update(overrides)
    return body


async def test_requests_carry_bearer_and_api_prefix() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json="DEPLOYED")

    async with make_client(handler) as client:
        status = await client.get_deployment_status(DEPLOYMENT_ID)

    assert status == "DEPLOYED"
    assert seen[0].url.path == f"/api/serving/deployment/{DEPLOYMENT_ID}/status"
    assert seen[0].headers["authorization"] == f"Bearer {SECRET}"


@pytest.mark.parametrize(
    ("status", "detail", "error_type"),
    [
        (401, "Not authenticated", AuthenticationError),
        (403, "Forbidden", AuthenticationError),
        (404, "Deployment not found", NotFoundError),
        (500, "Deployment 5f3c not found", NotFoundError),
        (500, "database is locked", APIError),
        (409, "deployment is STOPPED", DeploymentError),
        (429, "too many requests", ResourceError),
        (507, "insufficient storage", ResourceError),
        (422, [{"loc": ["body", "m_id"], "msg": "Field required", "type": "missing"}], APIError),
        (400, "bad request", APIError),
    ],
)
async def test_status_codes_map_to_errors(status: int, detail: Any, error_type: type[APIError]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"detail": detail})

    async with make_client(handler, max_retries=0) as client:
        with pytest.raises(error_type) as caught:
            await client.get_deployment(DEPLOYMENT_ID)

    error = caught.value
    assert type(error) is error_type
    assert error.status_code == status
    assert error.detail == detail
    assert error.path == f"/api/serving/deployment/{DEPLOYMENT_ID}"
    assert SECRET not in str(error)


async def test_html_page_names_the_missing_api_prefix() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, text="<html><body>Kamiwaza</body></html>", headers={"content-type": "text/html"}
        )

    async with make_client(handler) as client:
        with pytest.raises(APIError) as caught:
            await client.list_deployments()

    assert "add /api to KAMIWAZA_BASE_URL" in str(caught.value)


async def test_malformed_json_is_an_api_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"{not json", headers={"content-type": "application/json"})

    async with make_client(handler) as client:
        with pytest.raises(APIError, match="not valid JSON"):
            await client.list_deployments()


async def test_get_is_retried_after_503() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls < 3:
            return httpx.Response(503, json={"detail": "warming up"})
        return httpx.Response(200, json=[deployment_body()])

    async with make_client(handler, max_retries=2) as client:
        deployments = await client.list_deployments()

    assert calls == 3
    assert [d.id for d in deployments] == [DEPLOYMENT_ID]


async def test_deploy_is_never_retried() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        if request.method == "GET":
            return httpx.Response(200, json=[])
        calls += 1
        return httpx.Response(503, json={"detail": "busy"})

    request = CreateModelDeployment(m_id=MODEL_ID, m_config_id=CONFIG_ID)
    async with make_client(handler, max_retries=3) as client:
        with pytest.raises(APIError):
            await client.deploy_model(request)

    assert calls == 1


async def test_deploy_false_is_a_deployment_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json=[])
        assert json.loads(request.content)["m_id"] == MODEL_ID
        return httpx.Response(202, json=False)

    async with make_client(handler) as client:
        with pytest.raises(DeploymentError, match=MODEL_ID):
            await client.deploy_model(CreateModelDeployment(m_id=MODEL_ID, m_config_id=CONFIG_ID))


async def test_deploy_false_reports_recorded_reason() -> None:
    deployments: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json=deployments)
        # A legacy release records the failed deployment, then returns false.
        deployments.append(
            deployment_body(
                status="FAILED", last_error_code="OOM", last_error_message="needs 9 GiB, has 8 GiB"
            )
        )
        return httpx.Response(202, json=False)

    async with make_client(handler) as client:
        with pytest.raises(DeploymentError) as caught:
            await client.deploy_model(CreateModelDeployment(m_id=MODEL_ID, m_config_id=CONFIG_ID))

    error = caught.value
    assert error.detail == "OOM: needs 9 GiB, has 8 GiB"
    assert "rejected the deployment of model" in error.message
    assert error.message.endswith(": OOM: needs 9 GiB, has 8 GiB")
    assert error.path == "/api/serving/deploy_model"


async def test_deploy_false_ignores_older_failures() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json=[deployment_body(status="FAILED", last_error_code="OOM")])
        return httpx.Response(202, json=False)

    async with make_client(handler) as client:
        with pytest.raises(DeploymentError) as caught:
            await client.deploy_model(CreateModelDeployment(m_id=MODEL_ID, m_config_id=CONFIG_ID))

    assert caught.value.detail is None
    assert "OOM" not in caught.value.message


async def test_deploy_returns_new_uuid() -> None:
    new_id = "1e2d3c4b-5a69-4788-9a0b-1c2d3e4f5a6b"

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json=[])
        return httpx.Response(202, json=new_id)

    async with make_client(handler) as client:
        deployment_id = await client.deploy_model(CreateModelDeployment(m_id=MODEL_ID, m_config_id=CONFIG_ID))

    assert deployment_id == new_id


@pytest.mark.parametrize("body", ["deploying", 1, None, {"id": DEPLOYMENT_ID}])
async def test_deploy_unexpected_answer_is_api_error(body: Any) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json=[])
        return httpx.Response(202, json=body)

    async with make_client(handler) as client:
        with pytest.raises(APIError, match="unexpected response from serving/deploy_model") as caught:
            await client.deploy_model(CreateModelDeployment(m_id=MODEL_ID, m_config_id=CONFIG_ID))

    assert type(caught.value) is APIError


async def test_estimate_map_is_returned_whole() -> None:
    estimate = {
        "computed_vram_estimate": 1.5e9,
        "highest_node_vram": 2.4e10,
        "estimate_source": "safetensors",
    }

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=estimate)

    async with make_client(handler) as client:
        body = await client.estimate_model_vram(CreateModelDeployment(m_id=MODEL_ID, m_config_id=CONFIG_ID))

    assert body == estimate


@pytest.mark.parametrize("body", [1.5e9, "1.5 GB", [1.5e9]])
async def test_estimate_not_a_map_is_api_error(body: Any) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=body)

    async with make_client(handler) as client:
        with pytest.raises(APIError, match="serving/estimate_model_vram"):
            await client.estimate_model_vram(CreateModelDeployment(m_id=MODEL_ID, m_config_id=CONFIG_ID))


async def test_bare_status_string_is_returned() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json="DEPLOYING")

    async with make_client(handler) as client:
        status = await client.get_deployment_status(DEPLOYMENT_ID)

    assert status == "DEPLOYING"


@pytest.mark.parametrize("body", [{"status": "DEPLOYED"}, ["DEPLOYED"], None])
async def test_status_not_a_string_is_api_error(body: Any) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=body)

    async with make_client(handler) as client:
        with pytest.raises(APIError, match="unexpected response"):
            await client.get_deployment_status(DEPLOYMENT_ID)


@pytest.mark.parametrize(
    "detail",
    [
        "Deployment 5f3c7a8e-1d2b-4c5d-8e9f-0a1b2c3d4e5f not found",
        "No such deployment",
        "deployment does not exist",
    ],
)
async def test_500_not_found_detail_is_not_found_error(detail: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"detail": detail})

    async with make_client(handler, max_retries=0) as client:
        with pytest.raises(NotFoundError) as caught:
            await client.get_deployment(DEPLOYMENT_ID)

    assert caught.value.status_code == 500
    assert caught.value.hint == "call list_deployments to see the deployments"


async def test_connection_refused_is_a_connection_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    async with make_client(handler, max_retries=1) as client:
        with pytest.raises(PlatformConnectionError) as caught:
            await client.get_status()

    assert type(caught.value) is PlatformConnectionError
    assert "GET /api/serving/status" in str(caught.value)


async def test_read_timeout_is_a_timeout_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    async with make_client(handler, max_retries=0) as client:
        with pytest.raises(
            PlatformTimeoutError, match=r"timed out waiting for the response \(read timeout 30 s\)"
        ):
            await client.get_status()


async def test_non_uuid_id_is_rejected_before_sending() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"nothing should be sent, got {request.url}")

    async with make_client(handler) as client:
        with pytest.raises(InvalidRequestError) as caught:
            await client.get_deployment("../models")

    assert "'../models'" in str(caught.value)
    assert "list_deployments" in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"access_path": "/runtime/custom/abc"}, "https://kamiwaza.test/runtime/custom/abc/v1"),
        ({"access_path": "https://other.test/m/v1"}, "https://other.test/m/v1"),
        ({"lb_port": 61100}, "https://kamiwaza.test:61100/v1"),
        ({"lb_port": 443}, f"https://kamiwaza.test/runtime/models/{DEPLOYMENT_ID}/v1"),
        ({}, f"https://kamiwaza.test/runtime/models/{DEPLOYMENT_ID}/v1"),
    ],
)
def test_endpoint_url_follows_routing_rules(overrides: dict[str, Any], expected: str) -> None:
    client = KamiwazaClient(BASE)
    deployment = Deployment.model_validate(deployment_body(**overrides))

    assert client.endpoint_url(deployment) == expected


@pytest.mark.parametrize("base_url", ["kamiwaza.test/api", "ftp://kamiwaza.test/api", ""])
def test_invalid_base_url_names_the_value(base_url: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        KamiwazaClient(base_url)

    assert repr(base_url) in str(caught.value)
    assert "KAMIWAZA_BASE_URL" in str(caught.value)


def models_handler(request: httpx.Request) -> httpx.Response:
    models = [
        {"id": MODEL_ID, "name": "Qwen3-4B", "repo_modelId": "Qwen/Qwen3-4B"},
        {"id": "1b6f6a0e-7f43-4d0c-9a43-2c1d1e3f4a5b", "name": "shared-name", "repo_modelId": "a/shared"},
        {"id": "2b6f6a0e-7f43-4d0c-9a43-2c1d1e3f4a5b", "name": "shared-name", "repo_modelId": "b/shared"},
    ]
    return httpx.Response(200, json=models)


@pytest.mark.parametrize("reference", ["Qwen/Qwen3-4B", "qwen/qwen3-4b", "Qwen3-4B"])
async def test_resolve_model_by_repo_id_or_name(reference: str) -> None:
    async with make_client(models_handler) as client:
        model = await client.resolve_model(reference)

    assert model.id == MODEL_ID


async def test_resolve_model_ambiguous_lists_candidates() -> None:
    async with make_client(models_handler) as client:
        with pytest.raises(InvalidRequestError) as caught:
            await client.resolve_model("shared-name")

    assert "1b6f6a0e-7f43-4d0c-9a43-2c1d1e3f4a5b" in str(caught.value)
    assert "2b6f6a0e-7f43-4d0c-9a43-2c1d1e3f4a5b" in str(caught.value)


async def test_resolve_model_unknown_is_not_found() -> None:
    async with make_client(models_handler) as client:
        with pytest.raises(NotFoundError, match="list_models"):
            await client.resolve_model("nope/none")


def test_every_error_kind_is_its_class_name() -> None:
    error = NotFoundError("no deployment x", hint="call list_deployments")

    assert isinstance(error, KamiwazaError)
    assert error.kind == "NotFoundError"
    assert str(error) == "no deployment x; call list_deployments"


async def test_ambiguous_deploy_failure_finds_created_deployment() -> None:
    deployments: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json=deployments)
        # The platform creates the deployment, then the connection drops before the answer.
        deployments.append(deployment_body(m_config_id=CONFIG_ID))
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)

    async with make_client(handler) as client:
        deployment_id = await client.deploy_model(CreateModelDeployment(m_id=MODEL_ID, m_config_id=CONFIG_ID))

    assert deployment_id == DEPLOYMENT_ID
    assert len(deployments) == 1


async def test_ambiguous_deploy_failure_without_record_asks_to_check() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json=[])
        raise httpx.ReadTimeout("timed out", request=request)

    async with make_client(handler) as client:
        with pytest.raises(DeploymentError) as caught:
            await client.deploy_model(CreateModelDeployment(m_id=MODEL_ID, m_config_id=CONFIG_ID))

    assert "new deployments of this model: none" in str(caught.value)
    assert "list_deployments" in str(caught.value)


async def test_base_url_without_api_is_corrected() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/ping":
            return httpx.Response(200, json={"status": "ok"})
        if request.url.path.startswith("/api/"):
            return httpx.Response(200, json=[])
        return httpx.Response(200, text="<html>dashboard</html>", headers={"content-type": "text/html"})

    client = KamiwazaClient("https://kamiwaza.test", transport=httpx.MockTransport(handler))
    async with client:
        deployments = await client.list_deployments()

    assert deployments == []
    assert client.base_url == "https://kamiwaza.test/api"


async def test_password_login_renews_once_on_401() -> None:
    from kamiwaza_mcp.client import PasswordLoginAuth

    logins = 0
    valid_token = "token-1"

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal logins, valid_token
        if request.url.path == "/api/auth/token":
            logins += 1
            assert b"username=ops" in request.content
            return httpx.Response(200, json={"access_token": f"token-{logins}", "expires_in": 60})
        if request.headers.get("authorization") != f"Bearer {valid_token}":
            return httpx.Response(401, json={"detail": "expired"})
        return httpx.Response(200, json="DEPLOYED")

    auth = PasswordLoginAuth(f"{BASE}/auth/token", "ops", SECRET)
    async with KamiwazaClient(BASE, auth=auth, transport=httpx.MockTransport(handler)) as client:
        assert await client.get_deployment_status(DEPLOYMENT_ID) == "DEPLOYED"
        valid_token = "token-2"  # the platform revokes the first token
        assert await client.get_deployment_status(DEPLOYMENT_ID) == "DEPLOYED"
        valid_token = "never"  # every later login is rejected
        with pytest.raises(AuthenticationError):
            await client.get_deployment_status(DEPLOYMENT_ID)

    assert logins == 3
    assert SECRET not in repr(auth)
