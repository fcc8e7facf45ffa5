"""Shared parts of the benchmarks: the figure record, statistics, the machine description, child processes."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "BENCH_DIR",
    "REPO_DIR",
    "Figure",
    "LoadMeter",
    "PlatformHost",
    "machine_description",
    "median",
    "percentile",
    "platform_host",
    "spread",
]

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent


@dataclass
class Figure:
    """One benchmark result: kamiwaza-mcp's median against the baseline's, and the target it is held to.

    `value` is the figure compared with the target, in `unit`: a ratio, milliseconds or
    characters. `met` is None for an informational figure that has no target.
    """

    key: str
    title: str
    ours: str
    baseline: str
    value: float
    unit: str
    target: str
    met: bool | None
    runs: int
    details: list[str] = field(default_factory=list)
    # The 1-minute load average when the figure's measurement started and ended.
    load_start: float = 0.0
    load_end: float = 0.0
    # UTC time the figure's group finished, ISO 8601, set by run.py.
    measured_at: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("median of no values")
    return statistics.median(values)


def spread(values: Sequence[float], *, scale: float, unit: str, digits: int, sample_noun: str) -> str:
    """Describe samples by median, 10th and 90th percentile, each multiplied by `scale` and shown in `unit`."""
    parts = [
        f"{name} {quantile * scale:.{digits}f} {unit}"
        for name, quantile in (
            ("median", median(values)),
            ("p10", percentile(values, 0.1)),
            ("p90", percentile(values, 0.9)),
        )
    ]
    return f"{', '.join(parts)} over {len(values)} {sample_noun}"


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the `fraction` quantile (0..1) by linear interpolation between the nearest ranks."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class LoadMeter:
    """Records the 1-minute load average at the start and end of a benchmark."""

    def __init__(self) -> None:
        self.start = os.getloadavg()[0]

    def fields(self) -> dict[str, float]:
        """Return the Figure fields load_start and load_end, the end read now."""
        return {"load_start": self.start, "load_end": os.getloadavg()[0]}


def machine_description() -> dict[str, str]:
    """Describe the machine and the software versions the figures were measured with."""
    return {
        "cores": f"{os.cpu_count()} logical cores ({len(os.sched_getaffinity(0))} usable by this process)",
        "cpu": _cpu_model(),
        "memory": f"{_mem_total_gib():.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "packages": ", ".join(
            f"{name} {_version(name)}" for name in ("kamiwaza-mcp", "mcp", "httpx", "torch", "transformers")
        ),
        "commit": _git_commit(),
        "load average at the end of the run": "{:.2f}, {:.2f}, {:.2f} (1, 5 and 15 minutes)".format(
            *os.getloadavg()
        ),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError("/proc/meminfo has no MemTotal line")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git_commit() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_DIR, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not commit:
        return "unknown"
    return f"{commit} with uncommitted changes" if dirty else commit


class PlatformHost:
    """A local platform served on 127.0.0.1 by `platform_host.py` in a child process."""

    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self.process = process
        self.url = url


@contextmanager
def platform_host(
    state_dir: Path,
    env: Mapping[str, str],
    *,
    models_dir: Path | None = None,
    seed_deployments: int = 0,
    latency_ms: float = 0.0,
) -> Iterator[PlatformHost]:
    """Start `platform_host.py`, yield it once it serves, and stop it by closing its stdin."""
    command = [
        sys.executable,
        str(BENCH_DIR / "platform_host.py"),
        "--state-dir",
        str(state_dir),
        "--seed-deployments",
        str(seed_deployments),
        "--latency-ms",
        str(latency_ms),
    ]
    if models_dir is not None:
        command += ["--models-dir", str(models_dir)]
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / "host.log").open("wb") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=dict(env)
        )
        try:
            assert process.stdout is not None
            url = process.stdout.readline().strip()
            if not url.startswith("http://127.0.0.1:"):
                raise RuntimeError(f"platform_host.py did not start; see {state_dir / 'host.log'}")
            yield PlatformHost(process, url)
        finally:
            assert process.stdin is not None
            process.stdin.close()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
