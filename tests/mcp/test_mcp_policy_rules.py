"""The policy's rules and settings: the Policy model, the environment variables, the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kamiwaza_mcp.app_context import AppContext
from kamiwaza_mcp.cli import main
from kamiwaza_mcp.client import KamiwazaClient
from kamiwaza_mcp.client.models import Deployment, Model
from kamiwaza_mcp.config import ConfigurationError, ServerSettings
from kamiwaza_mcp.guard import ConfirmationGuard
from kamiwaza_mcp.policy import ConfirmationMode, Policy, PolicyError
from kamiwaza_mcp.server import build_server
from kamiwaza_mcp.tools import TOOL_NAMES
from kamiwaza_mcp.tools._common import wait_seconds

TINY_MODEL = "tiny-llama"
UNKNOWN_DEPLOYMENT = "5f3c2a8e-0c1d-4b7a-9e2f-1a2b3c4d5e6f"
OTHER = "0b9e8d7c-6a5f-4e3d-8c2b-1a0f9e8d7c6b"


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


def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("KAMIWAZA_")}
    env["KAMIWAZA_MCP_STATE_DIR"] = str(tmp_path / "state")
    env["KAMIWAZA_MCP_MODELS_DIR"] = str(tmp_path / "models")
    return env


# The Policy model


def test_disabled_reason_names_setting() -> None:
    cases = [
        (Policy(read_only=True), "deploy_model", False, False, "--read-only (KAMIWAZA_MCP_READ_ONLY)"),
        (Policy(disable_destructive=True), "unload_model", False, True, "--disable-destructive"),
        (Policy(tools=frozenset({"get_status"})), "get_health", True, False, "allow list --tools"),
        (
            Policy(exclude_tools=frozenset({"get_health"})),
            "get_health",
            True,
            False,
            "deny list --exclude-tools",
        ),
    ]
    for rules, name, read_only, destructive, setting in cases:
        reason = rules.disabled_reason(name, read_only=read_only, destructive=destructive)
        assert reason is not None, name
        assert setting in reason, reason


def test_enabled_tools_have_no_reason() -> None:
    assert Policy(read_only=True).disabled_reason("get_health", read_only=True, destructive=False) is None
    assert (
        Policy(disable_destructive=True).disabled_reason("load_model", read_only=False, destructive=False)
        is None
    )
    assert Policy().disabled_reason("stop_deployment", read_only=False, destructive=True) is None


def test_protected_by_id_or_name_pattern() -> None:
    rules = Policy(protected_deployments=(UNKNOWN_DEPLOYMENT.upper(), "prod-*"))

    assert rules.protecting_pattern(UNKNOWN_DEPLOYMENT, "dev-model") == UNKNOWN_DEPLOYMENT.upper()
    assert rules.protecting_pattern("0b9e8d7c-6a5f-4e3d-8c2b-1a0f9e8d7c6b", "PROD-llama") == "prod-*"
    assert rules.protecting_pattern("0b9e8d7c-6a5f-4e3d-8c2b-1a0f9e8d7c6b", "dev-model") is None
    # An unknown model name fails closed: every name pattern covers it.
    assert rules.protecting_pattern("0b9e8d7c-6a5f-4e3d-8c2b-1a0f9e8d7c6b", None) == "prod-*"
    assert Policy(protected_deployments=(UNKNOWN_DEPLOYMENT,)).protecting_pattern(OTHER, None) is None


def test_allowed_models_match_name_repo_or_id() -> None:
    rules = Policy(allowed_models=("qwen/*", "tiny-*"))

    rules.check_model_allowed(Model(name="tiny-llama"))
    rules.check_model_allowed(Model(name="q", repo_modelId="Qwen/Qwen3-4B"))
    with pytest.raises(PolicyError) as caught:
        rules.check_model_allowed(Model(name="llama-70b"))
    assert "model 'llama-70b' is not in KAMIWAZA_MCP_ALLOWED_MODELS (allowed: qwen/*, tiny-*)" in str(
        caught.value
    )


def test_deployment_count_skips_ended() -> None:
    rules = Policy(max_deployments=2)

    rules.check_deployment_count([deployment("DEPLOYED"), deployment("STOPPED"), deployment("FAILED")])
    with pytest.raises(PolicyError, match=r"2 deployments exist .* KAMIWAZA_MCP_MAX_DEPLOYMENTS=2"):
        rules.check_deployment_count([deployment("DEPLOYED"), deployment("UNLOADED")])


def test_replica_limit() -> None:
    Policy(max_replicas=2).check_replicas(2)
    with pytest.raises(PolicyError, match="3 replicas exceed KAMIWAZA_MCP_MAX_REPLICAS=2"):
        Policy(max_replicas=2).check_replicas(3)


# Settings from the environment and the command line


def test_policy_read_from_environment() -> None:
    settings = ServerSettings.from_env(
        {
            "KAMIWAZA_MCP_READ_ONLY": "yes",
            "KAMIWAZA_MCP_DISABLE_DESTRUCTIVE": "1",
            "KAMIWAZA_MCP_TOOLS": " get_status , list_models,",
            "KAMIWAZA_MCP_EXCLUDE_TOOLS": "generate",
            "KAMIWAZA_MCP_CONFIRMATION": "TOKEN",
            "KAMIWAZA_MCP_ELICITATION_TIMEOUT": "12.5",
            "KAMIWAZA_MCP_PROTECTED_DEPLOYMENTS": "prod-*, " + UNKNOWN_DEPLOYMENT,
            "KAMIWAZA_MCP_MAX_REPLICAS": "2",
            "KAMIWAZA_MCP_MAX_DEPLOYMENTS": "3",
            "KAMIWAZA_MCP_ALLOWED_MODELS": "tiny-*",
            "KAMIWAZA_MCP_MAX_WAIT": "30",
            "KAMIWAZA_MCP_MAX_RESPONSE_TOKENS": "4000",
        }
    )

    assert settings.policy == Policy(
        read_only=True,
        disable_destructive=True,
        tools=frozenset({"get_status", "list_models"}),
        exclude_tools=frozenset({"generate"}),
        confirmation=ConfirmationMode.TOKEN,
        elicitation_timeout_seconds=12.5,
        protected_deployments=("prod-*", UNKNOWN_DEPLOYMENT),
        max_replicas=2,
        max_deployments=3,
        allowed_models=("tiny-*",),
        max_wait_seconds=30,
        max_response_tokens=4000,
    )


def test_default_policy() -> None:
    assert ServerSettings.from_env({}).policy == Policy()
    assert Policy().max_wait_seconds == 60
    assert Policy().elicitation_timeout_seconds == 60
    assert Policy().confirmation is ConfirmationMode.AUTO


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "KAMIWAZA_MCP_CONFIRMATION",
            "ask",
            "invalid KAMIWAZA_MCP_CONFIRMATION='ask': expected auto, token or deny",
        ),
        (
            "KAMIWAZA_MCP_MAX_REPLICAS",
            "two",
            "invalid KAMIWAZA_MCP_MAX_REPLICAS='two': expected a whole number",
        ),
        (
            "KAMIWAZA_MCP_MAX_REPLICAS",
            "0",
            "invalid KAMIWAZA_MCP_MAX_REPLICAS=0: input should be greater than or",
        ),
        (
            "KAMIWAZA_MCP_MAX_WAIT",
            "9000",
            "invalid KAMIWAZA_MCP_MAX_WAIT=9000.0: input should be less than or",
        ),
        ("KAMIWAZA_MCP_READ_ONLY", "maybe", "invalid KAMIWAZA_MCP_READ_ONLY='maybe': expected true or false"),
    ],
)
def test_invalid_policy_variable_is_named(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        ServerSettings.from_env({variable: value})

    assert str(caught.value).startswith(message)


def test_unknown_tool_name_stops_start() -> None:
    settings = ServerSettings(policy=Policy(tools=frozenset({"get_status", "stop_deploy"})))

    with pytest.raises(ConfigurationError) as caught:
        build_server(settings)

    assert str(caught.value) == (
        "unknown tool name stop_deploy in --tools or --exclude-tools (KAMIWAZA_MCP_TOOLS, "
        f"KAMIWAZA_MCP_EXCLUDE_TOOLS); valid names: {', '.join(sorted(TOOL_NAMES))}"
    )


def test_help_lists_safety_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])

    out = capsys.readouterr().out
    for flag in ("--read-only", "--disable-destructive", "--tools", "--exclude-tools", "--confirmation"):
        assert flag in out


def test_unknown_tool_name_exits_over_stdio(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "kamiwaza_mcp", "--tools", "get_status,list_model"],
        env=clean_env(tmp_path),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert completed.returncode == 2
    assert completed.stdout == ""
    assert (
        "Invalid configuration: unknown tool name list_model in --tools or --exclude-tools"
        in completed.stderr
    )
    assert "valid names: deploy_model, estimate_model_vram" in completed.stderr


def test_invalid_flag_value_is_named(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "kamiwaza_mcp", "--elicitation-timeout", "0"],
        env=clean_env(tmp_path),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert completed.returncode == 2
    assert (
        "Invalid configuration: invalid --elicitation-timeout=0.0: input should be greater than 0"
        in completed.stderr
    )


def test_wait_is_capped_by_policy() -> None:
    app = AppContext(
        client=KamiwazaClient("http://127.0.0.1:9/api"), guard=ConfirmationGuard(), policy=Policy()
    )

    assert wait_seconds(app, None) == 60
    assert wait_seconds(app, 600) == 60
    assert wait_seconds(app, 5) == 5
