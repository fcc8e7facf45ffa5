"""Every response body of the real local platform, checked against the Kamiwaza REST API 1.2.0 spec.

The platform runs in-process behind `httpx.ASGITransport` with a copy of the tiny
model. The table of requests needs no worker. The lifecycle test starts one worker
for one deployment and checks every serving route in each state it passes through.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import pytest_asyncio
from contract_platform import LOCAL_ROUTES, PlatformHost, response_errors, spec_routes_of
from openapi_contract import API_PREFIX, load_spec

from kamiwaza_mcp.local import LocalPlatform, LocalPlatformSettings
from kamiwaza_mcp.local.catalog import model_id_for_path

pytestmark = pytest.mark.asyncio(loop_scope="module")

API = "http://kamiwaza.local/api"
MISSING = "00000000-0000-4000-8000-000000000000"
# One tiny-model worker starts in about 5 s on a 2-core CPU machine; the bound leaves room for a slow CI run.
DEPLOY_TIMEOUT = 120


@dataclass(frozen=True)
class Ids:
    model_id: str
    config_id: str
    file_id: str
    model_path: str
    values: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    """One request of the table: path and body may name `{model_id}`, `{config_id}`, `{file_id}`,
    `{model_path}` and `{missing}`."""

    method: str
    path: str
    status: int
    body: Any = None

    @property
    def id(self) -> str:
        return f"{self.method} {self.path} {self.status}"


def fill(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**values)
    if isinstance(value, dict):
        return {key: fill(item, values) for key, item in value.items()}
    return value


DEPLOY = {"m_id": "{model_id}", "m_config_id": "{config_id}"}

ROWS = [
    # Documented success bodies
    Row("GET", "ping", 200),
    Row("GET", "models/", 200),
    Row("GET", "models/{model_id}", 200),
    Row("GET", "models/{model_id}/configs", 200),
    Row("POST", "models/search/", 200, {"query": "contract"}),
    Row("POST", "models/search/", 200, {"query": "contract-llama", "exact": True, "limit": 1}),
    Row("POST", "models/register", 200, {"path": "{model_path}"}),
    Row("GET", "serving/status", 200),
    Row("POST", "serving/estimate_model_vram", 200, DEPLOY),
    Row(
        "POST",
        "serving/estimate_model_vram",
        200,
        {
            **DEPLOY,
            "m_file_id": "{file_id}",
            "starting_copies": 2,
            "max_concurrent_requests": 4,
            "force_cpu": True,
        },
    ),
    Row("GET", "serving/deployments", 200),
    Row("GET", "serving/deployments?model_id={model_id}", 200),
    Row("GET", "serving/model_instances", 200),
    Row("GET", "serving/health", 200),
    Row("GET", "serving/logs/transformers", 200),
    Row("GET", "serving/logs/no-such-engine", 200),
    # Validation errors
    Row("POST", "serving/start", 422, {"runtime_env": "not-a-map"}),
    Row("POST", "serving/deploy_model", 422, {}),
    Row("POST", "serving/deploy_model", 422, {"m_id": "contract-llama", "m_config_id": "{config_id}"}),
    Row("POST", "serving/deploy_model", 422, {**DEPLOY, "min_copies": 2, "starting_copies": 1}),
    Row("POST", "serving/estimate_model_vram", 422, {"m_id": "{model_id}"}),
    Row("POST", "models/search/", 422, {}),
    Row("POST", "models/register", 422, {}),
    Row("GET", "serving/deployments?model_id=contract-llama", 422),
    Row("GET", "serving/model_instances?deployment_id=contract-llama", 422),
    Row("DELETE", "serving/deployment/{missing}?force=maybe", 422),
    # Rejected inputs
    Row("POST", "models/register", 400, {"path": "relative/folder"}),
    Row("POST", "serving/deploy_model", 400, {**DEPLOY, "engine_name": "no-such-engine"}),
    # Unknown ids
    Row("GET", "models/{missing}", 404),
    Row("GET", "models/{missing}/configs", 404),
    Row("GET", "models/contract-llama", 404),
    Row("GET", "serving/deployment/{missing}", 404),
    Row("GET", "serving/deployment/contract-llama", 404),
    Row("DELETE", "serving/deployment/{missing}", 404),
    Row("GET", "serving/deployment/{missing}/status", 404),
    Row("GET", "serving/model_instance/{missing}", 404),
    Row("GET", "serving/model_instances?deployment_id={missing}", 404),
    Row("POST", "serving/deploy_model", 404, {"m_id": "{missing}", "m_config_id": "{missing}"}),
    Row("POST", "serving/deploy_model", 404, {"m_id": "{model_id}", "m_config_id": "{missing}"}),
    Row("POST", "serving/estimate_model_vram", 404, {"m_id": "{missing}", "m_config_id": "{missing}"}),
    Row("POST", "serving/deployment/{missing}/unload", 404),
    Row("POST", "serving/deployment/{missing}/load", 404),
    Row("GET", "serving/deployment/{missing}/logs", 404),
    Row("GET", "serving/deployment/{missing}/logs/patterns", 404),
]

# Spec routes of the platform whose success is not checked here, with the reason.
UNCHECKED_SUCCESS = {
    # Starting Ray brings up a Ray head node outside the platform when Ray is installed.
    # Its 200 body has the empty schema `{}`, so no body could break it.
    "POST /serving/start",
}

# Routes whose success bodies only a deployment can produce; the lifecycle test checks each.
LIFECYCLE_ROUTES = {
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
    "POST /serving/deployment/{deployment_id}/unload [local]",
    "POST /serving/deployment/{deployment_id}/load [local]",
}


# Fixtures


@pytest.fixture(scope="module")
def contract_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A copy of the tiny model, so the lifecycle test can move its folder away."""
    folder = tmp_path_factory.mktemp("contract") / "contract-llama"
    shutil.copytree(tiny_model_dir, folder)
    return folder


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, contract_model_dir: Path) -> LocalPlatformSettings:
    root = tmp_path_factory.mktemp("contract-platform")
    return LocalPlatformSettings(
        state_dir=root / "state",
        models_dir=root / "models",
        model_paths=[contract_model_dir],
        worker_start_timeout=DEPLOY_TIMEOUT,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def platform(settings: LocalPlatformSettings) -> AsyncIterator[LocalPlatform]:
    async with PlatformHost(settings) as platform:
        yield platform


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(platform: LocalPlatform) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=platform.app)
    async with httpx.AsyncClient(transport=transport, base_url=API + "/") as client:
        yield client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ids(api: httpx.AsyncClient, contract_model_dir: Path) -> Ids:
    model_id = model_id_for_path(contract_model_dir)
    model = (await api.get(f"models/{model_id}")).json()
    config = (await api.get(f"models/{model_id}/configs")).json()[0]
    values = {
        "model_id": model_id,
        "config_id": config["id"],
        "file_id": model["m_files"][0]["id"],
        "model_path": str(contract_model_dir),
        "missing": MISSING,
    }
    return Ids(model_id, config["id"], values["file_id"], values["model_path"], values)


async def checked(api: httpx.AsyncClient, method: str, path: str, status: int, body: Any = None) -> Any:
    """Send one request, check its status and its body against the spec, and return the body."""
    response = await api.request(method, path, json=body)
    assert response.status_code == status, f"{method} {path}: {response.status_code} {response.text}"
    label, errors = response_errors(load_spec(), response)
    assert errors == [], f"{label} answered HTTP {status} off the spec: {errors}"
    return response.json()


def label_of(method: str, path: str) -> str:
    """Return the spec label (or local label) of a table path, with placeholder ids filled in."""
    url_path = API_PREFIX + "/" + path.format(model_id=MISSING, missing=MISSING).split("?")[0]
    matched = load_spec().match(method, url_path)
    if matched is not None:
        return matched[0].label
    for route_method, template in LOCAL_ROUTES:
        if route_method == method and url_path.removeprefix(API_PREFIX) == template:
            return f"{method} {template} [local]"
    raise AssertionError(f"{method} {path} matches no route")


# Tests


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.id)
async def test_response_matches_spec(api: httpx.AsyncClient, ids: Ids, row: Row) -> None:
    body = await checked(api, row.method, fill(row.path, ids.values), row.status, fill(row.body, ids.values))

    if row.status == 404:
        assert "not found" in body["detail"]
    if row.status == 422:
        assert len(body["detail"]) >= 1


async def test_table_and_lifecycle_cover_routes(platform: LocalPlatform) -> None:
    spec = load_spec()
    in_spec, outside = spec_routes_of(platform.app, spec)
    successes = {label_of(row.method, row.path) for row in ROWS if row.status < 300}
    local_labels = {f"{method} {template} [local]" for method, template in LOCAL_ROUTES}

    assert outside == set(LOCAL_ROUTES)
    assert successes | LIFECYCLE_ROUTES | UNCHECKED_SUCCESS == in_spec | local_labels
    assert len(in_spec) >= 15


@pytest.mark.slow
async def test_lifecycle_responses_match_spec(
    api: httpx.AsyncClient, ids: Ids, contract_model_dir: Path
) -> None:
    deployment_id = await checked(api, "POST", "serving/deploy_model", 202, fill(DEPLOY, ids.values))
    assert await wait_for_status(api, deployment_id) == "DEPLOYED"
    path = f"serving/deployment/{deployment_id}"

    # DEPLOYED
    deployment = await checked(api, "GET", path, 200)
    assert deployment["status"] == "DEPLOYED"
    assert len(deployment["instances"]) == 1
    listed = await checked(api, "GET", f"serving/deployments?model_id={ids.model_id}", 200)
    assert [entry["id"] for entry in listed] == [deployment_id]
    await checked(api, "GET", "serving/deployments", 200)
    instances = await checked(api, "GET", f"serving/model_instances?deployment_id={deployment_id}", 200)
    assert len(instances) == 1
    await checked(api, "GET", "serving/model_instances", 200)
    instance = await checked(api, "GET", f"serving/model_instance/{instances[0]['id']}", 200)
    assert instance["status"] == "DEPLOYED"
    health = await checked(api, "GET", "serving/health", 200)
    assert [entry["health"] for entry in health] == ["healthy"]
    logs = await checked(api, "GET", f"{path}/logs", 200)
    assert logs["deployment_id"] == deployment_id
    patterns = await checked(api, "GET", f"{path}/logs/patterns", 200)
    assert patterns["deployment_id"] == deployment_id

    # UNLOADED
    unloaded = await checked(api, "POST", f"{path}/unload", 200)
    assert unloaded["status"] == "UNLOADED"
    assert await checked(api, "GET", f"{path}/status", 200) == "UNLOADED"
    await checked(api, "GET", "serving/health", 200)

    # FAILED: the model's folder is gone when the deployment loads again, so no worker starts.
    folder = anyio.Path(contract_model_dir)
    moved = await folder.rename(folder.with_name("contract-llama-moved"))
    try:
        loading = await checked(api, "POST", f"{path}/load", 200)
        assert loading["status"] == "DEPLOYING"
        assert await wait_for_status(api, deployment_id) == "FAILED"
    finally:
        await moved.rename(folder)
    failed = await checked(api, "GET", path, 200)
    assert failed["last_error_code"] == "MODEL_LOADING_FAILURE"
    assert failed["last_error_at"] is not None
    health = await checked(api, "GET", "serving/health", 200)
    assert {entry["deployment_status"] for entry in health} == {"FAILED"}

    # STOPPED
    assert await checked(api, "DELETE", f"{path}?force=true", 200) is True
    stopped = await checked(api, "GET", path, 200)
    assert stopped["status"] == "STOPPED"
    assert (await checked(api, "GET", f"serving/model_instance/{instance['id']}", 200))["status"] == "STOPPED"
    conflict = await checked(api, "POST", f"{path}/load", 409)
    assert "STOPPED" in conflict["detail"]
    await checked(api, "POST", f"{path}/unload", 409)


async def wait_for_status(api: httpx.AsyncClient, deployment_id: str) -> str:
    """Poll the status route, checking each response, until the deployment leaves REQUESTED and DEPLOYING."""
    with anyio.fail_after(DEPLOY_TIMEOUT):
        while True:
            status: str = await checked(api, "GET", f"serving/deployment/{deployment_id}/status", 200)
            if status not in ("REQUESTED", "DEPLOYING"):
                return status
            await anyio.sleep(0.2)
