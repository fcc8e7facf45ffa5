"""The local platform's API without running workers: models, validation, errors, estimates and state.

Each test enters its own LocalPlatform on a fresh state folder and drives the real
app through httpx.ASGITransport, and through the real KamiwazaClient where that is
the caller's path. The platform is entered in the test's body, not in a fixture,
because pytest-asyncio sets a fixture up and tears it down in different tasks and
the platform's task group must be exited in the task that entered it.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from kamiwaza_mcp.client import APIError, KamiwazaClient, NotFoundError
from kamiwaza_mcp.client.models import CreateModelDeployment
from kamiwaza_mcp.local import LocalPlatform, LocalPlatformSettings
from kamiwaza_mcp.local.catalog import model_id_for_path
from kamiwaza_mcp.local.supervisor import classify_exit

API = "http://kamiwaza.local/api"
MISSING_ID = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def settings(tmp_path: Path, tiny_model_dir: Path) -> LocalPlatformSettings:
    """The tiny model by path, plus a config-only copy discovered under models_dir as org/name."""
    discovered = tmp_path / "models" / "acme" / "tiny-copy"
    discovered.mkdir(parents=True)
    shutil.copy(tiny_model_dir / "config.json", discovered / "config.json")
    return LocalPlatformSettings(
        state_dir=tmp_path / "state", models_dir=tmp_path / "models", model_paths=[tiny_model_dir]
    )


@dataclass(frozen=True)
class Running:
    """A running platform with a raw HTTP client and a KamiwazaClient on its app."""

    platform: LocalPlatform
    api: httpx.AsyncClient
    client: KamiwazaClient


@asynccontextmanager
async def running(settings: LocalPlatformSettings) -> AsyncIterator[Running]:
    async with LocalPlatform(settings) as platform:
        transport = httpx.ASGITransport(app=platform.app)
        async with (
            httpx.AsyncClient(transport=transport, base_url=API + "/") as api,
            KamiwazaClient(API, transport=transport) as client,
        ):
            yield Running(platform, api, client)


async def tiny_model(api: httpx.AsyncClient, tiny_model_dir: Path) -> dict[str, Any]:
    models = (await api.get("models/")).json()
    return next(model for model in models if model["id"] == model_id_for_path(tiny_model_dir))


async def deploy_body(api: httpx.AsyncClient, tiny_model_dir: Path, **overrides: Any) -> dict[str, Any]:
    model = await tiny_model(api, tiny_model_dir)
    configs = (await api.get(f"models/{model['id']}/configs")).json()
    return {"m_id": model["id"], "m_config_id": configs[0]["id"], **overrides}


# Models


async def test_ping(settings: LocalPlatformSettings) -> None:
    async with running(settings) as env:
        response = await env.api.get("ping")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "extensions": ["deployment_load", "deployment_unload", "model_register"],
    }


async def test_list_models_finds_both_sources(settings: LocalPlatformSettings, tiny_model_dir: Path) -> None:
    async with running(settings) as env:
        models = (await env.api.get("models/")).json()
    by_repo = {model["repo_modelId"]: model for model in models}
    assert set(by_repo) == {"tiny-llama", "acme/tiny-copy"}
    tiny = by_repo["tiny-llama"]
    assert tiny["id"] == model_id_for_path(tiny_model_dir)
    assert tiny["name"] == "tiny-llama"
    assert tiny["hosted"] == "local"
    assert tiny["modelfamily"] == "llama"
    assert tiny["default_config"] == {"context_length": 512, "engine": "transformers"}
    assert by_repo["acme/tiny-copy"]["author"] == "acme"


async def test_model_files_point_into_folder(settings: LocalPlatformSettings, tiny_model_dir: Path) -> None:
    async with running(settings) as env:
        model = await tiny_model(env.api, tiny_model_dir)
    files = {entry["name"]: entry for entry in model["m_files"]}
    weights = files["model.safetensors"]
    assert weights["size"] == (tiny_model_dir / "model.safetensors").stat().st_size
    assert weights["storage_location"] == str(tiny_model_dir / "model.safetensors")
    assert str(uuid.UUID(weights["id"])) == weights["id"]


async def test_model_ids_survive_restart(settings: LocalPlatformSettings, tiny_model_dir: Path) -> None:
    ids = []
    for _ in range(2):
        async with running(settings) as env:
            ids.append(sorted(model["id"] for model in (await env.api.get("models/")).json()))
    assert ids[0] == ids[1]
    assert model_id_for_path(tiny_model_dir) in ids[0]


async def test_get_model_and_configs_via_client(
    settings: LocalPlatformSettings, tiny_model_dir: Path
) -> None:
    async with running(settings) as env:
        model = await env.client.resolve_model("tiny-llama")
        assert model.id is not None
        fetched = await env.client.get_model(model.id)
        config = await env.client.select_config(model.id)
    assert model.id == model_id_for_path(tiny_model_dir)
    assert fetched.name == "tiny-llama"
    assert config.m_id == model.id
    assert config.default is True
    assert config.name == "default"
    assert config.config == {"context_length": 512, "engine": "transformers"}
    assert config.system_config == {}
    assert config.model_extra is not None
    assert config.model_extra["created_at"]


async def test_model_dropped_when_folder_gone(settings: LocalPlatformSettings) -> None:
    async with running(settings) as env:
        shutil.rmtree(settings.models_path / "acme")
        models = (await env.api.get("models/")).json()
    assert [model["repo_modelId"] for model in models] == ["tiny-llama"]


@pytest.mark.parametrize(
    ("query", "exact", "expected"),
    [
        ("TINY", False, ["acme/tiny-copy", "tiny-llama"]),
        ("acme/", False, ["acme/tiny-copy"]),
        ("tiny", True, []),
        ("tiny-llama", True, ["tiny-llama"]),
        ("no-such-model", False, []),
    ],
)
async def test_search_models(
    settings: LocalPlatformSettings, query: str, exact: bool, expected: list[str]
) -> None:
    async with running(settings) as env:
        response = await env.api.post("models/search/", json={"query": query, "exact": exact})
    assert response.status_code == 200
    body = response.json()
    assert sorted(result["model"]["repo_modelId"] for result in body["results"]) == expected
    assert body["total_results"] == len(expected)
    assert body["local_results_only"] is True
    assert all(result["id"] == result["model"]["id"] for result in body["results"])


async def test_search_limit_keeps_total(settings: LocalPlatformSettings) -> None:
    async with running(settings) as env:
        body = (await env.api.post("models/search", json={"query": "tiny", "limit": 1})).json()
    assert len(body["results"]) == 1
    assert body["total_results"] == 2


async def test_register_model_by_path(
    settings: LocalPlatformSettings, tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "elsewhere" / "registered-llama"
    folder.mkdir(parents=True)
    shutil.copy(tiny_model_dir / "config.json", folder / "config.json")

    async with running(settings) as env:
        response = await env.api.post("models/register", json={"path": str(folder)})
        listed = [model["id"] for model in (await env.api.get("models/")).json()]
    assert response.status_code == 200
    registered = response.json()
    assert registered["id"] == model_id_for_path(folder)
    assert registered["name"] == "registered-llama"
    assert registered["id"] in listed


async def test_registered_model_persists(
    settings: LocalPlatformSettings, tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "kept-llama"
    folder.mkdir()
    shutil.copy(tiny_model_dir / "config.json", folder / "config.json")
    async with running(settings) as env:
        assert (await env.api.post("models/register", json={"path": str(folder)})).status_code == 200

    async with running(settings) as env:
        response = await env.api.get(f"models/{model_id_for_path(folder)}")
    assert response.status_code == 200
    assert response.json()["name"] == "kept-llama"


@pytest.mark.parametrize(
    ("path", "fragment"),
    [("relative/folder", "is relative"), ("/no/such/folder", "not found")],
)
async def test_register_rejects_bad_path(settings: LocalPlatformSettings, path: str, fragment: str) -> None:
    async with running(settings) as env:
        response = await env.api.post("models/register", json={"path": path})
    assert response.status_code == 400
    assert fragment in response.json()["detail"]


async def test_register_without_path_is_422(settings: LocalPlatformSettings) -> None:
    async with running(settings) as env:
        response = await env.api.post("models/register", json={})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "path"]
    assert response.json()["detail"][0]["type"] == "missing"


# Errors


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"models/{MISSING_ID}"),
        ("GET", f"models/{MISSING_ID}/configs"),
        ("GET", f"serving/deployment/{MISSING_ID}"),
        ("DELETE", f"serving/deployment/{MISSING_ID}"),
        ("GET", f"serving/deployment/{MISSING_ID}/status"),
        ("POST", f"serving/deployment/{MISSING_ID}/unload"),
        ("POST", f"serving/deployment/{MISSING_ID}/load"),
        ("GET", f"serving/model_instance/{MISSING_ID}"),
        ("GET", f"serving/model_instances?deployment_id={MISSING_ID}"),
        ("POST", f"http://kamiwaza.local/runtime/models/{MISSING_ID}/v1/chat/completions"),
        ("GET", f"http://kamiwaza.local/runtime/models/{MISSING_ID}/v1/models"),
        ("GET", "models/not-a-uuid"),
        ("GET", "serving/deployment/not-a-uuid"),
        ("GET", "serving/model_instance/not-a-uuid"),
        ("POST", "http://kamiwaza.local/runtime/models/not-a-uuid/v1/completions"),
        ("GET", "no/such/route"),
    ],
)
async def test_unknown_ids_are_404_json(settings: LocalPlatformSettings, method: str, path: str) -> None:
    async with running(settings) as env:
        response = await env.api.request(method, path, json={} if method == "POST" else None)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    assert "not found" in detail.lower()


async def test_client_maps_404_to_not_found(settings: LocalPlatformSettings) -> None:
    async with running(settings) as env:
        with pytest.raises(NotFoundError) as caught:
            await env.client.get_deployment(MISSING_ID)
    assert caught.value.status_code == 404
    assert MISSING_ID in str(caught.value.detail)


async def test_filter_with_invalid_uuid_is_422(settings: LocalPlatformSettings) -> None:
    async with running(settings) as env:
        response = await env.api.get("serving/deployments", params={"model_id": "nope"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "model_id"]


async def test_method_not_allowed_is_json(settings: LocalPlatformSettings) -> None:
    async with running(settings) as env:
        response = await env.api.put("serving/deployments")
    assert response.status_code == 405
    assert isinstance(response.json()["detail"], str)


# Deploy validation


@pytest.mark.parametrize(
    ("overrides", "loc"),
    [
        ({"min_copies": 2, "starting_copies": 1}, ["body"]),
        ({"starting_copies": 0}, ["body", "starting_copies"]),
        ({"min_copies": 0}, ["body", "min_copies"]),
        ({"max_copies": 1, "starting_copies": 2}, ["body"]),
        ({"m_id": "not-a-uuid"}, ["body", "m_id"]),
        ({"max_concurrent_requests": 0}, ["body", "max_concurrent_requests"]),
    ],
)
async def test_deploy_invalid_body_is_422(
    settings: LocalPlatformSettings, tiny_model_dir: Path, overrides: dict[str, Any], loc: list[str]
) -> None:
    async with running(settings) as env:
        body = await deploy_body(env.api, tiny_model_dir, **overrides)
        response = await env.api.post("serving/deploy_model", json=body)
        deployments = (await env.api.get("serving/deployments")).json()
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert len(errors) == 1
    assert errors[0]["loc"] == loc
    assert isinstance(errors[0]["msg"], str)
    assert isinstance(errors[0]["type"], str)
    assert deployments == []


async def test_deploy_missing_fields_is_422(settings: LocalPlatformSettings) -> None:
    async with running(settings) as env:
        response = await env.api.post("serving/deploy_model", json={})
    assert response.status_code == 422
    locs = sorted(error["loc"] for error in response.json()["detail"])
    assert locs == [["body", "m_config_id"], ["body", "m_id"]]


async def test_deploy_invalid_json_is_422(settings: LocalPlatformSettings) -> None:
    async with running(settings) as env:
        response = await env.api.post(
            "serving/deploy_model", content=b"{not json", headers={"content-type": "application/json"}
        )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


async def test_deploy_empty_body_is_422(settings: LocalPlatformSettings) -> None:
    async with running(settings) as env:
        response = await env.api.post("serving/deploy_model")
    assert response.status_code == 422
    assert response.json()["detail"] == [{"loc": ["body"], "msg": "Field required", "type": "missing"}]


@pytest.mark.parametrize("field", ["m_id", "m_config_id", "m_file_id"])
async def test_deploy_unknown_reference_is_404(
    settings: LocalPlatformSettings, tiny_model_dir: Path, field: str
) -> None:
    async with running(settings) as env:
        body = await deploy_body(env.api, tiny_model_dir, **{field: MISSING_ID})
        response = await env.api.post("serving/deploy_model", json=body)
    assert response.status_code == 404
    assert MISSING_ID in response.json()["detail"]


async def test_deploy_unknown_engine_is_400(settings: LocalPlatformSettings, tiny_model_dir: Path) -> None:
    async with running(settings) as env:
        body = await deploy_body(env.api, tiny_model_dir, engine_name="tensorrt")
        response = await env.api.post("serving/deploy_model", json=body)
    assert response.status_code == 400
    assert "transformers" in response.json()["detail"]


@pytest.mark.skipif(
    shutil.which("nvidia-smi") is not None, reason="vllm is only rejected without an NVIDIA GPU"
)
async def test_deploy_vllm_without_gpu_is_400(settings: LocalPlatformSettings, tiny_model_dir: Path) -> None:
    async with running(settings) as env:
        body = await deploy_body(env.api, tiny_model_dir, engine_name="vllm")
        response = await env.api.post("serving/deploy_model", json=body)
    assert response.status_code == 400
    assert "engine 'vllm'" in response.json()["detail"]


# Estimate and cluster


async def test_estimate_map_fields(settings: LocalPlatformSettings, tiny_model_dir: Path) -> None:
    model_id = model_id_for_path(tiny_model_dir)
    async with running(settings) as env:
        config = await env.client.select_config(model_id)
        request = CreateModelDeployment(
            m_id=model_id, m_config_id=config.id, starting_copies=2, max_concurrent_requests=3, force_cpu=True
        )
        estimate = await env.client.estimate_model_vram(request)

    assert estimate["estimate_source"] == "safetensors"
    assert estimate["memory_kind"] == "ram"
    assert estimate["dtype"] == "float32"
    assert estimate["context_length"] == 512
    assert estimate["concurrency"] == 3
    assert estimate["replicas"] == 2
    assert estimate["computed_vram_estimate"] == estimate["per_replica_bytes"]
    assert estimate["per_replica_bytes"] == (
        estimate["weights_bytes"] + estimate["kv_cache_bytes"] + estimate["overhead_bytes"]
    )
    assert estimate["total_bytes"] == 2 * estimate["per_replica_bytes"]
    assert estimate["highest_node_vram"] == estimate["available_bytes"]
    assert isinstance(estimate["computed_vram_estimate"], int)
    assert estimate["fits"] is True


async def test_estimate_unknown_model_is_404(settings: LocalPlatformSettings) -> None:
    async with running(settings) as env:
        response = await env.api.post(
            "serving/estimate_model_vram", json={"m_id": MISSING_ID, "m_config_id": MISSING_ID}
        )
    assert response.status_code == 404


async def test_serving_status_reports_local_node(settings: LocalPlatformSettings) -> None:
    async with running(settings) as env:
        status = await env.client.get_status()
    assert status.status == "not running"
    assert status.address is None
    assert len(status.nodes) == 1
    assert status.nodes[0].address == "127.0.0.1"
    assert status.nodes[0].cpus >= 1
    assert status.nodes[0].memory_bytes > 0
    assert status.resources["CPU"] == status.nodes[0].cpus
    assert status.resources["memory"] == status.nodes[0].memory_bytes


@pytest.mark.skipif(importlib.util.find_spec("ray") is not None, reason="Ray is installed here")
async def test_start_without_ray_names_extra(settings: LocalPlatformSettings) -> None:
    async with running(settings) as env:
        with pytest.raises(APIError) as caught:
            await env.client.start_ray()
    assert caught.value.status_code == 400
    assert caught.value.detail == "Ray is not installed; install it with pip install 'kamiwaza-mcp[ray]'"


# State


async def test_stopped_deployment_kept_across_restart(
    settings: LocalPlatformSettings, tiny_model_dir: Path
) -> None:
    """A deployment stopped while starting stays STOPPED after a restart and starts no worker."""
    async with running(settings) as env:
        body = await deploy_body(env.api, tiny_model_dir)
        response = await env.api.post("serving/deploy_model", json=body)
        assert response.status_code == 202
        deployment_id = response.json()
        with anyio.fail_after(30):
            assert (await env.api.delete(f"serving/deployment/{deployment_id}")).json() is True

    async with running(settings) as env:
        deployments = (await env.api.get("serving/deployments")).json()
        ready = env.platform.launcher.ready_workers(deployment_id)
        generation = await env.api.post(
            f"http://kamiwaza.local/runtime/models/{deployment_id}/v1/completions", json={}
        )
        load = await env.api.post(f"serving/deployment/{deployment_id}/load")
        unload = await env.api.post(f"serving/deployment/{deployment_id}/unload")
        health = (await env.api.get("serving/health")).json()

    assert [deployment["id"] for deployment in deployments] == [deployment_id]
    assert deployments[0]["status"] == "STOPPED"
    assert all(instance["status"] == "STOPPED" for instance in deployments[0]["instances"])
    assert deployments[0]["m_name"] == "tiny-llama"
    assert deployments[0]["engine_name"] == "transformers"
    assert ready == []
    assert generation.status_code == 409
    assert generation.json()["detail"].startswith(f"deployment {deployment_id} is STOPPED; ")
    assert load.status_code == 409
    assert unload.status_code == 409
    assert health == []


async def test_restore_fails_when_folder_gone(
    settings: LocalPlatformSettings, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A deployment still starting at exit is launched again at the next start, and fails without its folder."""
    folder = tmp_path / "vanishing-llama"
    folder.mkdir()
    shutil.copy(tiny_model_dir / "config.json", folder / "config.json")
    async with running(settings) as env:
        model = (await env.api.post("models/register", json={"path": str(folder)})).json()
        configs = (await env.api.get(f"models/{model['id']}/configs")).json()
        body = {"m_id": model["id"], "m_config_id": configs[0]["id"]}
        deployment_id = (await env.api.post("serving/deploy_model", json=body)).json()
    shutil.rmtree(folder)

    async with running(settings) as env:
        with anyio.fail_after(30):
            while (
                status := (await env.api.get(f"serving/deployment/{deployment_id}/status")).json()
            ) != "FAILED":
                assert status in ("REQUESTED", "DEPLOYING")
                await anyio.sleep(0.05)
        failed = (await env.api.get(f"serving/deployment/{deployment_id}")).json()
    assert failed["last_error_code"] == "MODEL_LOADING_FAILURE"
    assert "is gone" in failed["last_error_message"]


async def test_store_keeps_request_json(settings: LocalPlatformSettings, tiny_model_dir: Path) -> None:
    async with running(settings) as env:
        body = await deploy_body(
            env.api, tiny_model_dir, runtime_env={"EXAMPLE_FLAG": "1"}, max_concurrent_requests=4
        )
        deployment_id = (await env.api.post("serving/deploy_model", json=body)).json()
        with anyio.fail_after(30):
            await env.api.delete(f"serving/deployment/{deployment_id}", params={"force": "true"})
        record = env.platform.store.get_deployment(deployment_id)
    assert record is not None
    assert record.request["runtime_env"] == {"EXAMPLE_FLAG": "1"}
    assert record.request["max_concurrent_requests"] == 4
    assert json.loads(json.dumps(record.request)) == record.request


# Exit classification


@pytest.mark.parametrize(
    ("lines", "returncode", "expected"),
    [
        (["Loading", "MODEL_LOADING_FAILURE: failed to load /m: OSError"], 2, "MODEL_LOADING_FAILURE"),
        (["OOM: loading /m on cuda ran out of memory"], 2, "OOM"),
        (["RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"], 1, "OOM"),
        (["Loading"], -9, "OOM"),
        (["OSError: Error no file named model.safetensors found"], 1, "MODEL_LOADING_FAILURE"),
        (["Traceback (most recent call last):", "KeyError: 'x'"], 1, "CONTAINER_EXITED"),
        ([], 0, "CONTAINER_EXITED"),
    ],
)
def test_classify_exit(lines: list[str], returncode: int, expected: str) -> None:
    assert classify_exit(lines, returncode) == expected
