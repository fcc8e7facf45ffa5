"""Results sized for a model's context: pages with a stable order, concise and detailed formats, cut results.

A second platform with five model folders gives list_models several pages
without starting a worker; the deployment and instance lists page through the
session's shared deployment.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from mcp_support import MODES, Connection, Held, connect, serve_platform, text_of

from kamiwaza_mcp.client import KamiwazaClient
from kamiwaza_mcp.local import LocalPlatformSettings
from kamiwaza_mcp.policy import Policy

pytest_plugins = ["mcp_fixtures"]
pytestmark = pytest.mark.asyncio(loop_scope="session")

# Listed in their stable order: by name, ignoring case.
MODEL_NAMES = ["model-a", "Model-B", "model-c", "model-d", "model-e"]
CONCISE_MODEL_KEYS = {"name", "id", "repo_id", "size_bytes"}
CONCISE_DEPLOYMENT_KEYS = {
    "model_name",
    "status",
    "id",
    "replicas",
    "replicas_up",
    "endpoint_url",
    "last_error",
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def many_models_url(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    """The API URL of a platform whose models folder contains the tiny model under five names.

    The platform derives a model's id from its resolved folder, so the copies are
    folders of their own, of hard links to the tiny model's files.
    """
    folder = tmp_path_factory.mktemp("many-models")
    for name in reversed(MODEL_NAMES):
        shutil.copytree(tiny_model_dir, folder / name, copy_function=os.link)
    settings = LocalPlatformSettings(
        state_dir=tmp_path_factory.mktemp("many-models-state"), models_dir=folder
    )
    held = Held(serve_platform(settings))
    url = await held.start()
    yield url
    await held.close()


async def all_pages(conn: Connection, tool: str, arguments: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """Follow next_cursor from the first page to the last and return the pages' structured content."""
    pages = [await conn.call_ok(tool, arguments)]
    while pages[-1]["next_cursor"] is not None:
        assert len(pages) <= 20, "the pages never end"
        pages.append(await conn.call_ok(tool, {**arguments, "cursor": pages[-1]["next_cursor"]}))
    for page in pages:
        assert key in page
    return pages


# Pages


@pytest.mark.parametrize("mode", MODES)
async def test_models_page_in_stable_order(many_models_url: str, mode: str) -> None:
    async with connect(many_models_url, mode) as conn:
        pages = await all_pages(conn, "list_models", {"limit": 2}, "models")
        again = await all_pages(conn, "list_models", {"limit": 2}, "models")
        everything = await conn.call_ok("list_models", {"limit": 200})

    assert [[model["name"] for model in page["models"]] for page in pages] == [
        ["model-a", "Model-B"],
        ["model-c", "model-d"],
        ["model-e"],
    ]
    assert {page["total"] for page in pages} == {5}
    assert pages[-1]["next_cursor"] is None
    assert [page["next_cursor"] for page in again] == [page["next_cursor"] for page in pages]
    assert [model["name"] for model in everything["models"]] == MODEL_NAMES
    assert everything["next_cursor"] is None


async def test_page_text_names_next_cursor(many_models_url: str) -> None:
    async with connect(many_models_url, "legacy") as conn:
        result = await conn.call("list_models", {"limit": 2})

    assert result.structured_content is not None
    cursor = result.structured_content["next_cursor"]
    lines = text_of(result).splitlines()
    assert lines[0] == f"2 of 5 models; the next page has cursor {cursor}:"
    assert lines[1].startswith("- model-a (id ")
    assert lines[2].startswith("- Model-B (id ")
    assert len(lines) == 3


async def test_foreign_or_garbled_cursor_is_rejected(many_models_url: str) -> None:
    async with connect(many_models_url, "legacy") as conn:
        page = await conn.call_ok("list_models", {"limit": 1})
        foreign = await conn.call("list_deployments", {"cursor": page["next_cursor"]})
        garbled = await conn.call("list_models", {"cursor": "not-a-cursor"})

    expected = (
        "InvalidRequestError: invalid cursor {!r}: it is not a next_cursor that {} returned; pass next_cursor "
        "from the previous page unchanged, or omit cursor for the first page"
    )
    assert text_of(foreign) == expected.format(page["next_cursor"], "list_deployments")
    assert text_of(garbled) == expected.format("not-a-cursor", "list_models")


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
async def test_instances_page_by_one(platform_url: str, shared_deployment: dict[str, Any], mode: str) -> None:
    arguments = {"deployment_id": shared_deployment["id"], "limit": 1}

    async with connect(platform_url, mode) as conn:
        pages = await all_pages(conn, "list_model_instances", arguments, "instances")

    assert len(pages) == 2
    assert [page["total"] for page in pages] == [2, 2]
    listed = [instance["id"] for page in pages for instance in page["instances"]]
    assert listed == sorted(instance["id"] for instance in shared_deployment["instances"])


@pytest.mark.slow
async def test_deployments_page_by_one(
    platform_url: str, rest: KamiwazaClient, shared_deployment: dict[str, Any]
) -> None:
    async with connect(platform_url, "auto") as conn:
        pages = await all_pages(conn, "list_deployments", {"limit": 1}, "deployments")
        everything = await conn.call_ok("list_deployments", {"limit": 200})

    oldest_first = sorted(await rest.list_deployments(), key=lambda d: (d.created_at, d.id))
    assert [d["id"] for page in pages for d in page["deployments"]] == [d.id for d in oldest_first]
    assert [d["id"] for d in everything["deployments"]] == [d.id for d in oldest_first]
    assert shared_deployment["id"] in [d["id"] for d in everything["deployments"]]


# Concise and detailed


async def test_models_concise_and_detailed(many_models_url: str) -> None:
    async with connect(many_models_url, "legacy") as conn:
        concise = await conn.call_ok("list_models", {"limit": 1})
        detailed = await conn.call_ok("list_models", {"limit": 1, "response_format": "detailed"})
    async with KamiwazaClient(many_models_url) as rest:
        [platform_model] = [model for model in await rest.list_models() if model.name == "model-a"]

    [short] = concise["models"]
    [full] = detailed["models"]
    assert set(short) == CONCISE_MODEL_KEYS
    assert set(full) == CONCISE_MODEL_KEYS | {"family", "hosted", "files", "platform"}
    assert {key: full[key] for key in CONCISE_MODEL_KEYS} == short
    platform = platform_model.model_dump(mode="json", exclude_unset=True)
    assert set(full["platform"]) == set(platform)
    for key in ("name", "id", "repo_modelId", "m_files", "hosted"):
        assert full["platform"][key] == platform[key], key


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
async def test_deployments_concise_and_detailed(
    platform_url: str, rest: KamiwazaClient, shared_deployment: dict[str, Any], mode: str
) -> None:
    shared = shared_deployment["id"]

    async with connect(platform_url, mode) as conn:
        concise = await conn.call("list_deployments", {"limit": 200})
        detailed = await conn.call("list_deployments", {"limit": 200, "response_format": "detailed"})
        one = await conn.call_ok("get_deployment", {"deployment_id": shared, "response_format": "detailed"})

    assert concise.structured_content is not None
    assert detailed.structured_content is not None
    [short] = [d for d in concise.structured_content["deployments"] if d["id"] == shared]
    [full] = [d for d in detailed.structured_content["deployments"] if d["id"] == shared]
    assert set(short) == CONCISE_DEPLOYMENT_KEYS
    assert short["replicas_up"] == 2
    assert set(full) == CONCISE_DEPLOYMENT_KEYS | {
        "model_id",
        "engine",
        "created_at",
        "instances",
        "platform",
    }
    assert full["instances"] == shared_deployment["instances"]
    platform = (await rest.get_deployment(shared)).model_dump(mode="json", exclude_unset=True)
    for key in ("id", "m_id", "m_name", "status", "starting_copies", "created_at"):
        assert full["platform"][key] == platform[key], key
        assert one["platform"][key] == platform[key], key
    # The text stays a readable line per deployment, not JSON.
    assert not text_of(concise).lstrip().startswith("{")
    assert f"tiny-llama DEPLOYED, 2/2 replicas up; id {shared}" in text_of(concise)


# Cut to the result budget


async def test_page_cut_to_budget(many_models_url: str) -> None:
    # A detailed model takes about 3,300 characters, so two fit in 2,500 tokens and five do not.
    budget = Policy(max_response_tokens=2500)

    async with connect(many_models_url, "legacy", policy=budget) as conn:
        first = await conn.call("list_models", {"limit": 5, "response_format": "detailed"})
        pages = await all_pages(conn, "list_models", {"limit": 5, "response_format": "detailed"}, "models")

    assert first.structured_content is not None
    kept = len(first.structured_content["models"])
    cursor = first.structured_content["next_cursor"]
    assert 1 <= kept < 5
    assert cursor is not None
    assert text_of(first).endswith(
        f"[Cut to {kept} models to stay under the server's limit of 2500 tokens per result; pass cursor "
        f"{cursor} for the next ones, a lower limit, or pass response_format concise.]"
    )
    assert len(text_of(first)) <= 2500 * 4
    assert len(json.dumps(first.structured_content)) <= 2500 * 4
    assert [model["name"] for page in pages for model in page["models"]] == MODEL_NAMES


@pytest.mark.slow
async def test_long_text_is_cut_with_note(platform_url: str, shared_deployment: dict[str, Any]) -> None:
    budget = Policy(max_response_tokens=100)

    async with connect(platform_url, "legacy", policy=budget) as conn:
        result = await conn.call(
            "get_deployment", {"deployment_id": shared_deployment["id"], "response_format": "detailed"}
        )

    text = text_of(result)
    assert result.is_error is False
    assert len(text) <= 100 * 4
    assert text.startswith(shared_deployment["id"])
    assert text.endswith(
        "\n[Cut: the result exceeded the server's limit of 100 tokens, estimated as characters / 4; "
        "pass response_format concise.]"
    )
