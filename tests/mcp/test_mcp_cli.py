"""The kamiwaza-mcp command line: help, version, log level, configuration errors, light start-up."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kamiwaza_mcp import __version__
from kamiwaza_mcp.cli import main
from kamiwaza_mcp.config import ServerSettings
from kamiwaza_mcp.server import build_server


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("KAMIWAZA_")}
    env["KAMIWAZA_MCP_STATE_DIR"] = str(tmp_path / "state")
    env["KAMIWAZA_MCP_MODELS_DIR"] = str(tmp_path / "models")
    env.update(extra)
    return env


def test_help_names_options_and_variables(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--help"])

    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: kamiwaza-mcp")
    for word in (
        "--version",
        "--log-level",
        "KAMIWAZA_BASE_URL",
        "KAMIWAZA_API_KEY",
        "KAMIWAZA_MCP_MODELS_DIR",
    ):
        assert word in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--version"])

    assert caught.value.code == 0
    assert capsys.readouterr().out == f"kamiwaza-mcp {__version__}\n"


def test_unknown_log_level_is_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--log-level", "loud"])

    assert caught.value.code == 2
    assert "invalid choice: 'LOUD'" in capsys.readouterr().err


def test_invalid_configuration_exits_with_status_2(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "kamiwaza_mcp"],
        env=clean_env(tmp_path, KAMIWAZA_BASE_URL="https://kamiwaza.example.com"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert completed.returncode == 2
    assert completed.stdout == ""
    assert "invalid KAMIWAZA_BASE_URL='https://kamiwaza.example.com'" in completed.stderr
    assert "set it to https://kamiwaza.example.com/api" in completed.stderr


def test_instructions_give_the_workflow() -> None:
    instructions = build_server(ServerSettings()).instructions

    assert instructions is not None
    assert "list_models -> estimate_model_vram -> deploy_model (it waits up to 60 s" in instructions
    assert "poll get_deployment_status until DEPLOYED) -> generate or simple_generate" in instructions
    assert "stop_deployment and unload_model need the person's confirmation" in instructions
    assert "the server asks them in a form when the client supports forms" in instructions
    assert "pass next_cursor as cursor" in instructions


def test_start_up_imports_no_engine(tmp_path: Path) -> None:
    """Starting the server and the embedded platform, and listing models, loads neither torch nor transformers."""
    script = textwrap.dedent(
        """
        import sys
        import anyio
        from mcp import Client
        from kamiwaza_mcp.cli import main
        from kamiwaza_mcp.server import build_server

        async def run() -> None:
            async with Client(build_server(), mode="legacy") as client:
                await client.list_tools()
                for tool in ("get_status", "list_models", "list_deployments"):
                    result = await client.call_tool(tool, {})
                    assert result.is_error is False, result

        anyio.run(run)
        print(sorted(name for name in ("torch", "transformers", "ray") if name in sys.modules))
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip().splitlines()[-1] == "[]"
