"""unload_model and load_model on a loopback Kamiwaza 1.2.0, which has no load or unload route.

The server stops the deployment and keeps its creation request in its state
folder; load_model, even from a restarted server, deploys that request again.
(The local platform's native load and unload, which keep the id, are tested
in tests/mcp/test_mcp_confirm.py.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
from loopback_platform import DEPLOY_PATH, LoopbackPlatform
from mcp import Client
from mcp_types import CallToolResult

from kamiwaza_mcp.config import ServerSettings
from kamiwaza_mcp.policy import ConfirmationMode, Policy
from kamiwaza_mcp.server import UNLOADED_DEPLOYMENTS_FILE, build_server


def text_of(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if block.type == "text")


async def call_ok(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    with anyio.fail_after(20):
        result = await client.call_tool(tool, arguments)
    assert result.is_error is False, f"{tool}: {text_of(result)}"
    content: dict[str, Any] | None = result.structured_content
    assert content is not None
    return content


async def call_text(client: Client, tool: str, arguments: dict[str, Any]) -> str:
    with anyio.fail_after(20):
        result = await client.call_tool(tool, arguments)
    assert result.is_error is False, f"{tool}: {text_of(result)}"
    return text_of(result)


def settings_for(url: str, state_dir: Path) -> ServerSettings:
    return ServerSettings(
        base_url=url, state_dir=state_dir, policy=Policy(confirmation=ConfirmationMode.TOKEN)
    )


async def test_unload_stops_and_load_deploys_again(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with LoopbackPlatform() as platform:
            async with Client(build_server(settings_for(platform.url, tmp_path))) as client:
                deployed = await call_ok(client, "deploy_model", {"model": "acme/tiny-llama", "replicas": 2})
                old_id = deployed["id"]
                preview = await call_ok(client, "unload_model", {"deployment_id": old_id})
                token = preview["confirmation_token"]
                assert isinstance(token, str)
                unloaded = await call_ok(
                    client, "unload_model", {"deployment_id": old_id, "confirmation_token": token}
                )

            assert unloaded["deployment"]["status"] == "STOPPED"
            assert len(platform.requests_to("DELETE", f"/api/serving/deployment/{old_id}")) == 1
            stored = json.loads((tmp_path / UNLOADED_DEPLOYMENTS_FILE).read_text())
            assert stored["platforms"][platform.url][old_id]["request"] == platform.deploy_posts[0].json()

            # A restarted server reads the kept request from its state folder.
            async with Client(build_server(settings_for(platform.url, tmp_path))) as client:
                text = await call_text(client, "load_model", {"deployment_id": old_id})
                again = await call_text(client, "load_model", {"deployment_id": old_id})

    first_post, second_post = platform.deploy_posts
    assert second_post.json() == first_post.json()
    new_id = next(d for d in platform.deployments if d != old_id)
    assert text.startswith(
        f"The platform has no load route, so unloaded deployment {old_id} was deployed again "
        f"as the new deployment {new_id}; use {new_id} from now on. Deployment "
    )
    assert f"as the new deployment {new_id}" in again
    assert len(platform.requests_to("POST", DEPLOY_PATH)) == 2
    assert platform.deployments[old_id]["status"] == "STOPPED"
    assert platform.deployments[new_id]["status"] == "DEPLOYED"


async def test_load_of_stopped_deployment_asks_to_deploy(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with (
            LoopbackPlatform() as platform,
            Client(build_server(settings_for(platform.url, tmp_path))) as client,
        ):
            deployed = await call_ok(client, "deploy_model", {"model": "acme/tiny-llama"})
            platform.deployments[deployed["id"]]["status"] = "STOPPED"
            with anyio.fail_after(20):
                result = await client.call_tool("load_model", {"deployment_id": deployed["id"]})

    assert result.is_error is True
    assert text_of(result) == (
        f"InvalidRequestError: cannot load deployment {deployed['id']}: it is STOPPED, and the platform at "
        f"{platform.url} has no load route (Kamiwaza 1.2.0 has none), so only a deployment that this "
        "server's unload_model stopped can be loaded again; call deploy_model to serve the model again"
    )
    assert len(platform.deploy_posts) == 1


async def test_load_of_running_deployment_changes_nothing(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with (
            LoopbackPlatform() as platform,
            Client(build_server(settings_for(platform.url, tmp_path))) as client,
        ):
            deployed = await call_ok(client, "deploy_model", {"model": "acme/tiny-llama"})
            loaded = await call_ok(client, "load_model", {"deployment_id": deployed["id"]})

    assert loaded["id"] == deployed["id"]
    assert loaded["status"] == "DEPLOYED"
    assert len(platform.deploy_posts) == 1
    assert not (tmp_path / UNLOADED_DEPLOYMENTS_FILE).exists()
