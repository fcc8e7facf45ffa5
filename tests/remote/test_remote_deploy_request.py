"""The CreateModelDeployment that estimate_model_vram and deploy_model send to a loopback Kamiwaza 1.2.0."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from loopback_platform import (
    DEFAULT_CONFIG_ID,
    DEPLOY_PATH,
    FILE_ID,
    MODEL_ID,
    SMALL_CONFIG_ID,
    LoopbackPlatform,
)
from mcp import Client
from mcp_types import CallToolResult

from kamiwaza_mcp.config import ServerSettings
from kamiwaza_mcp.server import build_server

ESTIMATE_PATH = "/api/serving/estimate_model_vram"


def text_of(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if block.type == "text")


async def estimate_and_deploy(
    tmp_path: Path, arguments: dict[str, Any]
) -> tuple[LoopbackPlatform, CallToolResult, CallToolResult]:
    """Call estimate_model_vram, then deploy_model, with the same `arguments`."""
    with anyio.fail_after(60):
        async with LoopbackPlatform() as platform:
            settings = ServerSettings(base_url=platform.url, state_dir=tmp_path)
            async with Client(build_server(settings)) as client:
                with anyio.fail_after(20):
                    estimate = await client.call_tool("estimate_model_vram", arguments)
                    deploy = await client.call_tool("deploy_model", {**arguments, "wait": False})
    return platform, estimate, deploy


@pytest.mark.parametrize("model", ["acme/tiny-llama", "tiny-llama", MODEL_ID])
async def test_estimate_sends_deploy_request(tmp_path: Path, model: str) -> None:
    arguments = {"model": model, "replicas": 2, "max_concurrent_requests": 4}
    platform, estimate, deploy = await estimate_and_deploy(tmp_path, arguments)

    assert estimate.is_error is False, text_of(estimate)
    assert deploy.is_error is False, text_of(deploy)
    (estimated,) = platform.requests_to("POST", ESTIMATE_PATH)
    (deployed,) = platform.requests_to("POST", DEPLOY_PATH)
    assert estimated.json() == deployed.json()
    body = deployed.json()
    assert body["m_id"] == MODEL_ID
    # The model's default configuration, though it is listed second.
    assert body["m_config_id"] == DEFAULT_CONFIG_ID
    assert body["m_file_id"] == FILE_ID
    assert body["min_copies"] == 2
    assert body["starting_copies"] == 2
    assert body["max_concurrent_requests"] == 4


async def test_chosen_config_is_sent(tmp_path: Path) -> None:
    arguments = {"model": "acme/tiny-llama", "config_id": SMALL_CONFIG_ID.upper()}
    platform, estimate, deploy = await estimate_and_deploy(tmp_path, arguments)

    assert estimate.is_error is False, text_of(estimate)
    assert deploy.is_error is False, text_of(deploy)
    (estimated,) = platform.requests_to("POST", ESTIMATE_PATH)
    (deployed,) = platform.requests_to("POST", DEPLOY_PATH)
    assert estimated.json() == deployed.json()
    assert deployed.json()["m_config_id"] == SMALL_CONFIG_ID
    assert deployed.json()["m_file_id"] is None


async def test_unknown_config_lists_configs(tmp_path: Path) -> None:
    unknown = "11111111-2222-4333-8444-555555555555"
    arguments = {"model": "acme/tiny-llama", "config_id": unknown}
    platform, estimate, deploy = await estimate_and_deploy(tmp_path, arguments)

    for result in (estimate, deploy):
        assert result.is_error is True
        assert text_of(result) == (
            f"NotFoundError: model {MODEL_ID} has no configuration {unknown}; its configurations: "
            f"small ({SMALL_CONFIG_ID}), default ({DEFAULT_CONFIG_ID}, default); "
            "pass one of the listed ids as config_id, or omit config_id for the default"
        )
    assert platform.requests_to("POST", ESTIMATE_PATH) == []
    assert platform.deploy_posts == []
