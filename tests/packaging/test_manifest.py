"""The MCPB manifest: its tools against tools/list, its user settings against the server's environment.

`mcpb validate` and `mcpb pack` come from the official @anthropic-ai/mcpb npm
package in .ci/node; those tests skip when it is not installed.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
from server_process import REPO_ROOT, listed_tool_names, node_tool

from kamiwaza_mcp import __version__
from kamiwaza_mcp.config import ServerSettings

MANIFEST_PATH = REPO_ROOT / "manifest.json"
# Each user setting and the environment variable the server reads it from.
USER_CONFIG_ENV = {
    "base_url": "KAMIWAZA_BASE_URL",
    "api_key": "KAMIWAZA_API_KEY",
    "verify_ssl": "KAMIWAZA_VERIFY_SSL",
    "read_only": "KAMIWAZA_MCP_READ_ONLY",
    "models_dir": "KAMIWAZA_MCP_MODELS_DIR",
}
# The top-level entries a bundle may contain; server/ contains the vendored dependencies.
BUNDLE_ENTRIES = {"manifest.json", "README.md", "kamiwaza_mcp", "server"}
_PLACEHOLDER = re.compile(r"\$\{user_config\.([a-z_]+)\}")


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(MANIFEST_PATH.read_text(encoding="utf-8"))
    return loaded


async def test_manifest_tools_match_tools_list(manifest: dict[str, Any]) -> None:
    names = [tool["name"] for tool in manifest["tools"]]

    assert len(names) == len(set(names)), f"duplicate tool names: {names}"
    assert set(names) == await listed_tool_names()
    for tool in manifest["tools"]:
        assert tool.get("description"), tool["name"]


def test_manifest_version_matches_package(manifest: dict[str, Any]) -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))

    assert manifest["manifest_version"] == "0.3"
    assert manifest["version"] == __version__
    assert pyproject["project"]["version"] == __version__


def test_user_config_reaches_server_env(manifest: dict[str, Any]) -> None:
    env = manifest["server"]["mcp_config"]["env"]
    used = {match for value in env.values() for match in _PLACEHOLDER.findall(value)}

    assert used == set(manifest["user_config"])
    for key, variable in USER_CONFIG_ENV.items():
        assert env[variable] == f"${{user_config.{key}}}", variable


def test_user_config_types(manifest: dict[str, Any]) -> None:
    config = manifest["user_config"]

    assert config["api_key"]["sensitive"] is True
    assert config["base_url"]["type"] == "string"
    assert config["verify_ssl"] == {**config["verify_ssl"], "type": "boolean", "default": True}
    assert config["read_only"] == {**config["read_only"], "type": "boolean", "default": False}
    for key, entry in config.items():
        assert entry["required"] is False, f"{key}: every setting has a default, so none is required"


def _substituted_env(manifest: dict[str, Any], values: dict[str, Any]) -> dict[str, str]:
    """Fill the manifest's env the way an MCPB host does, with booleans as true or false."""
    settings = {key: entry.get("default", "") for key, entry in manifest["user_config"].items()}
    settings.update(values)
    rendered = {
        key: str(value).lower() if isinstance(value, bool) else str(value) for key, value in settings.items()
    }
    env = manifest["server"]["mcp_config"]["env"]
    return {
        name: _PLACEHOLDER.sub(lambda match: rendered[match.group(1)], value) for name, value in env.items()
    }


def test_default_user_config_runs_local_platform(manifest: dict[str, Any]) -> None:
    settings = ServerSettings.from_env(_substituted_env(manifest, {}))

    assert settings.is_local
    assert settings.verify_ssl is True
    assert settings.api_key is None


def test_remote_user_config_is_read(manifest: dict[str, Any]) -> None:
    values = {
        "base_url": "https://kamiwaza.example.com/api",
        "api_key": "pat-0123456789",
        "verify_ssl": False,
        "read_only": True,
    }

    settings = ServerSettings.from_env(_substituted_env(manifest, values))

    assert settings.base_url == "https://kamiwaza.example.com/api"
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == "pat-0123456789"
    assert settings.verify_ssl is False


def test_mcpb_validate_passes() -> None:
    mcpb = node_tool("mcpb")

    completed = subprocess.run(
        [str(mcpb), "validate", str(MANIFEST_PATH)], capture_output=True, text=True, timeout=120
    )

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "validation passes" in completed.stdout


def test_mcpb_pack_holds_only_package_source(tmp_path: Path) -> None:
    mcpb = node_tool("mcpb")
    output = tmp_path / "kamiwaza-mcp.mcpb"

    completed = subprocess.run(
        [str(mcpb), "pack", str(REPO_ROOT), str(output)], capture_output=True, text=True, timeout=300
    )

    assert completed.returncode == 0, completed.stdout + completed.stderr
    names = zipfile.ZipFile(output).namelist()
    assert "manifest.json" in names
    assert "kamiwaza_mcp/__main__.py" in names
    assert "kamiwaza_mcp/http_app.py" in names
    assert {name.split("/", 1)[0] for name in names} <= BUNDLE_ENTRIES
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
