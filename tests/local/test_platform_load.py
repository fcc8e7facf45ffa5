"""The standalone platform under load and failure, over real HTTP on 127.0.0.1 with its bearer token.

One `python -m kamiwaza_mcp.local` process and one two-replica deployment of the
tiny model (max_concurrent_requests 2) are shared by the module. The load tests run
first; the tests that kill workers run last and leave the deployment DEPLOYED again.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import pytest_asyncio
from local_platform_process import PlatformProcess, pid_alive, run_platform

from kamiwaza_mcp.client import DeploymentError, KamiwazaClient, ResourceError
from kamiwaza_mcp.client.models import CreateModelDeployment, Deployment
from kamiwaza_mcp.local.admission import QUEUE_FACTOR
from kamiwaza_mcp.local.catalog import model_id_for_path
from kamiwaza_mcp.local.oom import oom_kill_count

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

LIMIT = 2
# Two tiny-model workers started in about 5 s on a 2-core machine; the bounds leave room for slow runs.
DEPLOY_TIMEOUT = 120
# A replica is replaced within restart_delay (1 s) plus a worker start (about 3 s).
RECOVERY_TIMEOUT = 60
# A hung worker is killed after 3 failed probes, each one interval (2 s) plus a timeout (2 s) apart.
HUNG_TIMEOUT = 60
# Long enough that the first requests of a burst are still generating when the last ones arrive.
SLOW_REQUEST = {"max_tokens": 64, "temperature": 0}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> AsyncIterator[PlatformProcess]:
    root = tmp_path_factory.mktemp("load")
    async with run_platform(
        root / "state", [tiny_model_dir], secrets.token_urlsafe(16), root / "platform.log"
    ) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(server: PlatformProcess) -> AsyncIterator[KamiwazaClient]:
    async with KamiwazaClient(server.base_url, api_key=server.token) as client:
        yield client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def deployment(client: KamiwazaClient, tiny_model_dir: Path) -> Deployment:
    deployment_id = await deploy(client, tiny_model_dir, starting_copies=2, max_concurrent_requests=LIMIT)
    return await wait_until(client, deployment_id, lambda found: found.status == "DEPLOYED", DEPLOY_TIMEOUT)


async def deploy(client: KamiwazaClient, model_dir: Path, **fields: Any) -> str:
    model_id = model_id_for_path(model_dir)
    config = (await client.list_model_configs(model_id))[0]
    return await client.deploy_model(CreateModelDeployment(m_id=model_id, m_config_id=config.id, **fields))


async def wait_until(client: KamiwazaClient, deployment_id: str, check: Any, seconds: float) -> Deployment:
    """Poll the deployment until `check(deployment)` holds, for at most `seconds`."""
    with anyio.fail_after(seconds):
        while True:
            found = await client.get_deployment(deployment_id)
            if check(found):
                return found
            await anyio.sleep(0.1)


def chat(content: str, **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 8, "temperature": 0, **fields}


def pids(deployment: Deployment) -> dict[str, int]:
    """Map instance ids to the pids of their running workers."""
    return {
        instance.id: instance.extra_details["pid"]
        for instance in deployment.instances
        if instance.extra_details and instance.extra_details.get("pid") is not None
    }


def served(deployment: Deployment) -> list[int]:
    return [(instance.extra_details or {}).get("requests_served", 0) for instance in deployment.instances]


def fully_serving(deployment: Deployment) -> bool:
    return deployment.status == "DEPLOYED" and [i.status for i in deployment.instances] == ["DEPLOYED"] * 2


async def burst(client: KamiwazaClient, deployment: Deployment, count: int) -> list[Any]:
    """Send `count` chat requests at once and return each response or error."""
    with anyio.fail_after(DEPLOY_TIMEOUT):
        return await asyncio.gather(
            *(client.chat_completion(deployment, chat(f"Request {n}", **SLOW_REQUEST)) for n in range(count)),
            return_exceptions=True,
        )


# The bearer token


async def test_requests_need_the_token(server: PlatformProcess, deployment: Deployment) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", trust_env=False) as http:
        missing = await http.get("/api/ping")
        wrong = await http.get("/api/ping", headers={"Authorization": "Bearer not-the-token"})
        right = await http.get("/api/ping", headers={"Authorization": f"Bearer {server.token}"})
        runtime = await http.post(f"/runtime/models/{deployment.id}/v1/chat/completions", json=chat("hi"))

    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert "bearer token" in missing.json()["detail"]
    assert wrong.status_code == 401
    assert right.status_code == 200
    assert right.json()["status"] == "ok"
    assert runtime.status_code == 401


async def test_client_with_token(
    server: PlatformProcess, client: KamiwazaClient, deployment: Deployment
) -> None:
    completion = await client.chat_completion(deployment, chat("Say hello."))

    assert completion.model == "tiny-llama"
    assert completion.usage.completion_tokens > 0
    async with KamiwazaClient(server.base_url, api_key="wrong", max_retries=0) as intruder:
        with pytest.raises(Exception, match="401"):
            await intruder.list_models()


# Requests under load


async def test_burst_within_queue_all_served(client: KamiwazaClient, deployment: Deployment) -> None:
    before = served(await client.get_deployment(deployment.id))

    results = await burst(client, deployment, LIMIT + LIMIT * QUEUE_FACTOR)

    after = await client.get_deployment(deployment.id)
    errors = [result for result in results if isinstance(result, BaseException)]
    assert errors == []
    assert after.health_details is not None
    assert after.health_details["max_concurrent_requests"] == LIMIT
    assert after.health_details["max_in_flight"] == LIMIT
    assert after.health_details["in_flight"] == 0
    assert after.health_details["queued"] == 0
    gained = [done - start for start, done in zip(before, served(after), strict=True)]
    assert sum(gained) == LIMIT + LIMIT * QUEUE_FACTOR
    assert all(count >= 1 for count in gained), gained


async def test_burst_beyond_queue_gets_429(client: KamiwazaClient, deployment: Deployment) -> None:
    rejected_before = (await client.get_deployment(deployment.id)).health_details or {}

    results = await burst(client, deployment, 2 * (LIMIT + LIMIT * QUEUE_FACTOR))

    busy = [result for result in results if isinstance(result, ResourceError)]
    completed = [result for result in results if not isinstance(result, BaseException)]
    others = [result for result in results if isinstance(result, BaseException) and result not in busy]
    assert others == []
    assert len(busy) >= 1
    assert len(completed) >= LIMIT + LIMIT * QUEUE_FACTOR
    assert all(error.status_code == 429 for error in busy)
    assert all("busy" in str(error.detail) for error in busy)
    after = (await client.get_deployment(deployment.id)).health_details
    assert after is not None
    assert after["rejected_busy"] - rejected_before.get("rejected_busy", 0) == len(busy)
    assert after["max_in_flight"] == LIMIT


# Memory check on deploy


async def test_deploy_that_cannot_fit_is_refused(client: KamiwazaClient, tiny_model_dir: Path) -> None:
    before = {found.id for found in await client.list_deployments()}

    with pytest.raises(ResourceError) as caught:
        # A KV cache for a billion concurrent sequences exceeds any machine's memory.
        await deploy(client, tiny_model_dir, max_concurrent_requests=10**9)

    assert caught.value.status_code == 507
    detail = caught.value.detail
    assert isinstance(detail, dict)
    assert "does not fit" in detail["message"]
    assert "KAMIWAZA_FORCE" in detail["message"]
    assert detail["fits"] is False
    assert detail["total_bytes"] > detail["available_bytes"]
    assert (
        detail["per_replica_bytes"]
        == detail["weights_bytes"] + detail["kv_cache_bytes"] + detail["overhead_bytes"]
    )
    assert detail["overhead_basis"]
    assert {found.id for found in await client.list_deployments()} == before


async def test_force_deploys_anyway(client: KamiwazaClient, tiny_model_dir: Path) -> None:
    deployment_id = await deploy(
        client, tiny_model_dir, max_concurrent_requests=10**9, runtime_env={"KAMIWAZA_FORCE": "true"}
    )

    assert await client.get_deployment_status(deployment_id) in ("REQUESTED", "DEPLOYING")
    with anyio.fail_after(30):
        assert await client.stop_deployment(deployment_id, force=True) is True
    assert await client.get_deployment_status(deployment_id) == "STOPPED"


# Logs of running workers


async def test_logs_of_two_replicas(server: PlatformProcess, deployment: Deployment) -> None:
    async with httpx.AsyncClient(base_url=server.base_url + "/", trust_env=False) as http:
        response = await http.get(
            f"serving/deployment/{deployment.id}/logs",
            params={"lines": 40},
            headers={"Authorization": f"Bearer {server.token}"},
        )

    body = response.json()
    assert response.status_code == 200
    assert body["capture_active"] is True
    assert len(body["logs"]) <= 40
    assert {line.split("] ", 1)[0] for line in body["logs"]} == {"[replica 0", "[replica 1"}
    assert any("Generated" in line for line in body["logs"])


# Failures and recovery; these tests change the workers and run last.


async def test_killed_worker_is_replaced(client: KamiwazaClient, deployment: Deployment) -> None:
    start = await wait_until(client, deployment.id, fully_serving, RECOVERY_TIMEOUT)
    victim, survivor = start.instances
    old_pid = pids(start)[victim.id]
    counter_before = oom_kill_count()

    os.kill(old_pid, signal.SIGKILL)
    failed = await wait_until(
        client, deployment.id, lambda d: d.instances[0].status in ("FAILED", "DEPLOYING"), RECOVERY_TIMEOUT
    )
    # The other replica serves on while the dead one is replaced.
    assert failed.status == "DEPLOYED"
    assert (await client.chat_completion(failed, chat("still there?"))).usage.completion_tokens > 0
    recovered = await wait_until(
        client,
        deployment.id,
        lambda d: fully_serving(d) and pids(d).get(victim.id) not in (None, old_pid),
        RECOVERY_TIMEOUT,
    )

    assert not pid_alive(old_pid)
    assert pids(recovered)[survivor.id] == pids(start)[survivor.id]
    expected = (
        "CONTAINER_EXITED" if counter_before is not None and oom_kill_count() == counter_before else "OOM"
    )
    assert recovered.last_error_code == expected
    assert recovered.last_error_message is not None
    assert f"exited with code -{signal.SIGKILL}" in recovered.last_error_message
    assert "Replacing the worker" in recovered.last_error_message
    assert (await client.chat_completion(recovered, chat("back?"))).usage.completion_tokens > 0


async def test_hung_worker_is_killed_and_replaced(client: KamiwazaClient, deployment: Deployment) -> None:
    start = await wait_until(client, deployment.id, fully_serving, RECOVERY_TIMEOUT)
    hung = start.instances[1]
    old_pid = pids(start)[hung.id]

    os.kill(old_pid, signal.SIGSTOP)
    try:
        recovered = await wait_until(
            client,
            deployment.id,
            lambda d: fully_serving(d) and pids(d).get(hung.id) not in (None, old_pid),
            HUNG_TIMEOUT,
        )
    finally:
        if pid_alive(old_pid):
            os.kill(old_pid, signal.SIGKILL)

    assert not pid_alive(old_pid)
    assert recovered.last_error_code == "CONTAINER_EXITED"
    assert recovered.last_error_message is not None
    assert "GET /health failed 3 times in a row" in recovered.last_error_message


async def test_all_workers_killed_then_recovered(client: KamiwazaClient, deployment: Deployment) -> None:
    start = await wait_until(client, deployment.id, fully_serving, RECOVERY_TIMEOUT)
    old_pids = pids(start)

    for pid in old_pids.values():
        os.kill(pid, signal.SIGKILL)
    down = await wait_until(client, deployment.id, lambda d: d.status != "DEPLOYED", RECOVERY_TIMEOUT)

    assert down.status == "DEPLOYING"
    assert down.last_error_code is not None
    with pytest.raises(DeploymentError, match="DEPLOYING"):
        await client.chat_completion(down, chat("anyone?"))
    recovered = await wait_until(
        client,
        deployment.id,
        lambda d: fully_serving(d) and set(pids(d).values()).isdisjoint(old_pids.values()),
        RECOVERY_TIMEOUT,
    )
    assert (await client.chat_completion(recovered, chat("back again?"))).usage.completion_tokens > 0
    health = [entry for entry in await client.get_health() if entry["deployment_id"] == deployment.id]
    assert [entry["health"] for entry in health] == ["healthy", "healthy"]
