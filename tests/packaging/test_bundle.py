"""The bundle built by scripts/build_mcpb.py, unpacked and run the way an MCPB host runs it."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from server_process import REPO_ROOT, listed_tool_names, node_tool

BUILD_SCRIPT = REPO_ROOT / "scripts" / "build_mcpb.py"
BUILD_TIMEOUT = 600


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle built for this interpreter, unpacked into a folder of its own."""
    node_tool("mcpb")
    work = tmp_path_factory.mktemp("bundle")
    bundle = work / "kamiwaza-mcp.mcpb"
    completed = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), "--output", str(bundle), "--staging-dir", str(work / "staging")],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    target = work / "unpacked"
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(target)
    return target


def host_env(unpacked: Path, state_dir: Path) -> dict[str, str]:
    """The environment an MCPB host gives the server with default settings, plus a private state folder."""
    manifest: dict[str, Any] = json.loads((unpacked / "manifest.json").read_text(encoding="utf-8"))
    defaults = {
        f"${{user_config.{key}}}": str(entry.get("default", "")).lower()
        if isinstance(entry.get("default"), bool)
        else str(entry.get("default", ""))
        for key, entry in manifest["user_config"].items()
    }
    env = {}
    for name, value in manifest["server"]["mcp_config"]["env"].items():
        value = value.replace("${__dirname}", str(unpacked))
        for placeholder, setting in defaults.items():
            value = value.replace(placeholder, setting)
        env[name] = value
    env["KAMIWAZA_MCP_STATE_DIR"] = str(state_dir)
    env["HF_HUB_OFFLINE"] = "1"
    return env


# Building the bundle or an isolated wheel, and the fresh venv, install from the package registry.
pytestmark = [pytest.mark.slow, pytest.mark.registry]


def test_bundle_contents(unpacked: Path) -> None:
    top_level = {path.name for path in unpacked.iterdir()}
    lib = unpacked / "server" / "lib"

    assert top_level == {"manifest.json", "README.md", "kamiwaza_mcp", "server"}
    for package in ("mcp", "pydantic", "pydantic_core", "httpx", "starlette", "uvicorn", "platformdirs"):
        assert (lib / package).is_dir(), package
    assert not (lib / "bin").exists()
    assert not list(unpacked.rglob("__pycache__"))


def test_bundle_manifest_names_its_target(unpacked: Path) -> None:
    manifest = json.loads((unpacked / "manifest.json").read_text(encoding="utf-8"))
    major, minor = sys.version_info[:2]

    assert manifest["compatibility"]["platforms"] == [sys.platform]
    assert manifest["compatibility"]["runtimes"]["python"] == f">={major}.{minor},<{major}.{minor + 1}"
    assert manifest["server"]["mcp_config"]["command"] == f"python{major}.{minor}"


def test_bundle_imports_come_from_bundle(unpacked: Path, tmp_path: Path) -> None:
    # -S leaves site-packages off sys.path; the working folder is tmp_path, so `-m` finds no other copy.
    script = "import kamiwaza_mcp, mcp, pydantic_core; print(kamiwaza_mcp.__file__, mcp.__file__, pydantic_core.__file__)"

    completed = subprocess.run(
        [sys.executable, "-S", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=host_env(unpacked, tmp_path),
    )

    assert completed.returncode == 0, completed.stderr
    for path in completed.stdout.split():
        assert Path(path).is_relative_to(unpacked), path


async def test_bundle_serves_without_site_packages(unpacked: Path, tmp_path: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-S", "-m", "kamiwaza_mcp"],
        env=host_env(unpacked, tmp_path),
        cwd=tmp_path,
    )

    with anyio.fail_after(120):
        async with Client(params, mode="legacy") as client:
            listing = await client.list_tools()
            status = await client.call_tool("get_status", {})
            models = await client.call_tool("list_models", {})

    assert {tool.name for tool in listing.tools} == await listed_tool_names()
    assert status.is_error is False
    assert status.structured_content is not None
    assert status.structured_content["status"] == "not running"
    assert models.is_error is False
