"""Every request the client builds, checked against the operations of the Kamiwaza REST API 1.2.0 spec.

`httpx.MockTransport` replaces the platform. It records each request the client
sends and returns a body that is itself checked against the spec's response
schema, so the scripted responses cannot drift from the spec either.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from contract_platform import LOCAL_ROUTES
from openapi_contract import API_PREFIX, OpenAPISpec, load_spec

from kamiwaza_mcp.client import KamiwazaClient, PasswordLoginAuth, UnloadedDeployments
from kamiwaza_mcp.client.models import CreateModelDeployment, Deployment, Model
from kamiwaza_mcp.local.routes_cluster import LOCAL_EXTENSIONS

BASE = "https://kamiwaza.test/api"
MODEL_ID = "0b6f6a0e-7f43-4d0c-9a43-2c1d1e3f4a5b"
CONFIG_ID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
FILE_ID = "9a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d"
DEPLOYMENT_ID = "5f3c7a8e-1d2b-4c5d-8e9f-0a1b2c3d4e5f"
NEW_DEPLOYMENT_ID = "1e2d3c4b-5a69-4788-9a0b-1c2d3e4f5a6b"
INSTANCE_ID = "3b4c5d6e-7f80-4912-a3b4-c5d6e7f8091a"
TIMESTAMP = "2026-12-04T10:00:00Z"

# OpenAI-compatible generation routes on the platform's host; the REST API spec does not describe them.
RUNTIME_ROUTE = re.compile(r"^/runtime/models/[0-9a-f-]{36}/v1/(chat/completions|completions)$")

# Spec operations the client sends. The completeness test below fails when a
# client method sends one that is missing here, or when one here is never sent.
SPEC_OPERATIONS = {
    "GET /ping",
    "POST /auth/token",
    "GET /models/",
    "GET /models/{model_id}",
    "GET /models/{model_id}/configs",
    "POST /serving/start",
    "GET /serving/status",
    "POST /serving/estimate_model_vram",
    "POST /serving/deploy_model",
    "GET /serving/deployments",
    "GET /serving/deployment/{deployment_id}",
    "DELETE /serving/deployment/{deployment_id}",
    "GET /serving/deployment/{deployment_id}/status",
    "GET /serving/model_instances",
    "GET /serving/model_instance/{instance_id}",
    "GET /serving/health",
    "GET /serving/deployment/{deployment_id}/logs",
    "GET /serving/deployment/{deployment_id}/logs/patterns",
}
# Query parameters the client sends to spec operations that the spec does not declare: the
# local platform's extensions. A platform that follows the spec ignores them.
LOCAL_QUERY_PARAMETERS = {"GET /serving/deployment/{deployment_id}/logs": frozenset({"lines", "instance_id"})}


# Scripted platform


def model_body() -> dict[str, Any]:
    return {
        "id": MODEL_ID,
        "name": "tiny-llama",
        "repo_modelId": "acme/tiny-llama",
        "m_files": [{"name": "model.safetensors", "size": 1024, "id": FILE_ID}],
        "hosted": "local",
    }


def instance_body() -> dict[str, Any]:
    return {
        "id": INSTANCE_ID,
        "deployment_id": DEPLOYMENT_ID,
        "deployed_at": TIMESTAMP,
        "host_name": "node-1",
        "listen_port": 8000,
        "status": "DEPLOYED",
    }


def deployment_body(status: str = "DEPLOYED") -> dict[str, Any]:
    return {
        "id": DEPLOYMENT_ID,
        "m_id": MODEL_ID,
        "m_config_id": CONFIG_ID,
        "requested_at": TIMESTAMP,
        "created_at": TIMESTAMP,
        "status": status,
        "lb_port": 0,
        "instances": [instance_body()],
    }


def completion_body(chat: bool) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
    if chat:
        choice["message"] = {"role": "assistant", "content": "hello"}
    else:
        choice["text"] = "hello"
    return {
        "id": "cmpl-1",
        "object": "chat.completion" if chat else "text_completion",
        "created": 0,
        "model": "tiny-llama",
        "choices": [choice],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }


SPEC_ANSWERS: dict[str, tuple[int, Any]] = {
    "POST /auth/token": (200, {"access_token": "scripted-access-token", "expires_in": 3600}),
    "POST /serving/start": (200, {"status": "running", "address": "10.0.0.5:6379"}),
    "GET /serving/status": (200, {"status": "running", "nodes": []}),
    "GET /models/": (200, [model_body()]),
    "GET /models/{model_id}": (200, model_body()),
    "GET /models/{model_id}/configs": (
        200,
        [{"id": CONFIG_ID, "m_id": MODEL_ID, "default": True, "name": "default", "created_at": TIMESTAMP}],
    ),
    "POST /serving/estimate_model_vram": (
        200,
        {"computed_vram_estimate": 1_500_000_000, "highest_node_vram": 24_000_000_000},
    ),
    "POST /serving/deploy_model": (202, NEW_DEPLOYMENT_ID),
    "GET /serving/deployments": (200, [deployment_body()]),
    "GET /serving/deployment/{deployment_id}": (200, deployment_body()),
    "DELETE /serving/deployment/{deployment_id}": (200, True),
    "GET /serving/deployment/{deployment_id}/status": (200, "DEPLOYED"),
    "GET /serving/model_instances": (200, [instance_body()]),
    "GET /serving/model_instance/{instance_id}": (200, instance_body()),
    "GET /serving/health": (200, [{"deployment_id": DEPLOYMENT_ID, "health": "healthy"}]),
    "GET /serving/deployment/{deployment_id}/logs": (
        200,
        {
            "deployment_id": DEPLOYMENT_ID,
            "engine_type": "vllm",
            "log_file_path": "/var/log/kamiwaza/deployment.log",
            "logs": ["INFO starting engine", "INFO ready"],
            "total_lines_seen": 2,
            "current_lines_stored": 2,
            "compressed": False,
            "capture_active": True,
        },
    ),
    "GET /serving/deployment/{deployment_id}/logs/patterns": (
        200,
        {
            "deployment_id": DEPLOYMENT_ID,
            "patterns_detected": {"oom": False, "cuda_error": False},
            "failure_lines": [],
            "analysis_timestamp": TIMESTAMP,
        },
    ),
}


@dataclass
class SentRequest:
    """A request the client sent, with the route it was matched to and what is wrong with it."""

    route: str
    errors: list[str]


class ScriptedPlatform:
    """A platform of the spec's operations; `local_routes` adds the local platform's load and unload."""

    def __init__(self, spec: OpenAPISpec, *, local_routes: bool) -> None:
        self.spec = spec
        self.local_routes = local_routes
        self.sent: list[SentRequest] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if RUNTIME_ROUTE.match(path):
            return self._runtime(request)
        matched = self.spec.match(request.method, path)
        if matched is None:
            return self._local_route(request)

        operation, _ = matched
        errors = self.spec.request_errors(operation, _without_local_query(operation.label, request))
        self.sent.append(SentRequest(operation.label, errors))
        status, body = self._answer(operation.label)
        pointer = self.spec.response_pointer(operation, status)
        assert pointer is not None, f"the spec documents no {status} body for {operation.label}"
        assert self.spec.errors(pointer, body) == [], f"scripted answer to {operation.label} breaks the spec"
        return httpx.Response(status, json=body)

    def _answer(self, label: str) -> tuple[int, Any]:
        if label == "GET /ping":
            extensions = list(LOCAL_EXTENSIONS) if self.local_routes else []
            return 200, {"status": "ok", "extensions": extensions}
        return SPEC_ANSWERS[label]

    def _local_route(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix(API_PREFIX)
        template = re.sub(r"/deployment/[^/]+/", "/deployment/{deployment_id}/", path)
        route = f"{request.method} {template}"
        errors = (
            []
            if (request.method, template) in LOCAL_ROUTES
            else [f"{route} is in neither the spec nor the local routes"]
        )
        if not self.local_routes:
            errors.append(f"{route} was sent to a platform without the local routes")
        if request.content:
            errors.append(f"{route} takes no body, but {len(request.content)} bytes were sent")
        self.sent.append(SentRequest(route + " [local]", errors))
        if not self.local_routes:
            return httpx.Response(404, json={"detail": "Not Found"})
        status = "UNLOADED" if path.endswith("/unload") else "DEPLOYING"
        return httpx.Response(200, json=deployment_body(status))

    def _runtime(self, request: httpx.Request) -> httpx.Response:
        chat = request.url.path.endswith("/chat/completions")
        route = "POST /runtime/models/{deployment_id}/v1/" + ("chat/completions" if chat else "completions")
        errors = [] if request.method == "POST" else [f"{request.method} sent to {route}"]
        body = _json_object(request)
        for field in ("model", "messages" if chat else "prompt"):
            if field not in body:
                errors.append(f"{route} body lacks {field!r}")
        self.sent.append(SentRequest(route + " [runtime]", errors))
        return httpx.Response(200, json=completion_body(chat))


def _without_local_query(label: str, request: httpx.Request) -> httpx.Request:
    """Return `request` without the query parameters LOCAL_QUERY_PARAMETERS allows on `label`."""
    allowed = LOCAL_QUERY_PARAMETERS.get(label, frozenset())
    kept = [(name, value) for name, value in request.url.params.multi_items() if name not in allowed]
    return httpx.Request(
        request.method, request.url.copy_with(params=kept), headers=request.headers, content=request.content
    )


def _json_object(request: httpx.Request) -> dict[str, Any]:
    body = json.loads(request.content or b"null")
    assert isinstance(body, dict), f"{request.url.path} body is not a JSON object"
    return body


# Contract cases: each drives one client method against the scripted platform.

Run = Callable[[KamiwazaClient], Awaitable[object]]


@dataclass(frozen=True)
class ContractCase:
    """One call of a client method, and the routes it must send (labels as `SentRequest.route`)."""

    method: str
    run: Run
    routes: frozenset[str]
    local_routes: bool = False
    auth: Callable[[], httpx.Auth] | None = None

    @property
    def id(self) -> str:
        return f"{self.method}-{sorted(self.routes)[0]}"


def full_request() -> CreateModelDeployment:
    """A request with every optional field set away from its default."""
    return CreateModelDeployment(
        m_id=MODEL_ID,
        m_config_id=CONFIG_ID,
        m_file_id=FILE_ID,
        engine_name="vllm",
        duration=60,
        min_copies=2,
        starting_copies=2,
        max_copies=3,
        location="rack-1",
        lb_port=8443,
        autoscaling=True,
        force_cpu=True,
        node_resource_type="a100",
        max_concurrent_requests=8,
        vram_allocation=2.5e9,
        gpu_allocation=0.5,
        active_req_per_replica=4,
        m_version="1",
        engine="llamacpp",
        container="custom",
        deployment_target="host",
        runtime_env={"HF_HOME": "/data/hf", "UNSET_ME": None},
    )


def minimal_request() -> CreateModelDeployment:
    return CreateModelDeployment(m_id=MODEL_ID, m_config_id=CONFIG_ID)


def deployment() -> Deployment:
    return Deployment.model_validate(deployment_body())


def model() -> Model:
    return Model.model_validate(model_body())


def password_login() -> httpx.Auth:
    return PasswordLoginAuth(BASE + "/auth/token", "operator", "scripted-password")


def case(method: str, run: Run, *routes: str, **options: Any) -> ContractCase:
    return ContractCase(method, run, frozenset(routes), **options)


CASES = [
    case("start_ray", lambda c: c.start_ray(), "POST /serving/start"),
    case("start_ray", lambda c: c.start_ray("10.0.0.5:6379"), "POST /serving/start"),
    case("get_status", lambda c: c.get_status(), "GET /serving/status"),
    case("list_models", lambda c: c.list_models(), "GET /models/"),
    case("list_models", lambda c: c.list_models(), "POST /auth/token", "GET /models/", auth=password_login),
    case("get_model", lambda c: c.get_model(MODEL_ID), "GET /models/{model_id}"),
    case("list_model_configs", lambda c: c.list_model_configs(MODEL_ID), "GET /models/{model_id}/configs"),
    case("resolve_model", lambda c: c.resolve_model("acme/tiny-llama"), "GET /models/"),
    case("resolve_model", lambda c: c.resolve_model(MODEL_ID), "GET /models/{model_id}"),
    case("select_config", lambda c: c.select_config(MODEL_ID), "GET /models/{model_id}/configs"),
    case("select_config", lambda c: c.select_config(MODEL_ID, CONFIG_ID), "GET /models/{model_id}/configs"),
    case(
        "deployment_request",
        lambda c: c.deployment_request(model(), replicas=2, max_concurrent_requests=4),
        "GET /models/{model_id}/configs",
    ),
    case(
        "estimate_model_vram",
        lambda c: c.estimate_model_vram(minimal_request()),
        "POST /serving/estimate_model_vram",
    ),
    case(
        "estimate_model_vram",
        lambda c: c.estimate_model_vram(full_request()),
        "POST /serving/estimate_model_vram",
    ),
    case(
        "deploy_model",
        lambda c: c.deploy_model(minimal_request()),
        "GET /serving/deployments",
        "POST /serving/deploy_model",
    ),
    case(
        "deploy_model",
        lambda c: c.deploy_model(full_request()),
        "GET /serving/deployments",
        "POST /serving/deploy_model",
    ),
    case("list_deployments", lambda c: c.list_deployments(), "GET /serving/deployments"),
    case("list_deployments", lambda c: c.list_deployments(model_id=MODEL_ID), "GET /serving/deployments"),
    case(
        "get_deployment", lambda c: c.get_deployment(DEPLOYMENT_ID), "GET /serving/deployment/{deployment_id}"
    ),
    case(
        "get_deployment_status",
        lambda c: c.get_deployment_status(DEPLOYMENT_ID),
        "GET /serving/deployment/{deployment_id}/status",
    ),
    case(
        "stop_deployment",
        lambda c: c.stop_deployment(DEPLOYMENT_ID),
        "DELETE /serving/deployment/{deployment_id}",
    ),
    case(
        "stop_deployment",
        lambda c: c.stop_deployment(DEPLOYMENT_ID, force=True),
        "DELETE /serving/deployment/{deployment_id}",
    ),
    case("list_model_instances", lambda c: c.list_model_instances(), "GET /serving/model_instances"),
    case(
        "list_model_instances",
        lambda c: c.list_model_instances(DEPLOYMENT_ID),
        "GET /serving/model_instances",
    ),
    case(
        "get_model_instance",
        lambda c: c.get_model_instance(INSTANCE_ID),
        "GET /serving/model_instance/{instance_id}",
    ),
    case("get_health", lambda c: c.get_health(), "GET /serving/health"),
    case(
        "get_deployment_logs",
        lambda c: c.get_deployment_logs(DEPLOYMENT_ID),
        "GET /serving/deployment/{deployment_id}/logs",
    ),
    # `lines` and `instance_id` are local extensions, allowed by LOCAL_QUERY_PARAMETERS.
    case(
        "get_deployment_logs",
        lambda c: c.get_deployment_logs(DEPLOYMENT_ID, lines=50, instance_id=INSTANCE_ID),
        "GET /serving/deployment/{deployment_id}/logs",
    ),
    case(
        "get_deployment_log_patterns",
        lambda c: c.get_deployment_log_patterns(DEPLOYMENT_ID),
        "GET /serving/deployment/{deployment_id}/logs/patterns",
    ),
    case("supports_load_unload", lambda c: c.supports_load_unload(), "GET /ping"),
    case(
        "unload_model",
        lambda c: c.unload_model(DEPLOYMENT_ID),
        "GET /ping",
        "POST /serving/deployment/{deployment_id}/unload [local]",
        local_routes=True,
    ),
    case(
        "load_model",
        lambda c: c.load_model(DEPLOYMENT_ID),
        "GET /ping",
        "POST /serving/deployment/{deployment_id}/load [local]",
        local_routes=True,
    ),
    # Kamiwaza 1.2.0 has no unload route: the deployment is read, then stopped.
    case(
        "unload_model",
        lambda c: c.unload_model(DEPLOYMENT_ID),
        "GET /ping",
        "GET /serving/deployment/{deployment_id}",
        "DELETE /serving/deployment/{deployment_id}",
    ),
    # Nor a load route: a deployment that is DEPLOYED is only read back.
    case(
        "load_model",
        lambda c: c.load_model(DEPLOYMENT_ID),
        "GET /ping",
        "GET /serving/deployment/{deployment_id}",
    ),
    case(
        "chat_completion",
        lambda c: c.chat_completion(
            deployment(), {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}]}
        ),
        "POST /runtime/models/{deployment_id}/v1/chat/completions [runtime]",
    ),
    case(
        "completion",
        lambda c: c.completion(deployment(), {"model": "tiny-llama", "prompt": "hi", "max_tokens": 4}),
        "POST /runtime/models/{deployment_id}/v1/completions [runtime]",
    ),
]


async def send_case(contract_case: ContractCase) -> ScriptedPlatform:
    platform = ScriptedPlatform(load_spec(), local_routes=contract_case.local_routes)
    auth = contract_case.auth() if contract_case.auth else None
    api_key = None if auth else "scripted-api-key"
    transport = httpx.MockTransport(platform)
    async with KamiwazaClient(BASE, api_key=api_key, auth=auth, transport=transport, max_retries=0) as client:
        await contract_case.run(client)
    return platform


def request_methods() -> set[str]:
    """Return the client's public coroutine methods; each one sends platform requests."""
    methods = inspect.getmembers(KamiwazaClient, inspect.iscoroutinefunction)
    return {name for name, _ in methods if not name.startswith("_")} - {"aclose"}


# Tests


@pytest.mark.parametrize("contract_case", CASES, ids=lambda c: c.id)
async def test_request_matches_spec_operation(contract_case: ContractCase) -> None:
    platform = await send_case(contract_case)

    routes = {sent.route for sent in platform.sent}
    assert routes == contract_case.routes
    for sent in platform.sent:
        assert sent.errors == [], f"{sent.route}: {sent.errors}"


def test_every_client_method_has_contract_case() -> None:
    methods = request_methods()
    covered = {contract_case.method for contract_case in CASES}

    assert methods - covered == set(), "client methods that send requests without a contract case"
    assert covered - methods == set(), "contract cases for methods the client does not have"
    assert len(methods) >= 21


def test_contract_cases_cover_spec_operations() -> None:
    spec = load_spec()
    routes = set().union(*(contract_case.routes for contract_case in CASES))
    spec_routes = {route for route in routes if not route.endswith("]")}

    assert spec_routes == SPEC_OPERATIONS
    for route in spec_routes:
        method, template = route.split(" ", 1)
        assert spec.operation(method, template).label == route
    assert len(spec_routes) >= 16


def test_local_query_parameters_are_not_in_spec() -> None:
    spec = load_spec()

    for label, names in LOCAL_QUERY_PARAMETERS.items():
        method, template = label.split(" ", 1)
        declared = spec.parameters(spec.operation(method, template), "query")
        assert names.isdisjoint(declared), f"{label} declares {sorted(names & set(declared))} now"


async def test_logs_query_is_sent_only_when_given() -> None:
    sent: list[httpx.QueryParams] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.params)
        return httpx.Response(200, json=SPEC_ANSWERS["GET /serving/deployment/{deployment_id}/logs"][1])

    async with KamiwazaClient(BASE, transport=httpx.MockTransport(record)) as client:
        await client.get_deployment_logs(DEPLOYMENT_ID)
        await client.get_deployment_logs(DEPLOYMENT_ID, lines=7)
        await client.get_deployment_logs(DEPLOYMENT_ID, instance_id=INSTANCE_ID)

    assert [dict(params) for params in sent] == [{}, {"lines": "7"}, {"instance_id": INSTANCE_ID}]


def test_local_routes_are_not_in_spec() -> None:
    spec = load_spec()

    for method, template in sorted(LOCAL_ROUTES):
        path = API_PREFIX + template.replace("{deployment_id}", DEPLOYMENT_ID)
        assert spec.match(method, path) is None, f"{method} {template} is in the spec now"
    assert len(LOCAL_ROUTES) == len(LOCAL_EXTENSIONS)


class StoppedDeploymentPlatform(ScriptedPlatform):
    """A platform without the local routes whose deployment is STOPPED, as after an unload there."""

    def _answer(self, label: str) -> tuple[int, Any]:
        if label == "GET /serving/deployment/{deployment_id}":
            return 200, deployment_body("STOPPED")
        return super()._answer(label)


async def test_load_without_route_deploys_kept_request() -> None:
    platform = StoppedDeploymentPlatform(load_spec(), local_routes=False)
    transport = httpx.MockTransport(platform)
    unloaded = UnloadedDeployments()
    async with KamiwazaClient(BASE, transport=transport, unloaded=unloaded) as client:
        await client.unload_model(DEPLOYMENT_ID)
        await client.load_model(DEPLOYMENT_ID)

    routes = [sent.route for sent in platform.sent]
    assert routes == [
        "GET /ping",
        "GET /serving/deployment/{deployment_id}",
        "GET /serving/deployment/{deployment_id}",
        "GET /serving/deployment/{deployment_id}",
        "GET /serving/deployments",
        "POST /serving/deploy_model",
        "GET /serving/deployment/{deployment_id}",
    ]
    for sent in platform.sent:
        assert sent.errors == [], f"{sent.route}: {sent.errors}"
    entry = unloaded.get(BASE, DEPLOYMENT_ID)
    assert entry is not None
    assert entry.reloaded_as == NEW_DEPLOYMENT_ID


async def test_load_unload_support_is_probed_once() -> None:
    platform = ScriptedPlatform(load_spec(), local_routes=True)
    transport = httpx.MockTransport(platform)
    async with KamiwazaClient(BASE, transport=transport) as client:
        await client.unload_model(DEPLOYMENT_ID)
        await client.load_model(DEPLOYMENT_ID)

    routes = [sent.route for sent in platform.sent]
    assert routes.count("GET /ping") == 1
    assert len(routes) == 3


def test_create_model_deployment_fields_are_in_spec() -> None:
    spec = load_spec()
    schema = spec.document["components"]["schemas"]["CreateModelDeployment"]

    assert set(CreateModelDeployment.model_fields) == set(schema["properties"])
    assert set(full_request().model_dump(exclude_defaults=True)) == set(schema["properties"])


@pytest.mark.parametrize("field", ["m_id", "m_config_id", "m_file_id"])
def test_create_model_deployment_rejects_non_uuid(field: str) -> None:
    fields = {"m_id": MODEL_ID, "m_config_id": CONFIG_ID, field: "tiny-llama"}

    with pytest.raises(ValueError, match="expected a UUID"):
        CreateModelDeployment.model_validate(fields)


def test_create_model_deployment_canonicalizes_uuid() -> None:
    request = CreateModelDeployment(m_id=MODEL_ID.upper(), m_config_id=CONFIG_ID)

    assert request.m_id == MODEL_ID


def test_closed_spec_rejects_unknown_field() -> None:
    spec = load_spec()
    operation = spec.operation("GET", "/serving/deployment/{deployment_id}")
    pointer = spec.response_pointer(operation, 200)
    assert pointer is not None

    renamed = deployment_body()
    renamed["model_name"] = renamed.pop("m_id")

    errors = spec.errors(pointer, renamed)
    assert any("'m_id' is a required property" in error for error in errors)
    assert any("'model_name' was unexpected" in error for error in errors)


@pytest.mark.parametrize(
    ("schema", "value"),
    [("UIModelDeployment", {"requested_at": "yesterday"}), ("ModelInstance", {"deployment_id": "tiny"})],
)
def test_format_checks_are_active(schema: str, value: dict[str, Any]) -> None:
    # date-time is checked only when rfc3339-validator is installed; uuid always is.
    spec = load_spec()
    body = {**deployment_body(), "instances": []} if schema == "UIModelDeployment" else instance_body()
    body.update(value)

    (field,) = value
    errors = spec.errors(f"/components/schemas/{schema}", body)
    assert errors == [f"at {field}: {value[field]!r} is not a {_format_of(field)!r}"]


def _format_of(field: str) -> str:
    return "date-time" if field.endswith("_at") else "uuid"
