"""The local platform run as `python -m kamiwaza_mcp.local` in a subprocess, for tests over real HTTP."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
from anyio.abc import Process

from kamiwaza_mcp.local.serve import TOKEN_ENV

# Importing torch and starting the platform took about 2 s on a 2-core machine.
START_TIMEOUT = 60
STOP_TIMEOUT = 30
_LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)/api")


@dataclass
class PlatformProcess:
    """A running platform process, the port it listens on and its bearer token."""

    process: Process
    port: int
    token: str
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"


@asynccontextmanager
async def run_platform(
    state_dir: Path, model_paths: list[Path], token: str, log: Path
) -> AsyncIterator[PlatformProcess]:
    """Start the platform on 127.0.0.1 with an OS-chosen port; stop it with SIGTERM on exit if it still runs."""
    command = [sys.executable, "-m", "kamiwaza_mcp.local", "--host", "127.0.0.1", "--port", "0"]
    command += ["--state-dir", str(state_dir), "--no-hf-cache"]
    for path in model_paths:
        command += ["--model-path", str(path)]
    with log.open("ab") as stderr:
        offset = stderr.tell()
        process = await anyio.open_process(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, TOKEN_ENV: token},
        )
    try:
        port = await _wait_for_port(process, log, offset)
        yield PlatformProcess(process=process, port=port, token=token, log=log)
    finally:
        with anyio.CancelScope(shield=True):
            await stop_platform(process)
            await process.aclose()


async def stop_platform(process: Process) -> int | None:
    """Send SIGTERM and wait for the exit, or SIGKILL after STOP_TIMEOUT; return the exit code."""
    if process.returncode is None:
        process.terminate()
        with anyio.move_on_after(STOP_TIMEOUT):
            await process.wait()
    if process.returncode is None:
        process.kill()
        with anyio.fail_after(STOP_TIMEOUT):
            await process.wait()
    return process.returncode


async def _wait_for_port(process: Process, log: Path, offset: int) -> int:
    with anyio.fail_after(START_TIMEOUT):
        while True:
            with log.open("rb") as file:
                file.seek(offset)
                match = _LISTENING.search(file.read().decode(errors="replace"))
            if match:
                return int(match.group(1))
            if process.returncode is not None:
                raise RuntimeError(f"the platform exited with code {process.returncode}; see {log}")
            await anyio.sleep(0.1)


def pid_alive(pid: int) -> bool:
    """Return whether `pid` is a live process (a zombie counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def worker_pids(instance_id: str) -> list[int]:
    """Return the pids of live worker processes of one replica, found by their command line."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        is_worker = b"kamiwaza_mcp.local.worker" in arguments
        if is_worker and any(instance_id.encode() in arg for arg in arguments) and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)


def resident_bytes(pid: int, field: str = "VmRSS") -> int:
    """Return a resident-memory field of /proc/<pid>/status in bytes: VmRSS, RssAnon or RssFile."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"/proc/{pid}/status has no {field} line")


def tree_resident_bytes(root: int) -> int:
    """Return the summed VmRSS of a process and all its descendants, in bytes."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The parent pid is the second field after the command name, which may contain spaces.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, pending = 0, [root]
    while pending:
        pid = pending.pop()
        try:
            total += resident_bytes(pid)
        except (OSError, AssertionError):
            continue
        pending += children.get(pid, [])
    return total
