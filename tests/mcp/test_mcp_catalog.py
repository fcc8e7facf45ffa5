"""Tool listing, models, cluster status and error results, through a real MCP client; no workers start."""

from __future__ import annotations

import importlib.util
import json
import uuid
from typing import Any

import pytest
from mcp_support import TINY_MODEL, Connection, text_of, tiny_model_id

from kamiwaza_mcp.client import KamiwazaClient
from kamiwaza_mcp.client.models import CreateModelDeployment

pytest_plugins = ["mcp_fixtures"]
pytestmark = pytest.mark.asyncio(loop_scope="session")

READ_ONLY = (True, False, True, False)
# (readOnlyHint, destructiveHint, idempotentHint, openWorldHint) of every tool.
EXPECTED_HINTS = {
    "start_ray": (False, False, True, False),
    "get_status": READ_ONLY,
    "list_models": READ_ONLY,
    "estimate_model_vram": READ_ONLY,
    "deploy_model": (False, False, False, False),
    "list_deployments": READ_ONLY,
    "get_deployment": READ_ONLY,
    "get_deployment_status": READ_ONLY,
    "stop_deployment": (False, True, True, False),
    "list_model_instances": READ_ONLY,
    "get_model_instance": READ_ONLY,
    "get_health": READ_ONLY,
    "get_deployment_logs": READ_ONLY,
    "unload_model": (False, True, True, False),
    "load_model": (False, False, True, False),
    "simple_generate": READ_ONLY,
    "generate": READ_ONLY,
}


def walk_properties(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Return every property schema below `schema`, with its path, including those of array items."""
    found = []
    for name, sub in schema.get("properties", {}).items():
        found.append((f"{path}/{name}", sub))
        found += walk_properties(sub, f"{path}/{name}")
        if isinstance(sub.get("items"), dict):
            found += walk_properties(sub["items"], f"{path}/{name}[]")
    return found


# Listing


async def test_tools_list_publishes_every_tool(conn: Connection) -> None:
    listing = await conn.client.list_tools()
    tools = {tool.name: tool for tool in listing.tools}

    assert set(tools) == set(EXPECTED_HINTS)
    for name, tool in tools.items():
        assert tool.title, name
        assert tool.description, name
        hints = tool.annotations
        assert hints is not None, name
        # The title is published once, as the tool's own title.
        assert hints.title is None, name
        assert (
            hints.read_only_hint,
            hints.destructive_hint,
            hints.idempotent_hint,
            hints.open_world_hint,
        ) == (EXPECTED_HINTS[name]), name


async def test_input_schemas_are_portable(conn: Connection) -> None:
    listing = await conn.client.list_tools()

    for tool in listing.tools:
        schema = tool.input_schema
        assert schema["type"] == "object", tool.name
        assert schema["additionalProperties"] is False, tool.name
        assert "$ref" not in json.dumps(schema), tool.name
        assert "$defs" not in json.dumps(schema), tool.name
        for path, sub in walk_properties(schema):
            assert "type" in sub, f"{tool.name}{path} has no type"
            if sub["type"] == "array":
                assert "items" in sub, f"{tool.name}{path} has no items"


async def test_output_schemas_are_published(conn: Connection) -> None:
    listing = await conn.client.list_tools()

    for tool in listing.tools:
        assert tool.output_schema is not None, tool.name
        assert tool.output_schema["type"] == "object", tool.name
        assert "$ref" not in json.dumps(tool.output_schema), tool.name


async def test_generate_schema_pins_bounds(conn: Connection) -> None:
    listing = await conn.client.list_tools()
    schema = next(tool.input_schema for tool in listing.tools if tool.name == "generate")
    properties = schema["properties"]

    assert schema["required"] == ["deployment_id"]
    assert properties["max_tokens"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 4096,
        "default": 256,
        "description": "maximum number of tokens to generate",
    }
    assert (properties["temperature"]["minimum"], properties["temperature"]["maximum"]) == (0, 2)
    assert (properties["top_p"]["exclusiveMinimum"], properties["top_p"]["maximum"]) == (0, 1)
    assert properties["stop"]["maxItems"] == 4
    assert properties["stop"]["items"]["type"] == "string"
    assert properties["messages"]["items"]["properties"]["role"]["enum"] == ["system", "user", "assistant"]


# Models


async def test_list_models_reports_tiny_model(conn: Connection, rest: KamiwazaClient) -> None:
    model_id = await tiny_model_id(rest)

    result = await conn.call("list_models", {"response_format": "detailed"})

    assert result.is_error is False
    assert result.structured_content is not None
    [model] = result.structured_content["models"]
    assert model["id"] == model_id
    assert model["name"] == TINY_MODEL
    assert model["hosted"] == "local"
    assert "model.safetensors" in model["files"]
    assert model["size_bytes"] > 0
    assert f"- {TINY_MODEL} (id {model_id}" in text_of(result)


async def test_estimate_matches_platform(conn: Connection, rest: KamiwazaClient) -> None:
    model_id = await tiny_model_id(rest)
    config = await rest.select_config(model_id)
    expected = await rest.estimate_model_vram(
        CreateModelDeployment(
            m_id=model_id, m_config_id=config.id, min_copies=2, starting_copies=2, max_concurrent_requests=3
        )
    )

    view = await conn.call_ok(
        "estimate_model_vram", {"model": TINY_MODEL, "replicas": 2, "max_concurrent_requests": 3}
    )

    assert view["model_id"] == model_id
    assert view["model_name"] == TINY_MODEL
    assert view["replicas"] == 2
    assert view["max_concurrent_requests"] == 3
    assert view["per_replica_bytes"] == expected["computed_vram_estimate"]
    assert view["total_bytes"] == 2 * expected["computed_vram_estimate"]
    # Free memory changes between two calls, so only its relation to the total is pinned.
    assert view["available_bytes"] > 0
    assert view["fits"] is (view["total_bytes"] <= view["available_bytes"])
    assert view["source"] == "safetensors"
    assert view["context_length"] == expected["context_length"]
    assert view["breakdown"]["weights_bytes"] == expected["weights_bytes"]
    assert view["breakdown"]["kv_cache_bytes"] == expected["kv_cache_bytes"]
    assert view["breakdown"]["concurrency"] == 3


async def test_estimate_rescales_context_length(conn: Connection, rest: KamiwazaClient) -> None:
    model_id = await tiny_model_id(rest)
    config = await rest.select_config(model_id)
    base = await rest.estimate_model_vram(CreateModelDeployment(m_id=model_id, m_config_id=config.id))
    short = base["context_length"] // 4

    view = await conn.call_ok("estimate_model_vram", {"model": model_id, "context_length": short})

    scaled_kv = base["kv_cache_bytes"] * short // base["context_length"]
    assert view["context_length"] == short
    assert view["breakdown"]["kv_cache_bytes"] == scaled_kv
    assert view["breakdown"]["platform_context_length"] == base["context_length"]
    assert view["per_replica_bytes"] == base["computed_vram_estimate"] - base["kv_cache_bytes"] + scaled_kv


async def test_estimate_unknown_model_is_not_found(conn: Connection) -> None:
    result = await conn.call("estimate_model_vram", {"model": "no-such-model"})

    assert result.is_error is True
    assert text_of(result).startswith("NotFoundError: no model 'no-such-model'")
    assert "list_models" in text_of(result)


# Cluster


async def test_get_status_reports_local_node(conn: Connection, rest: KamiwazaClient) -> None:
    expected = await rest.get_status()

    view = await conn.call_ok("get_status")

    assert view["status"] == "not running"
    assert view["running"] is False
    assert len(view["nodes"]) == len(expected.nodes) == 1
    assert view["resources"] == expected.resources
    assert view["resources"]["CPU"] >= 1


# NOTE: with ray installed, start_ray starts a real Ray head, which no test here
# covers; on the development machine that call did not return within 5 minutes.
@pytest.mark.skipif(
    importlib.util.find_spec("ray") is not None, reason="starting a real Ray head is out of scope"
)
async def test_start_ray_without_ray_names_the_extra(conn: Connection) -> None:
    result = await conn.call("start_ray")

    assert result.is_error is True
    assert text_of(result).startswith("APIError: POST /api/serving/start failed with HTTP 400")
    assert "kamiwaza-mcp[ray]" in text_of(result)


# Errors


UNKNOWN = str(uuid.UUID(int=0x5F3C))


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("get_deployment", {"deployment_id": UNKNOWN}),
        ("get_deployment_status", {"deployment_id": UNKNOWN}),
        ("stop_deployment", {"deployment_id": UNKNOWN}),
        ("unload_model", {"deployment_id": UNKNOWN}),
        ("load_model", {"deployment_id": UNKNOWN}),
        ("list_model_instances", {"deployment_id": UNKNOWN}),
        ("get_model_instance", {"instance_id": UNKNOWN}),
        ("get_health", {"deployment_id": UNKNOWN}),
        ("simple_generate", {"deployment_id": UNKNOWN, "prompt": "a"}),
        ("generate", {"deployment_id": UNKNOWN, "prompt": "a"}),
    ],
)
async def test_unknown_id_is_not_found(conn: Connection, tool: str, arguments: dict[str, Any]) -> None:
    result = await conn.call(tool, arguments)

    assert result.is_error is True
    text = text_of(result)
    assert text.startswith("NotFoundError: "), text
    assert UNKNOWN in text
    assert "call list_" in text


@pytest.mark.parametrize(
    ("tool", "arguments", "what", "listing"),
    [
        ("get_deployment", {"deployment_id": "my-deployment"}, "deployment", "list_deployments"),
        ("stop_deployment", {"deployment_id": "my-deployment"}, "deployment", "list_deployments"),
        ("generate", {"deployment_id": "my-deployment", "prompt": "a"}, "deployment", "list_deployments"),
        ("get_model_instance", {"instance_id": "my-deployment"}, "instance", "list_model_instances"),
    ],
)
async def test_non_uuid_id_is_invalid(
    conn: Connection, tool: str, arguments: dict[str, Any], what: str, listing: str
) -> None:
    result = await conn.call(tool, arguments)

    assert result.is_error is True
    assert text_of(result) == (
        f"InvalidRequestError: invalid {what} id 'my-deployment': expected a UUID such as "
        f"5f3c2a8e-0c1d-4b7a-9e2f-1a2b3c4d5e6f; call {listing} to find the id"
    )


async def test_deploy_unknown_model_creates_nothing(conn: Connection, rest: KamiwazaClient) -> None:
    before = [deployment.id for deployment in await rest.list_deployments()]

    result = await conn.call("deploy_model", {"model": "no-such-model", "replicas": 1})

    assert result.is_error is True
    assert text_of(result).startswith("NotFoundError: no model 'no-such-model'")
    assert [deployment.id for deployment in await rest.list_deployments()] == before
