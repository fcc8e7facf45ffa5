"""Deployments, instances, health and generation through a real MCP client, on the shared 2-replica deployment."""

from __future__ import annotations

from typing import Any

import pytest
from mcp_support import TINY_MODEL, Connection, text_of, tiny_model_id

from kamiwaza_mcp.client import KamiwazaClient

pytest_plugins = ["mcp_fixtures"]
pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.slow]


# Deployments


async def test_deployment_has_two_replicas_on_distinct_ports(
    shared_deployment: dict[str, Any], rest: KamiwazaClient, platform_url: str
) -> None:
    view = shared_deployment
    model_id = await tiny_model_id(rest)

    assert view["status"] == "DEPLOYED"
    assert view["model_id"] == model_id
    assert view["model_name"] == TINY_MODEL
    assert view["replicas"] == 2
    assert view["engine"] == "transformers"
    assert view["last_error_code"] is None
    assert len(view["instances"]) == 2
    assert [instance["status"] for instance in view["instances"]] == ["DEPLOYED", "DEPLOYED"]
    ports = {instance["port"] for instance in view["instances"]}
    assert len(ports) == 2
    assert all(isinstance(port, int) and port > 0 for port in ports)
    assert all(isinstance(instance["pid"], int) for instance in view["instances"])
    assert {instance["host"] for instance in view["instances"]} == {"127.0.0.1"}
    origin = platform_url.removesuffix("/api")
    assert view["endpoint_url"] == f"{origin}/runtime/models/{view['id']}/v1"


async def test_list_deployments_shows_shared_one(conn: Connection, shared_deployment: dict[str, Any]) -> None:
    listing = await conn.call_ok("list_deployments")
    by_model = await conn.call_ok("list_deployments", {"model": TINY_MODEL})

    ids = [deployment["id"] for deployment in listing["deployments"]]
    assert shared_deployment["id"] in ids
    assert shared_deployment["id"] in [deployment["id"] for deployment in by_model["deployments"]]
    assert {deployment["model_name"] for deployment in by_model["deployments"]} == {TINY_MODEL}


async def test_get_deployment_matches_deploy_result(
    conn: Connection, shared_deployment: dict[str, Any]
) -> None:
    view = await conn.call_ok("get_deployment", {"deployment_id": shared_deployment["id"]})

    assert view["id"] == shared_deployment["id"]
    assert view["status"] == "DEPLOYED"
    assert view["instances"] == shared_deployment["instances"]
    assert view["endpoint_url"] == shared_deployment["endpoint_url"]


async def test_deployment_status_is_deployed(conn: Connection, shared_deployment: dict[str, Any]) -> None:
    deployment_id = shared_deployment["id"]

    view = await conn.call_ok("get_deployment_status", {"deployment_id": deployment_id.upper()})

    assert view == {"deployment_id": deployment_id, "status": "DEPLOYED", "ready": True, "terminal": True}


# Instances and health


async def test_instances_of_deployment(conn: Connection, shared_deployment: dict[str, Any]) -> None:
    deployment_id = shared_deployment["id"]

    listing = await conn.call_ok("list_model_instances", {"deployment_id": deployment_id})
    # The maximum page, so instances of the session's other deployments cannot push these off it.
    everything = await conn.call_ok("list_model_instances", {"limit": 200})

    by_id = sorted(shared_deployment["instances"], key=lambda instance: instance["id"])
    assert listing["instances"] == by_id
    assert {i["deployment_id"] for i in listing["instances"]} == {deployment_id}
    all_ids = {instance["id"] for instance in everything["instances"]}
    assert {instance["id"] for instance in listing["instances"]} <= all_ids


async def test_get_model_instance(conn: Connection, shared_deployment: dict[str, Any]) -> None:
    expected = shared_deployment["instances"][1]

    view = await conn.call_ok("get_model_instance", {"instance_id": expected["id"]})

    assert view == expected


async def test_health_of_deployment(conn: Connection, shared_deployment: dict[str, Any]) -> None:
    deployment_id = shared_deployment["id"]

    one = await conn.call_ok("get_health", {"deployment_id": deployment_id})
    everything = await conn.call_ok("get_health")

    [entry] = one["deployments"]
    assert entry["deployment_id"] == deployment_id
    assert entry["model_name"] == TINY_MODEL
    assert entry["status"] == "DEPLOYED"
    assert sorted(i["instance_id"] for i in entry["instances"]) == sorted(
        i["id"] for i in shared_deployment["instances"]
    )
    assert {i["health"] for i in entry["instances"]} == {"healthy"}
    assert {i["status"] for i in entry["instances"]} == {"DEPLOYED"}
    assert deployment_id in [d["deployment_id"] for d in everything["deployments"]]


# Generation


async def test_generate_from_prompt(conn: Connection, shared_deployment: dict[str, Any]) -> None:
    arguments = {
        "deployment_id": shared_deployment["id"],
        "prompt": "The weather today is",
        "max_tokens": 12,
        "temperature": 0,
        "seed": 7,
    }

    first = await conn.call("generate", arguments)
    second = await conn.call_ok("generate", arguments)

    assert first.is_error is False, text_of(first)
    view = first.structured_content
    assert view is not None
    assert view["deployment_id"] == shared_deployment["id"]
    assert view["text"]
    assert view["finish_reason"] in ("stop", "length")
    usage = view["usage"]
    assert usage["prompt_tokens"] > 0
    assert 1 <= usage["completion_tokens"] <= 12
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    if view["finish_reason"] == "length":
        assert usage["completion_tokens"] == 12
    assert text_of(first).startswith(view["text"])
    assert f"{usage['completion_tokens']} generated" in text_of(first)
    assert second["text"] == view["text"]


async def test_generate_from_messages(conn: Connection, shared_deployment: dict[str, Any]) -> None:
    view = await conn.call_ok(
        "generate",
        {
            "deployment_id": shared_deployment["id"],
            "messages": [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": "Name a colour."},
            ],
            "max_tokens": 6,
            "top_p": 0.9,
            "stop": ["\n\n"],
        },
    )

    usage = view["usage"]
    assert view["deployment_id"] == shared_deployment["id"]
    assert isinstance(view["text"], str)
    assert view["finish_reason"] in ("stop", "length")
    assert usage["prompt_tokens"] > 0
    assert 1 <= usage["completion_tokens"] <= 6
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_simple_generate_returns_text(conn: Connection, shared_deployment: dict[str, Any]) -> None:
    result = await conn.call(
        "simple_generate", {"deployment_id": shared_deployment["id"], "prompt": "Say hello.", "max_tokens": 8}
    )

    assert result.is_error is False, text_of(result)
    assert result.structured_content is not None
    assert result.structured_content["deployment_id"] == shared_deployment["id"]
    assert result.structured_content["text"] == text_of(result)


@pytest.mark.parametrize(
    ("extra", "got"),
    [({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, "both"), ({}, "neither")],
)
async def test_generate_needs_one_input(
    conn: Connection, shared_deployment: dict[str, Any], extra: dict[str, Any], got: str
) -> None:
    result = await conn.call("generate", {"deployment_id": shared_deployment["id"], **extra})

    assert result.is_error is True
    assert text_of(result) == (
        f"InvalidRequestError: generate needs exactly one of prompt and messages, got {got}; "
        "pass prompt for plain text completion, or messages for a chat"
    )


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"prompt": "a", "stop": ["1", "2", "3", "4", "5"]}, "stop"),
        ({"prompt": "a", "max_tokens": 4097}, "max_tokens"),
        ({"prompt": "a", "temperature": 2.5}, "temperature"),
        ({"prompt": "a", "top_p": 0}, "top_p"),
        ({"messages": [{"role": "robot", "content": "b"}]}, "role"),
    ],
)
async def test_generate_rejects_out_of_bounds(
    conn: Connection, shared_deployment: dict[str, Any], arguments: dict[str, Any], field: str
) -> None:
    result = await conn.call("generate", {"deployment_id": shared_deployment["id"], **arguments})

    assert result.is_error is True
    assert field in text_of(result)


async def test_unknown_argument_is_rejected(conn: Connection, shared_deployment: dict[str, Any]) -> None:
    result = await conn.call("get_deployment", {"deployment_id": shared_deployment["id"], "verbose": True})

    assert result.is_error is True
    assert text_of(result) == (
        "InvalidRequestError: get_deployment does not accept the argument verbose; nothing was done; "
        "call it again with only these arguments: deployment_id, response_format"
    )
