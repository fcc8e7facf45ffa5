"""The kernel's count of out-of-memory kills in this process's memory cgroup (Linux only).

A worker killed with SIGKILL was either killed by the OOM killer or by some other
process. Comparing the cgroup's `oom_kill` counter before and after distinguishes the
two. Workers inherit the platform's cgroup, so the platform reads its own.
"""

from __future__ import annotations

import logging
from pathlib import Path

__all__ = ["oom_kill_count"]

logger = logging.getLogger(__name__)

_CGROUP_ROOT = Path("/sys/fs/cgroup")


def oom_kill_count() -> int | None:
    """Return the `oom_kill` counter of this process's memory cgroup, or None when it cannot be read.

    Reads `memory.events` (cgroup v2) or `memory.oom_control` (cgroup v1, Linux 4.13 or
    later). The counter includes kills by the global OOM killer of processes in the cgroup.
    """
    for path in _counter_files():
        count = _read_oom_kill(path)
        if count is not None:
            return count
    return None


def _counter_files() -> list[Path]:
    """List the counter files to try: the cgroup named in /proc/self/cgroup, then the mount's root."""
    v2_path = v1_path = None
    try:
        lines = Path("/proc/self/cgroup").read_text(encoding="ascii").splitlines()
    except OSError:
        return []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:
            v2_path = path
        elif "memory" in controllers.split(","):
            v1_path = path
    candidates = []
    if v1_path is not None:
        candidates += [_CGROUP_ROOT / "memory" / v1_path.lstrip("/") / "memory.oom_control"]
        candidates += [_CGROUP_ROOT / "memory" / "memory.oom_control"]
    if v2_path is not None:
        candidates += [_CGROUP_ROOT / v2_path.lstrip("/") / "memory.events", _CGROUP_ROOT / "memory.events"]
    return candidates


def _read_oom_kill(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            return int(value)
    return None
