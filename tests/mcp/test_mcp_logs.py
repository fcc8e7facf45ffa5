"""get_deployment_logs against the session's shared deployment, and deploy_model's force flag."""

from __future__ import annotations

import re
from typing import Any

import pytest
from mcp_support import TINY_MODEL, Connection, text_of

from kamiwaza_mcp.client import KamiwazaClient

pytest_plugins = ["mcp_fixtures"]
pytestmark = pytest.mark.asyncio(loop_scope="session")

# Enough lines to reach back to each worker's start, however many generations other tests ran.
ALL_LINES = 500


async def startup_lines(conn: Connection, instance_id: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """Return patterns of the supervisor's start line and the worker's first log line for one replica.

    The worker runs as `python -m kamiwaza_mcp.local.worker`, so its logger is named `__main__`.
    """
    pid = (await conn.call_ok("get_model_instance", {"instance_id": instance_id}))["pid"]
    assert isinstance(pid, int)
    started = re.compile(rf"--- \S+ starting worker {instance_id}: .+")
    loading = re.compile(
        rf"\S+ \S+ INFO __main__: Loading \S+/{TINY_MODEL} with the transformers engine "
        rf"\(pid {pid}\)"
    )
    return started, loading


async def test_logs_of_all_replicas_show_each_start(
    conn: Connection, shared_deployment: dict[str, Any]
) -> None:
    content = await conn.call_ok(
        "get_deployment_logs", {"deployment_id": shared_deployment["id"], "lines": ALL_LINES}
    )

    assert content["deployment_id"] == shared_deployment["id"]
    assert content["instance_id"] is None
    assert content["patterns_detected"] == []
    assert content["failure_lines"] == []
    assert content["note"] is None
    assert content["total_lines"] >= len(content["lines"]) > 0
    instances = sorted(shared_deployment["instances"], key=lambda instance: instance["id"])
    assert len(instances) == 2
    for instance in instances:
        started, loading = await startup_lines(conn, instance["id"])
        tagged = [line.split("] ", 1)[1] for line in content["lines"] if line.startswith("[replica ")]
        assert any(started.fullmatch(line) for line in tagged), instance["id"]
        assert any(loading.fullmatch(line) for line in tagged), instance["id"]
    assert all(line.startswith("[replica ") for line in content["lines"])


async def test_logs_of_one_replica_are_untagged(conn: Connection, shared_deployment: dict[str, Any]) -> None:
    instance = shared_deployment["instances"][0]
    arguments = {"deployment_id": shared_deployment["id"], "lines": ALL_LINES, "instance_id": instance["id"]}
    result = await conn.call("get_deployment_logs", arguments)

    assert result.is_error is False, text_of(result)
    content = result.structured_content
    assert content is not None
    assert content["instance_id"] == instance["id"]
    started, loading = await startup_lines(conn, instance["id"])
    assert any(started.fullmatch(line) for line in content["lines"])
    assert any(loading.fullmatch(line) for line in content["lines"])
    assert not any(line.startswith("[replica ") for line in content["lines"])
    text = text_of(result)
    assert text.startswith(f"Deployment {shared_deployment['id']}, replica {instance['id']}: the newest ")
    assert "Failure patterns: none" in text.splitlines()[0]
    assert text.splitlines()[-1] == content["lines"][-1]


async def test_logs_keep_newest_lines(conn: Connection, shared_deployment: dict[str, Any]) -> None:
    everything = await conn.call_ok(
        "get_deployment_logs", {"deployment_id": shared_deployment["id"], "lines": ALL_LINES}
    )
    newest = await conn.call_ok("get_deployment_logs", {"deployment_id": shared_deployment["id"], "lines": 4})

    # Each of the 2 replicas gets half of `lines`, so the newest 2 lines of each.
    assert len(newest["lines"]) == 4
    for replica in ("[replica 0] ", "[replica 1] "):
        mine = [line for line in everything["lines"] if line.startswith(replica)]
        assert [line for line in newest["lines"] if line.startswith(replica)] == mine[-2:]


@pytest.mark.parametrize("arguments", [{"lines": 0}, {"lines": 501}, {"instance_id": "replica-1"}])
async def test_logs_reject_invalid_arguments(
    conn: Connection, shared_deployment: dict[str, Any], arguments: dict[str, Any]
) -> None:
    result = await conn.call("get_deployment_logs", {"deployment_id": shared_deployment["id"], **arguments})

    assert result.is_error is True
    assert text_of(result) != ""


async def test_logs_of_unknown_deployment_are_not_found(conn: Connection) -> None:
    unknown = "5f3c2a8e-0c1d-4b7a-9e2f-1a2b3c4d5e6f"
    result = await conn.call("get_deployment_logs", {"deployment_id": unknown})

    assert result.is_error is True
    assert text_of(result).startswith("NotFoundError: ")
    assert unknown in text_of(result)


# deploy_model's force flag. The tiny model's KV cache for 4096 sequences of its full
# context at 32 replicas far exceeds the memory of any test machine.
OVERSIZED = {"model": TINY_MODEL, "replicas": 32, "max_concurrent_requests": 4096, "wait": False}


async def test_deploy_that_does_not_fit_is_resource_error(conn: Connection, rest: KamiwazaClient) -> None:
    before = {deployment.id for deployment in await rest.list_deployments()}
    result = await conn.call("deploy_model", OVERSIZED)

    text = text_of(result)
    assert result.is_error is True
    assert text.startswith(
        "ResourceError: POST /api/serving/deploy_model failed with HTTP 507: model tiny-llama"
    )
    assert "does not fit: 32 replica(s) need about " in text
    assert "{'message'" not in text
    assert "or deploy with force to skip the memory check" in text
    assert {deployment.id for deployment in await rest.list_deployments()} == before


async def test_deploy_with_force_skips_memory_check(conn: Connection, rest: KamiwazaClient) -> None:
    # The same oversized request that the check rejects; it is stopped at once, before its workers load.
    result = await conn.call("deploy_model", {**OVERSIZED, "force": True})

    assert result.is_error is False, text_of(result)
    content = result.structured_content
    assert content is not None
    try:
        assert content["status"] in {"REQUESTED", "DEPLOYING", "DEPLOYED"}
        assert content["replicas"] == 32
    finally:
        assert await rest.stop_deployment(content["id"], force=True) is True
