"""A deployment whose model cannot load, seen through the tools."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mcp import Client
from mcp_support import DEPLOY_TIMEOUT, Connection, FakeClock, text_of

from kamiwaza_mcp.config import ServerSettings
from kamiwaza_mcp.policy import Policy
from kamiwaza_mcp.server import build_server

pytest_plugins = ["mcp_fixtures"]
pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.slow]


async def test_model_without_weights_fails(tiny_model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "models" / "no-weights"
    broken.mkdir(parents=True)
    shutil.copy(tiny_model_dir / "config.json", broken / "config.json")
    settings = ServerSettings(
        state_dir=tmp_path / "state",
        models_dir=tmp_path / "models",
        policy=Policy(max_wait_seconds=DEPLOY_TIMEOUT),
    )

    async with Client(build_server(settings), mode="legacy") as client:
        conn = Connection(client=client, mode="legacy", clock=FakeClock())
        result = await conn.call(
            "deploy_model",
            {"model": "no-weights", "wait_timeout_seconds": DEPLOY_TIMEOUT},
            within=DEPLOY_TIMEOUT + 30,
        )
        assert result.is_error is False, text_of(result)
        view = result.structured_content
        assert view is not None
        assert view["status"] == "FAILED"
        assert view["last_error"].startswith("MODEL_LOADING_FAILURE: ")
        assert "last error MODEL_LOADING_FAILURE" in text_of(result)

        status = await conn.call("get_deployment_status", {"deployment_id": view["id"]})
        assert status.structured_content == {
            "deployment_id": view["id"],
            "status": "FAILED",
            "ready": False,
            "terminal": True,
        }
        assert text_of(status).endswith("; call get_deployment for the error")

        generated = await conn.call("generate", {"deployment_id": view["id"], "prompt": "hello"})
        assert generated.is_error is True
        assert text_of(generated) == (
            f"DeploymentError: deployment {view['id']} is FAILED, not DEPLOYED; call get_deployment for the error"
        )
