"""Resources, prompts and argument completion through a real MCP client, in both connection modes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError
from mcp_support import MODES, TINY_MODEL, connect
from mcp_types import INVALID_PARAMS, PromptReference, ResourceTemplateReference

from kamiwaza_mcp.client import KamiwazaClient
from kamiwaza_mcp.policy import Policy

pytest_plugins = ["mcp_fixtures"]
pytestmark = pytest.mark.asyncio(loop_scope="session")

UNKNOWN_DEPLOYMENT = "5f3c2a8e-0c1d-4b7a-9e2f-1a2b3c4d5e6f"
TEMPLATE = "kamiwaza://deployments/{id}"


@pytest.mark.parametrize("mode", MODES)
async def test_resources_and_prompts_are_listed(platform_url: str, mode: str) -> None:
    async with connect(platform_url, mode) as conn:
        resources = (await conn.client.list_resources()).resources
        templates = (await conn.client.list_resource_templates()).resource_templates
        prompts = (await conn.client.list_prompts()).prompts

    assert [(str(r.uri), r.name, r.mime_type) for r in resources] == [
        ("kamiwaza://deployments", "deployments", "application/json")
    ]
    assert [(t.uri_template, t.name) for t in templates] == [(TEMPLATE, "deployment")]
    by_name = {prompt.name: prompt for prompt in prompts}
    assert set(by_name) == {"deploy_a_model", "diagnose_deployment"}
    assert by_name["deploy_a_model"].title == "Deploy a model"
    assert [(a.name, a.required) for a in by_name["deploy_a_model"].arguments or []] == [
        ("model", False),
        ("replicas", False),
    ]
    assert [(a.name, a.required) for a in by_name["diagnose_deployment"].arguments or []] == [
        ("deployment_id", True)
    ]


async def test_read_only_server_has_no_deploy_prompt(platform_url: str) -> None:
    async with connect(platform_url, "legacy", policy=Policy(read_only=True)) as conn:
        prompts = (await conn.client.list_prompts()).prompts

    assert [prompt.name for prompt in prompts] == ["diagnose_deployment"]


@pytest.mark.parametrize("mode", MODES)
async def test_deploy_prompt_names_the_steps(platform_url: str, mode: str) -> None:
    async with connect(platform_url, mode) as conn:
        prompt = await conn.client.get_prompt("deploy_a_model", {"model": TINY_MODEL, "replicas": "2"})

    [message] = prompt.messages
    assert message.role == "user"
    assert message.content.type == "text"
    text = message.content.text
    assert text.startswith(f"Deploy the model {TINY_MODEL} on the Kamiwaza platform with 2 replica(s)")
    steps = ["list_models", "estimate_model_vram", "deploy_model", "get_deployment_status", "simple_generate"]
    positions = [text.index(step) for step in steps]
    assert positions == sorted(positions)


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
async def test_deployment_resources_read(
    platform_url: str, rest: KamiwazaClient, shared_deployment: dict[str, Any], mode: str
) -> None:
    shared = shared_deployment["id"]

    async with connect(platform_url, mode) as conn:
        listing = await conn.client.read_resource("kamiwaza://deployments")
        one = await conn.client.read_resource(f"kamiwaza://deployments/{shared}")
        view = await conn.call_ok("get_deployment", {"deployment_id": shared})

    [listing_content] = listing.contents
    assert listing_content.mime_type == "application/json"
    body = json.loads(listing_content.text)  # type: ignore[union-attr]
    assert body["total"] == len(await rest.list_deployments())
    [entry] = [d for d in body["deployments"] if d["id"] == shared]
    assert entry["model_name"] == TINY_MODEL
    assert entry["replicas_up"] == 2
    [one_content] = one.contents
    assert json.loads(one_content.text) == view  # type: ignore[union-attr]


@pytest.mark.parametrize("mode", MODES)
async def test_unknown_deployment_resource_is_not_found(platform_url: str, mode: str) -> None:
    async with connect(platform_url, mode) as conn:
        with pytest.raises(MCPError) as caught:
            await conn.client.read_resource(f"kamiwaza://deployments/{UNKNOWN_DEPLOYMENT}")

    assert caught.value.error.code == INVALID_PARAMS
    assert caught.value.error.message.startswith("NotFoundError: ")
    assert UNKNOWN_DEPLOYMENT in caught.value.error.message


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
async def test_diagnose_prompt_embeds_deployment(
    platform_url: str, shared_deployment: dict[str, Any], mode: str
) -> None:
    shared = shared_deployment["id"]

    async with connect(platform_url, mode) as conn:
        prompt = await conn.client.get_prompt("diagnose_deployment", {"deployment_id": shared.upper()})
        view = await conn.call_ok("get_deployment", {"deployment_id": shared})

    steps, snapshot = prompt.messages
    assert steps.content.type == "text"
    assert steps.content.text.startswith(f"Find out why deployment {shared} is not serving as expected.")
    assert "Do not stop or unload anything unless I ask." in steps.content.text
    assert snapshot.content.type == "resource"
    assert str(snapshot.content.resource.uri) == f"kamiwaza://deployments/{shared}"
    assert json.loads(snapshot.content.resource.text) == view  # type: ignore[union-attr]


# Completion


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
async def test_deployment_ids_complete(
    platform_url: str, shared_deployment: dict[str, Any], mode: str
) -> None:
    shared = shared_deployment["id"]

    async with connect(platform_url, mode) as conn:
        for_prompt = await conn.client.complete(
            PromptReference(type="ref/prompt", name="diagnose_deployment"),
            {"name": "deployment_id", "value": shared[:6].upper()},
        )
        for_template = await conn.client.complete(
            ResourceTemplateReference(type="ref/resource", uri=TEMPLATE), {"name": "id", "value": ""}
        )
        no_match = await conn.client.complete(
            ResourceTemplateReference(type="ref/resource", uri=TEMPLATE), {"name": "id", "value": "zz"}
        )

    assert shared in for_prompt.completion.values
    assert all(value.startswith(shared[:6]) for value in for_prompt.completion.values)
    assert shared in for_template.completion.values
    assert for_template.completion.values == sorted(for_template.completion.values)
    assert for_template.completion.total == len(for_template.completion.values)
    assert for_template.completion.has_more is False
    assert no_match.completion.values == []


@pytest.mark.parametrize("mode", MODES)
async def test_model_names_complete(platform_url: str, mode: str) -> None:
    async with connect(platform_url, mode) as conn:
        found = await conn.client.complete(
            PromptReference(type="ref/prompt", name="deploy_a_model"), {"name": "model", "value": "TI"}
        )
        other_argument = await conn.client.complete(
            PromptReference(type="ref/prompt", name="deploy_a_model"), {"name": "replicas", "value": "1"}
        )

    assert found.completion.values == [TINY_MODEL]
    assert found.completion.total == 1
    assert other_argument.completion.values == []
