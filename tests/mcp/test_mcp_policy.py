"""Modes and limits: read-only, disable-destructive, tool allow and deny lists, protected deployments,
replica, deployment and model limits; their settings, listings and rejected calls.

A rejected call must change nothing, so calls that would create a deployment
are followed by a check that the platform lists the same deployments.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp_support import DEPLOY_TIMEOUT, MODES, TINY_MODEL, connect, text_of

from kamiwaza_mcp.client import KamiwazaClient
from kamiwaza_mcp.client.models import Deployment
from kamiwaza_mcp.policy import Policy
from kamiwaza_mcp.tools import TOOL_NAMES

pytest_plugins = ["mcp_fixtures"]
pytestmark = pytest.mark.asyncio(loop_scope="session")

READ_ONLY_TOOLS = {
    "get_status",
    "list_models",
    "estimate_model_vram",
    "list_deployments",
    "get_deployment",
    "get_deployment_status",
    "list_model_instances",
    "get_model_instance",
    "get_health",
    "get_deployment_logs",
    "simple_generate",
    "generate",
}
DESTRUCTIVE_TOOLS = {"stop_deployment", "unload_model"}
OPERATOR = "tell the user; only the server's operator can change this setting"
UNKNOWN_DEPLOYMENT = "5f3c2a8e-0c1d-4b7a-9e2f-1a2b3c4d5e6f"


def policy(**changes: Any) -> Policy:
    return Policy(max_wait_seconds=DEPLOY_TIMEOUT, **changes)


def deployment(status: str, name: str = TINY_MODEL) -> Deployment:
    return Deployment(
        id=UNKNOWN_DEPLOYMENT,
        m_id="m",
        m_config_id="c",
        requested_at="t",
        created_at="t",
        status=status,
        m_name=name,
    )


async def deployment_ids(rest: KamiwazaClient) -> list[str]:
    return sorted(d.id for d in await rest.list_deployments())


# In memory


@pytest.mark.parametrize("mode", MODES)
async def test_read_only_hides_and_rejects(platform_url: str, rest: KamiwazaClient, mode: str) -> None:
    before = await deployment_ids(rest)

    async with connect(platform_url, mode, policy=policy(read_only=True)) as conn:
        listed = {tool.name for tool in (await conn.client.list_tools()).tools}
        deploy = await conn.call("deploy_model", {"model": TINY_MODEL})
        stop = await conn.call("stop_deployment", {"deployment_id": UNKNOWN_DEPLOYMENT})
        status = await conn.call("get_status")

    assert listed == READ_ONLY_TOOLS
    assert deploy.is_error is True
    assert text_of(deploy) == (
        "PolicyError: deploy_model is disabled on this server: the server runs with --read-only "
        "(KAMIWAZA_MCP_READ_ONLY), which disables tools that change anything; nothing was done; " + OPERATOR
    )
    assert stop.is_error is True
    assert text_of(stop).startswith(
        "PolicyError: stop_deployment is disabled on this server: the server runs with --read-only"
    )
    assert status.is_error is False
    assert await deployment_ids(rest) == before


@pytest.mark.parametrize("mode", MODES)
async def test_disable_destructive_hides_and_rejects(platform_url: str, mode: str) -> None:
    async with connect(platform_url, mode, policy=policy(disable_destructive=True)) as conn:
        listed = {tool.name for tool in (await conn.client.list_tools()).tools}
        results = {
            name: await conn.call(name, {"deployment_id": UNKNOWN_DEPLOYMENT}) for name in DESTRUCTIVE_TOOLS
        }

    assert listed == set(TOOL_NAMES) - DESTRUCTIVE_TOOLS
    for name, result in results.items():
        assert result.is_error is True
        assert text_of(result) == (
            f"PolicyError: {name} is disabled on this server: the server runs with --disable-destructive "
            "(KAMIWAZA_MCP_DISABLE_DESTRUCTIVE), which disables stop_deployment and unload_model; "
            "nothing was done; " + OPERATOR
        )


@pytest.mark.parametrize("mode", MODES)
async def test_allow_and_deny_lists(platform_url: str, mode: str) -> None:
    allow = policy(
        tools=frozenset({"get_status", "list_models", "generate"}), exclude_tools=frozenset({"generate"})
    )

    async with connect(platform_url, mode, policy=allow) as conn:
        listed = {tool.name for tool in (await conn.client.list_tools()).tools}
        outside = await conn.call("list_deployments")
        denied = await conn.call("generate", {"deployment_id": UNKNOWN_DEPLOYMENT, "prompt": "hi"})
        inside = await conn.call("list_models")

    assert listed == {"get_status", "list_models"}
    assert text_of(outside) == (
        "PolicyError: list_deployments is disabled on this server: list_deployments is not in the allow list "
        "--tools (KAMIWAZA_MCP_TOOLS); nothing was done; " + OPERATOR
    )
    assert text_of(denied) == (
        "PolicyError: generate is disabled on this server: generate is in the deny list --exclude-tools "
        "(KAMIWAZA_MCP_EXCLUDE_TOOLS); nothing was done; " + OPERATOR
    )
    assert inside.is_error is False


@pytest.mark.parametrize("mode", MODES)
async def test_deploy_limits_reject_before_creating(
    platform_url: str, rest: KamiwazaClient, mode: str
) -> None:
    before = await deployment_ids(rest)
    cases = [
        (policy(max_replicas=2), {"replicas": 3}, "3 replicas exceed KAMIWAZA_MCP_MAX_REPLICAS=2"),
        (policy(max_deployments=0), {}, "and KAMIWAZA_MCP_MAX_DEPLOYMENTS=0; stop one first"),
        (
            policy(allowed_models=("qwen*",)),
            {},
            f"model '{TINY_MODEL}' is not in KAMIWAZA_MCP_ALLOWED_MODELS",
        ),
    ]

    for rules, extra, fragment in cases:
        async with connect(platform_url, mode, policy=rules) as conn:
            result = await conn.call("deploy_model", {"model": TINY_MODEL, **extra})
        assert result.is_error is True, fragment
        assert text_of(result).startswith("PolicyError: deploy_model is rejected: "), text_of(result)
        assert fragment in text_of(result)
        assert text_of(result).endswith(OPERATOR)

    assert await deployment_ids(rest) == before


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
async def test_protected_deployment_is_never_stopped(
    platform_url: str, shared_deployment: dict[str, Any], mode: str
) -> None:
    shared = shared_deployment["id"]
    for entry in (shared, "TINY-*"):
        async with connect(platform_url, mode, policy=policy(protected_deployments=(entry,))) as conn:
            for tool in sorted(DESTRUCTIVE_TOOLS):
                result = await conn.call(tool, {"deployment_id": shared})
                assert result.is_error is True
                assert text_of(result) == (
                    f"PolicyError: {tool} is rejected: deployment {shared} ({TINY_MODEL}) is protected by "
                    f"{entry!r} in KAMIWAZA_MCP_PROTECTED_DEPLOYMENTS; nothing was done; " + OPERATOR
                )
            assert await conn.status_of(shared) == "DEPLOYED"


@pytest.mark.slow
async def test_deployment_limit_counts_running(platform_url: str, shared_deployment: dict[str, Any]) -> None:
    async with connect(platform_url, "legacy", policy=policy(max_deployments=1)) as conn:
        result = await conn.call("deploy_model", {"model": TINY_MODEL})

    assert result.is_error is True
    assert "KAMIWAZA_MCP_MAX_DEPLOYMENTS=1; stop one first" in text_of(result)


# Over stdio, the way a host starts the server


def stdio_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("KAMIWAZA_")}
    env["KAMIWAZA_MCP_STATE_DIR"] = str(tmp_path / "state")
    env["KAMIWAZA_MCP_MODELS_DIR"] = str(tmp_path / "models")
    env["HF_HUB_OFFLINE"] = "1"
    env.update(extra)
    return env


NO_DEPLOYMENT = {"deployment_id": UNKNOWN_DEPLOYMENT}


@pytest.mark.parametrize(
    ("args", "env", "listed", "call", "arguments", "setting"),
    [
        (["--read-only"], {}, READ_ONLY_TOOLS, "deploy_model", {"model": TINY_MODEL}, "--read-only"),
        ([], {"KAMIWAZA_MCP_READ_ONLY": "true"}, READ_ONLY_TOOLS, "start_ray", {}, "--read-only"),
        (
            [],
            {"KAMIWAZA_MCP_DISABLE_DESTRUCTIVE": "true"},
            set(TOOL_NAMES) - DESTRUCTIVE_TOOLS,
            "stop_deployment",
            NO_DEPLOYMENT,
            "--disable-destructive",
        ),
        (
            ["--tools", "get_status,list_models"],
            {},
            {"get_status", "list_models"},
            "get_health",
            {},
            "--tools",
        ),
        (
            ["--exclude-tools", "unload_model"],
            {},
            set(TOOL_NAMES) - {"unload_model"},
            "unload_model",
            NO_DEPLOYMENT,
            "--exclude-tools",
        ),
    ],
    ids=["read-only-flag", "read-only-variable", "disable-destructive-variable", "tools", "exclude-tools"],
)
async def test_modes_over_stdio(
    tmp_path: Path,
    args: list[str],
    env: dict[str, str],
    listed: set[str],
    call: str,
    arguments: dict[str, Any],
    setting: str,
) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "kamiwaza_mcp", *args], env=stdio_env(tmp_path, **env)
    )

    with anyio.fail_after(60):
        async with Client(params, mode="legacy") as client:
            tools = {tool.name for tool in (await client.list_tools()).tools}
            result = await client.call_tool(call, arguments)

    assert tools == listed
    assert result.is_error is True
    assert text_of(result).startswith(f"PolicyError: {call} is disabled on this server: ")
    assert setting in text_of(result)
