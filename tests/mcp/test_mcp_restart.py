"""The embedded local platform behind the server keeps deployments across a server restart."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp import Client
from mcp_support import DEPLOY_TIMEOUT, TINY_MODEL, Connection, FakeClock, text_of

from kamiwaza_mcp.config import ServerSettings
from kamiwaza_mcp.policy import Policy
from kamiwaza_mcp.server import build_server

pytest_plugins = ["mcp_fixtures"]
pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.slow]


async def test_restart_lists_earlier_deployment(models_dir: Path, tmp_path: Path) -> None:
    settings = ServerSettings(
        state_dir=tmp_path / "state", models_dir=models_dir, policy=Policy(max_wait_seconds=DEPLOY_TIMEOUT)
    )

    async with Client(build_server(settings), mode="legacy") as client:
        first = Connection(client=client, mode="legacy", clock=FakeClock())
        result = await first.call("deploy_model", {"model": TINY_MODEL, "wait": False})
    # The server stops while the deployment may still be starting.
    assert result.is_error is False
    deployed = result.structured_content
    assert deployed is not None
    assert deployed["status"] in ("REQUESTED", "DEPLOYING")
    assert text_of(result).endswith(
        f"call get_deployment_status with deployment_id {deployed['id']} until it is DEPLOYED"
    )

    async with Client(build_server(settings), mode="auto") as client:
        second = Connection(client=client, mode="auto", clock=FakeClock())
        listing = await second.call_ok("list_deployments")
        [entry] = listing["deployments"]
        assert entry["id"] == deployed["id"]
        assert entry["model_name"] == TINY_MODEL

        # The platform starts the deployment's workers again after the restart;
        # load_model leaves a DEPLOYING deployment as it is and waits for it.
        loaded = await second.call_ok(
            "load_model",
            {"deployment_id": deployed["id"], "wait_timeout_seconds": DEPLOY_TIMEOUT},
            within=DEPLOY_TIMEOUT + 30,
        )
        assert loaded["status"] == "DEPLOYED"
        generated = await second.call_ok(
            "simple_generate", {"deployment_id": deployed["id"], "prompt": "hello", "max_tokens": 4}
        )
        assert generated["deployment_id"] == deployed["id"]
