"""Build the Claude Desktop bundle (.mcpb) of kamiwaza-mcp for one platform and Python version.

    python scripts/build_mcpb.py [--output FILE] [--python-version 3.12 --platform macosx_11_0_arm64]

The bundle contains the `kamiwaza_mcp` package source, README.md, a manifest and
the package's runtime dependencies, installed into `server/lib` by pip. Some
of those dependencies are compiled (pydantic-core among them), so a bundle
runs only on the operating system, processor and Python minor version it was
built for. The script therefore narrows the manifest it packs: the platform
list, the Python version range, and the command (`python3.11` rather than
`python3`). Without options it builds for the interpreter that runs it; with
--python-version and --platform (pip platform tags) it downloads wheels for
another target.

The bundle contains no engine (torch, transformers): with no
KAMIWAZA_BASE_URL it runs the embedded local platform, which lists models and
serves the read-only tools but cannot start engine workers.

It runs `mcpb pack` from the official `@anthropic-ai/mcpb` npm package,
installed by `npm ci --prefix .ci/node`.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MCPB = REPO_ROOT / ".ci" / "node" / "node_modules" / ".bin" / "mcpb"
# The files the bundle contains besides server/lib; .mcpbignore lists the same allow-list for
# `mcpb pack` run on the repository itself.
BUNDLE_SOURCES = ("manifest.json", "README.md", ".mcpbignore", "kamiwaza_mcp")
# pip platform tag prefixes and the MCPB platform names they run on.
_PLATFORM_PREFIXES = {
    "manylinux": "linux",
    "musllinux": "linux",
    "linux": "linux",
    "macosx": "darwin",
    "win": "win32",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, help="bundle file to write (default: dist/<name>.mcpb)")
    parser.add_argument(
        "--python-version",
        help="Python minor version the bundle targets, such as 3.12 (default: this interpreter's)",
    )
    parser.add_argument(
        "--platform",
        dest="platforms",
        action="append",
        metavar="TAG",
        help="pip platform tag to fetch wheels for, such as macosx_11_0_arm64 or manylinux_2_28_x86_64; "
        "repeatable, all of one operating system (default: this machine)",
    )
    parser.add_argument(
        "--staging-dir",
        type=Path,
        default=REPO_ROOT / "build" / "mcpb",
        help="folder the bundle is assembled in, emptied first (default: build/mcpb)",
    )
    parser.add_argument("--mcpb", type=Path, default=DEFAULT_MCPB, help="mcpb command (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Assemble, vendor and pack the bundle; return the exit status."""
    args = _parser().parse_args(argv)
    if not args.mcpb.exists():
        print(f"error: {args.mcpb} not found; run `npm ci --prefix .ci/node` first", file=sys.stderr)
        return 2
    python_version = args.python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
    platforms: list[str] = args.platforms or []
    try:
        target_os = _target_os(platforms)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    tag = f"{platforms[0] if platforms else _native_tag()}-cp{python_version.replace('.', '')}"
    output = (args.output or REPO_ROOT / "dist" / f"kamiwaza-mcp-{pyproject['version']}-{tag}.mcpb").resolve()

    staging: Path = args.staging_dir.resolve()
    _copy_sources(staging)
    _vendor(staging / "server" / "lib", pyproject["dependencies"], python_version, platforms)
    _narrow_manifest(staging / "manifest.json", target_os, python_version)

    output.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(args.mcpb), "pack", str(staging), str(output)], check=True)
    print(f"Built {output} for {target_os}, Python {python_version}", file=sys.stderr)
    return 0


def _target_os(platforms: list[str]) -> str:
    systems = {_os_of_tag(tag) for tag in platforms} if platforms else {sys.platform}
    if len(systems) != 1:
        raise ValueError(
            f"--platform tags {platforms} name several operating systems; build one bundle per system"
        )
    system = systems.pop()
    if system not in ("linux", "darwin"):
        # The manifest joins PYTHONPATH entries with ':', which Windows does not read.
        raise ValueError(f"cannot build for {system!r}: the bundle supports linux and darwin")
    return system


def _os_of_tag(tag: str) -> str:
    for prefix, system in _PLATFORM_PREFIXES.items():
        if tag.startswith(prefix):
            return system
    raise ValueError(f"unknown --platform tag {tag!r}; expected a pip tag such as macosx_11_0_arm64")


def _native_tag() -> str:
    return f"{sysconfig.get_platform().split('-')[0]}-{platform.machine().lower()}"


def _copy_sources(staging: Path) -> None:
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for name in BUNDLE_SOURCES:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, staging / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, staging / name)


def _vendor(lib: Path, dependencies: list[str], python_version: str, platforms: list[str]) -> None:
    """Install the runtime dependencies into `lib` as wheels for the target."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",
        # pip would report conflicts among the packages of the interpreter running this script,
        # which the bundle does not contain.
        "--no-warn-conflicts",
        "--only-binary=:all:",
        "--target",
        str(lib),
        "--python-version",
        python_version,
        "--implementation",
        "cp",
    ]
    # NOTE: a bundle for another system (--platform) is packed here but never started by the tests.
    for tag in platforms:
        command.extend(["--platform", tag])
    subprocess.run([*command, *dependencies], check=True)
    # Console scripts carry this machine's interpreter path in their first line and are not needed.
    shutil.rmtree(lib / "bin", ignore_errors=True)


def _narrow_manifest(path: Path, target_os: str, python_version: str) -> None:
    manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    major, minor = (int(part) for part in python_version.split("."))
    compatibility = manifest.setdefault("compatibility", {})
    compatibility["platforms"] = [target_os]
    compatibility.setdefault("runtimes", {})["python"] = f">={major}.{minor},<{major}.{minor + 1}"
    manifest["server"]["mcp_config"]["command"] = f"python{major}.{minor}"
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
