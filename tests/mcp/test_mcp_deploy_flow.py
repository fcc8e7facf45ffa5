"""Deploying by repo id and by name on the local platform, through the tools.

The models folder contains the tiny model three times: as `acme/flow-llama` and
`other/flow-llama` (two levels deep, so their repo ids are `org/name` and their
names collide) and as `solo-flow-llama`. Each folder is a real directory whose
files link to the tiny model, so each gets a model id of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp_support import DEPLOY_TIMEOUT, text_of

from kamiwaza_mcp.config import ServerSettings
from kamiwaza_mcp.policy import Policy
from kamiwaza_mcp.server import build_server

pytestmark = [pytest.mark.slow]


def link_model(source: Path, folder: Path) -> None:
    folder.mkdir(parents=True)
    for file in source.iterdir():
        (folder / file.name).symlink_to(file)


async def call(client: Client, tool: str, arguments: dict[str, Any]) -> Any:
    with anyio.fail_after(DEPLOY_TIMEOUT + 30):
        return await client.call_tool(tool, arguments)


async def call_ok(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await call(client, tool, arguments)
    assert result.is_error is False, f"{tool}: {text_of(result)}"
    content: dict[str, Any] | None = result.structured_content
    assert content is not None
    return content


async def test_deploy_by_repo_id_and_by_name(tiny_model_dir: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    for folder in ("acme/flow-llama", "other/flow-llama", "solo-flow-llama"):
        link_model(tiny_model_dir, models / folder)
    settings = ServerSettings(
        state_dir=tmp_path / "state", models_dir=models, policy=Policy(max_wait_seconds=DEPLOY_TIMEOUT)
    )

    with anyio.fail_after(3 * DEPLOY_TIMEOUT):
        async with Client(build_server(settings)) as client:
            listing = await call_ok(client, "list_models", {"limit": 100})
            ids = {
                model["repo_id"]: model["id"] for model in listing["models"] if "flow-llama" in model["name"]
            }
            assert set(ids) == {"acme/flow-llama", "other/flow-llama", "solo-flow-llama"}

            ambiguous = await call(client, "estimate_model_vram", {"model": "flow-llama"})
            other = await call_ok(client, "estimate_model_vram", {"model": "other/flow-llama"})
            by_repo_id = await call_ok(
                client, "deploy_model", {"model": "acme/flow-llama", "wait_timeout_seconds": DEPLOY_TIMEOUT}
            )
            by_name = await call_ok(
                client, "deploy_model", {"model": "solo-flow-llama", "wait_timeout_seconds": DEPLOY_TIMEOUT}
            )
            of_acme = await call_ok(client, "list_deployments", {"model": ids["acme/flow-llama"]})
            of_solo = await call_ok(client, "list_deployments", {"model": ids["solo-flow-llama"]})

    assert ambiguous.is_error is True
    assert text_of(ambiguous) == (
        f"InvalidRequestError: model 'flow-llama' is ambiguous: acme/flow-llama (id {ids['acme/flow-llama']}), "
        f"other/flow-llama (id {ids['other/flow-llama']}); pass the repo id or the id of the model you mean"
    )
    assert other["model_id"] == ids["other/flow-llama"]
    assert by_repo_id["status"] == "DEPLOYED"
    assert [d["id"] for d in of_acme["deployments"]] == [by_repo_id["id"]]
    assert by_name["status"] == "DEPLOYED"
    assert [d["id"] for d in of_solo["deployments"]] == [by_name["id"]]
