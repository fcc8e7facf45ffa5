"""The wheel and sdist from `python -m build`, installed into a fresh virtual environment and run with uvx.

These tests install the wheel's dependencies from the package index, as a user's
`pip install` does, so they need the index that pip is configured with.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters
from server_process import REPO_ROOT, listed_tool_names, server_env

# Building the bundle or an isolated wheel, and the fresh venv, install from the package registry.
pytestmark = [pytest.mark.slow, pytest.mark.registry]

INSTALL_TIMEOUT = 600


@dataclass
class Distributions:
    wheel: Path
    sdist: Path


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Distributions:
    if importlib.util.find_spec("build") is None:
        pytest.skip("the build package is not installed; pip install -e '.[dev]'")
    out = tmp_path_factory.mktemp("dist")
    completed = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(REPO_ROOT)],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return Distributions(wheel=next(out.glob("*.whl")), sdist=next(out.glob("*.tar.gz")))


@pytest.fixture(scope="module")
def fresh_venv(dists: Distributions, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment with only the wheel and the dependencies it declares."""
    folder = tmp_path_factory.mktemp("fresh-venv")
    venv.EnvBuilder(with_pip=True).create(folder)
    completed = subprocess.run(
        [str(folder / "bin" / "python"), "-m", "pip", "install", "--quiet", str(dists.wheel)],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
    )
    assert completed.returncode == 0, completed.stderr
    return folder


def test_wheel_holds_package_only(dists: Distributions) -> None:
    names = zipfile.ZipFile(dists.wheel).namelist()

    assert "kamiwaza_mcp/cli.py" in names
    assert "kamiwaza_mcp/http_app.py" in names
    assert {name.split("/", 1)[0] for name in names} == {"kamiwaza_mcp", "kamiwaza_mcp-0.1.0.dist-info"}


def test_sdist_holds_source_without_node_modules(dists: Distributions) -> None:
    with tarfile.open(dists.sdist) as archive:
        names = archive.getnames()

    assert "kamiwaza_mcp-0.1.0/pyproject.toml" in names
    assert "kamiwaza_mcp-0.1.0/kamiwaza_mcp/cli.py" in names
    assert not [name for name in names if "node_modules" in name or "/.venv/" in name]


def test_installed_command_help(fresh_venv: Path, tmp_path: Path) -> None:
    command = fresh_venv / "bin" / "kamiwaza-mcp"

    help_run = subprocess.run(
        [str(command), "--help"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    version_run = subprocess.run(
        [str(command), "--version"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )

    assert help_run.returncode == 0, help_run.stderr
    assert "--transport {stdio,http}" in help_run.stdout
    assert version_run.stdout.strip() == "kamiwaza-mcp 0.1.0"


async def test_installed_command_serves_stdio(fresh_venv: Path, tmp_path: Path) -> None:
    params = StdioServerParameters(
        command=str(fresh_venv / "bin" / "kamiwaza-mcp"), env=server_env(tmp_path), cwd=tmp_path
    )

    with anyio.fail_after(120):
        async with Client(params, mode="legacy") as client:
            listing = await client.list_tools()
            status = await client.call_tool("get_status", {})

    assert {tool.name for tool in listing.tools} == await listed_tool_names()
    assert status.structured_content is not None
    assert status.structured_content["status"] == "not running"


def test_installed_package_is_the_wheel(fresh_venv: Path, tmp_path: Path) -> None:
    completed = subprocess.run(
        [str(fresh_venv / "bin" / "python"), "-c", "import kamiwaza_mcp; print(kamiwaza_mcp.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )

    assert Path(completed.stdout.strip()).is_relative_to(fresh_venv)


def test_uvx_runs_wheel(dists: Distributions, tmp_path: Path) -> None:
    uvx = shutil.which("uvx") or shutil.which("uvx", path=str(Path(sys.executable).parent))
    if uvx is None:
        pytest.skip("uvx is not installed; pip install uv")
    # Never download a Python build: use the interpreter running the tests.
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_CACHE_DIR": str(tmp_path / "uv-cache")}

    completed = subprocess.run(
        [uvx, "--python", sys.executable, "--from", str(dists.wheel), "kamiwaza-mcp", "--help"],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        cwd=tmp_path,
        env=env,
    )

    assert completed.returncode == 0, completed.stderr
    assert "--transport {stdio,http}" in completed.stdout
