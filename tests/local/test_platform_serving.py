"""The local platform with real worker processes: deploy, generate, balance, unload, load, stop, restore.

One platform and one two-replica deployment of the tiny model are shared by the
module; tests that change a deployment's state create their own deployment.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import pytest_asyncio
from platform_host import PlatformHost

from kamiwaza_mcp.client import DeploymentError, KamiwazaClient
from kamiwaza_mcp.client.models import CreateModelDeployment, Deployment
from kamiwaza_mcp.local import LocalPlatform, LocalPlatformSettings
from kamiwaza_mcp.local.catalog import model_id_for_path

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

API = "http://kamiwaza.local/api"
# Two tiny-model workers started in about 5 s on a 2-core CPU machine; the bound leaves room for a slow CI run.
DEPLOY_TIMEOUT = 120
STOP_TIMEOUT = 30


@pytest.fixture(scope="module")
def settings(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, broken_model_dir: Path
) -> LocalPlatformSettings:
    root = tmp_path_factory.mktemp("platform")
    return LocalPlatformSettings(
        state_dir=root / "state",
        models_dir=root / "models",
        model_paths=[tiny_model_dir, broken_model_dir],
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
async def client(platform: LocalPlatform) -> AsyncIterator[KamiwazaClient]:
    async with KamiwazaClient(API, transport=httpx.ASGITransport(app=platform.app)) as client:
        yield client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def deployment(client: KamiwazaClient, tiny_model_dir: Path) -> Deployment:
    """A two-replica deployment of the tiny model, DEPLOYED, shared by the read-only tests."""
    deployment_id = await deploy(client, tiny_model_dir, starting_copies=2)
    return await wait_for_status(client, deployment_id, "DEPLOYED")


async def deploy(client: KamiwazaClient, model_dir: Path, **fields: Any) -> str:
    model_id = model_id_for_path(model_dir)
    config = await client.select_config(model_id)
    return await client.deploy_model(CreateModelDeployment(m_id=model_id, m_config_id=config.id, **fields))


async def wait_for_status(client: KamiwazaClient, deployment_id: str, expected: str) -> Deployment:
    """Poll until the deployment leaves REQUESTED and DEPLOYING, then check it reached `expected`."""
    with anyio.fail_after(DEPLOY_TIMEOUT):
        while True:
            status = await client.get_deployment_status(deployment_id)
            if status not in ("REQUESTED", "DEPLOYING"):
                break
            await anyio.sleep(0.2)
    found = await client.get_deployment(deployment_id)
    assert status == expected, (
        f"{deployment_id} is {status}: {found.last_error_code} {found.last_error_message}"
    )
    return found


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def pids_of(deployment: Deployment) -> list[int]:
    """Return the pids of the deployment's running workers; a stopped instance has pid None."""
    details = [instance.extra_details or {} for instance in deployment.instances]
    return [entry["pid"] for entry in details if entry.get("pid") is not None]


def chat_body(content: str, **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 8, "temperature": 0, **fields}


# The shared two-replica deployment


async def test_deploy_two_replicas(deployment: Deployment) -> None:
    assert deployment.status == "DEPLOYED"
    assert deployment.m_name == "tiny-llama"
    assert deployment.engine_name == "transformers"
    assert deployment.starting_copies == 2
    assert deployment.lb_port == 0
    assert deployment.access_path is None
    assert deployment.last_error_code is None
    assert len(deployment.instances) == 2


async def test_instances_distinct_ports_live_pids(deployment: Deployment) -> None:
    ports = [instance.listen_port for instance in deployment.instances]
    assert len(set(ports)) == 2
    assert all(port is not None and port > 0 for port in ports)
    assert all(instance.host_name == "127.0.0.1" for instance in deployment.instances)
    assert all(instance.status == "DEPLOYED" for instance in deployment.instances)
    assert all(pid_alive(pid) for pid in pids_of(deployment))
    assert len(set(pids_of(deployment))) == 2


async def test_instances_routes_match(client: KamiwazaClient, deployment: Deployment) -> None:
    listed = await client.list_model_instances(deployment.id)
    assert sorted(instance.id for instance in listed) == sorted(
        instance.id for instance in deployment.instances
    )
    one = await client.get_model_instance(listed[0].id)
    assert one.deployment_id == deployment.id
    assert one.extra_details is not None
    assert one.extra_details["engine"] == "transformers"
    assert await anyio.Path(one.extra_details["log_file"]).is_file()


async def test_chat_completion_has_usage(client: KamiwazaClient, deployment: Deployment) -> None:
    completion = await client.chat_completion(deployment, chat_body("Say hello."))
    assert completion.model == "tiny-llama"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage.prompt_tokens > 0
    assert 0 < completion.usage.completion_tokens <= 8
    assert (
        completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


async def test_completion_has_text(client: KamiwazaClient, deployment: Deployment) -> None:
    completion = await client.completion(
        deployment, {"prompt": "The river runs", "max_tokens": 5, "temperature": 0}
    )
    assert completion.choices[0].text
    assert completion.usage.completion_tokens == 5
    assert completion.choices[0].finish_reason == "length"


async def test_runtime_models_lists_served_name(api: httpx.AsyncClient, deployment: Deployment) -> None:
    response = await api.get(f"http://kamiwaza.local/runtime/models/{deployment.id}/v1/models")
    assert response.status_code == 200
    assert [entry["id"] for entry in response.json()["data"]] == ["tiny-llama"]


async def test_worker_errors_pass_through(api: httpx.AsyncClient, deployment: Deployment) -> None:
    response = await api.post(
        f"http://kamiwaza.local/runtime/models/{deployment.id}/v1/chat/completions",
        json=chat_body("hi", stream=True),
    )
    assert response.status_code == 400
    assert "streaming" in response.json()["detail"]


async def test_concurrent_requests_reach_both_replicas(
    client: KamiwazaClient, deployment: Deployment
) -> None:
    logs = [anyio.Path(i.extra_details["log_file"]) for i in deployment.instances if i.extra_details]
    before = [(await log.read_text()).count("Generated ") for log in logs]

    with anyio.fail_after(DEPLOY_TIMEOUT):
        results = await asyncio.gather(
            *(client.chat_completion(deployment, chat_body(f"Request {n}", max_tokens=16)) for n in range(6))
        )

    after = [(await log.read_text()).count("Generated ") for log in logs]
    served = [done - start for start, done in zip(before, after, strict=True)]
    assert len(results) == 6
    assert sum(served) == 6
    assert all(count >= 1 for count in served), served


async def test_status_is_bare_string(api: httpx.AsyncClient, deployment: Deployment) -> None:
    response = await api.get(f"serving/deployment/{deployment.id}/status")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.text == '"DEPLOYED"'


async def test_health_maps_per_instance(client: KamiwazaClient, deployment: Deployment) -> None:
    entries = [entry for entry in await client.get_health() if entry["deployment_id"] == deployment.id]
    assert sorted(entry["instance_id"] for entry in entries) == sorted(i.id for i in deployment.instances)
    for entry in entries:
        assert entry["health"] == "healthy"
        assert entry["deployment_status"] == "DEPLOYED"
        assert entry["instance_status"] == "DEPLOYED"
        assert entry["model_name"] == "tiny-llama"
        assert all(isinstance(value, str) for value in entry.values())


async def test_deployments_filter_by_model(
    client: KamiwazaClient, deployment: Deployment, broken_model_dir: Path
) -> None:
    mine = await client.list_deployments(deployment.m_id)
    others = await client.list_deployments(model_id_for_path(broken_model_dir))
    assert deployment.id in [found.id for found in mine]
    assert all(found.m_id == deployment.m_id for found in mine)
    assert deployment.id not in [found.id for found in others]


# State changes, each on a deployment of its own


async def test_unload_load_stop_cycle(
    client: KamiwazaClient, api: httpx.AsyncClient, tiny_model_dir: Path
) -> None:
    deployment_id = await deploy(client, tiny_model_dir)
    deployed = await wait_for_status(client, deployment_id, "DEPLOYED")
    first_pids = pids_of(deployed)
    assert all(pid_alive(pid) for pid in first_pids)

    with anyio.fail_after(STOP_TIMEOUT):
        unloaded = await client.unload_model(deployment_id)
    assert unloaded.status == "UNLOADED"
    assert [instance.status for instance in unloaded.instances] == ["STOPPED"]
    assert pids_of(unloaded) == []
    assert not any(pid_alive(pid) for pid in first_pids)
    response = await api.post(f"http://kamiwaza.local/runtime/models/{deployment_id}/v1/completions", json={})
    assert response.status_code == 409
    assert "UNLOADED" in response.json()["detail"]
    assert (await client.unload_model(deployment_id)).status == "UNLOADED"

    loading = await client.load_model(deployment_id)
    assert loading.id == deployment_id
    assert loading.status == "DEPLOYING"
    reloaded = await wait_for_status(client, deployment_id, "DEPLOYED")
    assert [instance.id for instance in reloaded.instances] == [
        instance.id for instance in deployed.instances
    ]
    assert all(pid_alive(pid) for pid in pids_of(reloaded))
    assert set(pids_of(reloaded)).isdisjoint(first_pids)
    assert (await client.chat_completion(reloaded, chat_body("again"))).usage.completion_tokens > 0
    assert (await client.load_model(deployment_id)).status == "DEPLOYED"

    with anyio.fail_after(STOP_TIMEOUT):
        assert await client.stop_deployment(deployment_id) is True
    assert await client.get_deployment_status(deployment_id) == "STOPPED"
    assert not any(pid_alive(pid) for pid in pids_of(reloaded))
    assert all(i.status == "STOPPED" for i in (await client.get_deployment(deployment_id)).instances)
    assert await client.stop_deployment(deployment_id) is True


async def test_stop_while_starting_kills_worker(client: KamiwazaClient, tiny_model_dir: Path) -> None:
    deployment_id = await deploy(client, tiny_model_dir)
    with anyio.fail_after(DEPLOY_TIMEOUT):
        while True:
            starting = pids_of(await client.get_deployment(deployment_id))
            if starting:
                break
            await anyio.sleep(0.05)
    assert await client.get_deployment_status(deployment_id) == "DEPLOYING"

    with anyio.fail_after(STOP_TIMEOUT):
        assert await client.stop_deployment(deployment_id, force=True) is True
    stopped = await client.get_deployment(deployment_id)
    assert stopped.status == "STOPPED"
    assert [instance.status for instance in stopped.instances] == ["STOPPED"]
    assert not any(pid_alive(pid) for pid in starting)


async def test_bad_model_fails_with_log_lines(client: KamiwazaClient, broken_model_dir: Path) -> None:
    deployment_id = await deploy(client, broken_model_dir)
    failed = await wait_for_status(client, deployment_id, "FAILED")

    assert failed.last_error_code == "MODEL_LOADING_FAILURE"
    assert failed.last_error_message is not None
    assert "Last log lines:" in failed.last_error_message
    assert "MODEL_LOADING_FAILURE: failed to load" in failed.last_error_message
    assert failed.last_error_at is not None
    assert [instance.status for instance in failed.instances] == ["FAILED"]

    health = [entry for entry in await client.get_health() if entry["deployment_id"] == deployment_id]
    assert [entry["health"] for entry in health] == ["unhealthy"]
    assert health[0]["detail"].startswith("MODEL_LOADING_FAILURE: ")

    with pytest.raises(DeploymentError):
        await client.chat_completion(failed, chat_body("hi"))


async def test_restart_restores_deployed(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = LocalPlatformSettings(
        state_dir=tmp_path / "state", models_dir=tmp_path / "models", model_paths=[tiny_model_dir]
    )

    async def session(check: Callable[[KamiwazaClient], Any]) -> Any:
        async with (
            LocalPlatform(settings) as platform,
            KamiwazaClient(API, transport=httpx.ASGITransport(app=platform.app)) as client,
        ):
            return await check(client)

    async def first_run(client: KamiwazaClient) -> tuple[str, str, list[int]]:
        kept = await deploy(client, tiny_model_dir)
        stopped = await deploy(client, tiny_model_dir)
        deployed = await wait_for_status(client, kept, "DEPLOYED")
        await wait_for_status(client, stopped, "DEPLOYED")
        with anyio.fail_after(STOP_TIMEOUT):
            await client.stop_deployment(stopped)
        return kept, stopped, pids_of(deployed)

    kept, stopped, old_pids = await session(first_run)
    assert not any(pid_alive(pid) for pid in old_pids)

    async def second_run(client: KamiwazaClient) -> None:
        listed = {found.id: found.status for found in await client.list_deployments()}
        assert listed[stopped] == "STOPPED"
        assert listed[kept] in ("REQUESTED", "DEPLOYING", "DEPLOYED")
        restored = await wait_for_status(client, kept, "DEPLOYED")
        assert set(pids_of(restored)).isdisjoint(old_pids)
        assert (await client.chat_completion(restored, chat_body("back"))).usage.completion_tokens > 0
        assert await client.get_deployment_status(stopped) == "STOPPED"

    await session(second_run)
