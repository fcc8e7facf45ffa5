"""Run the six benchmarks and write docs/benchmarks.md (and the raw figures to docs/benchmarks.json).

    python bench/run.py                  # everything, about 2 minutes on an idle 2-core machine
    python bench/run.py --only startup   # rerun one group and keep the other figures of the last run

Groups: sizes (figure 6), startup (1 and 2), calls (3 and 4), serving (5). The
serving group needs the `engine` extra (torch, transformers) to build its tiny model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from calls import measure_call_overhead, measure_concurrency
from common import REPO_DIR, Figure, machine_description, platform_host
from report import group_of, render
from serving import EngineProbe, deploy_tiny_model, measure_serving
from sizes import measure_sizes
from startup import (
    StartupConfig,
    baseline_command,
    import_breakdown,
    kamiwaza_command,
    measure_startup,
    phase_breakdown,
)
from stdio_session import StdioSession, server_environment

GROUPS = ("sizes", "startup", "calls", "serving")
STARTUP_RUNS = 11
OVERHEAD_CALLS = 300
CONCURRENCY_ROUNDS = 20
# Milliseconds the slow platform waits before each response, a round trip to a remote cluster.
REMOTE_LATENCY_MS = 50.0
SERVING_RUNS = 30
SEEDED_DEPLOYMENTS = 50
TINY_MODEL_NAME = "tiny-llama"
IMPORTS_NOTE = "Where kamiwaza-mcp's start-up time goes"
# Notes each group writes, replaced when the group is rerun with --only.
GROUP_NOTES = {"startup": (IMPORTS_NOTE,)}


@dataclass
class BenchRun:
    """The folders and environment of one bench run, and what it has measured so far."""

    root: Path
    env: dict[str, str]
    figures: list[Figure] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)

    @property
    def logs(self) -> Path:
        path = self.root / "logs"
        path.mkdir(exist_ok=True)
        return path

    def local_env(self, name: str, models_dir: Path | None = None) -> dict[str, str]:
        """Return the environment of a server in the default configuration, with its own state folder."""
        state = self.root / name
        return {
            **self.env,
            "KAMIWAZA_MCP_STATE_DIR": str(state),
            "KAMIWAZA_MCP_MODELS_DIR": str(models_dir or state / "models"),
        }

    def remote_env(self, url: str) -> dict[str, str]:
        return {**self.env, "KAMIWAZA_BASE_URL": url}

    def open_server(self, env: dict[str, str], log_name: str, timeout: float = 120.0) -> StdioSession:
        session = StdioSession(kamiwaza_command(), env, self.logs / log_name, timeout=timeout)
        session.initialize()
        return session


def run_sizes(bench: BenchRun) -> None:
    with platform_host(bench.root / "sizes-platform", bench.env, seed_deployments=SEEDED_DEPLOYMENTS) as host:
        session = bench.open_server(bench.remote_env(host.url), "sizes-server.log")
        try:
            bench.figures += measure_sizes(session, host.url, SEEDED_DEPLOYMENTS)
        finally:
            session.close()


def run_startup(bench: BenchRun) -> None:
    with platform_host(bench.root / "startup-platform", bench.env) as host:
        default = StartupConfig(
            "default configuration (embedded local platform)",
            kamiwaza_command(),
            bench.local_env("startup-state"),
        )
        remote = StartupConfig(
            "remote platform (KAMIWAZA_BASE_URL set)", kamiwaza_command(), bench.remote_env(host.url)
        )
        baseline = StartupConfig("minimal server", baseline_command(), bench.env)
        bench.figures += measure_startup([default, remote], baseline, STARTUP_RUNS, bench.logs)
        bench.notes[IMPORTS_NOTE] = import_breakdown(default, baseline, bench.logs) + phase_breakdown(
            bench.env, bench.root / "phases-state", STARTUP_RUNS
        )


def run_calls(bench: BenchRun) -> None:
    with platform_host(bench.root / "calls-platform", bench.env) as host:
        session = bench.open_server(bench.remote_env(host.url), "calls-server.log")
        try:
            bench.figures.append(asyncio.run(measure_call_overhead(session, host.url, OVERHEAD_CALLS)))
            bench.figures.append(
                measure_concurrency(
                    session,
                    CONCURRENCY_ROUNDS,
                    key="concurrency",
                    setting="platform on 127.0.0.1 with no added latency",
                )
            )
        finally:
            session.close()
    with platform_host(bench.root / "slow-platform", bench.env, latency_ms=REMOTE_LATENCY_MS) as host:
        session = bench.open_server(bench.remote_env(host.url), "slow-calls-server.log")
        try:
            bench.figures.append(
                measure_concurrency(
                    session,
                    CONCURRENCY_ROUNDS,
                    key="concurrency_remote",
                    setting=f"platform answering after {REMOTE_LATENCY_MS:g} ms",
                )
            )
        finally:
            session.close()


def run_serving(bench: BenchRun) -> None:
    models_dir = bench.root / "serving-models"
    model_dir = models_dir / TINY_MODEL_NAME
    # Built in a child process, so torch is never loaded into the process that times the other figures.
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from kamiwaza_mcp.local.tiny_model import create_tiny_model; "
            "create_tiny_model(Path(sys.argv[1]))",
            str(model_dir),
        ],
        check=True,
        env=bench.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=300,
    )
    env = bench.local_env("serving-state", models_dir)
    session = bench.open_server(env, "serving-server.log", timeout=300)
    try:
        deployment_id = deploy_tiny_model(session, TINY_MODEL_NAME)
        probe = EngineProbe(model_dir, env, bench.logs / "engine-probe.log")
        try:
            bench.figures.append(measure_serving(session, deployment_id, probe, SERVING_RUNS))
        finally:
            probe.close()
    finally:
        # The server stops the deployment's worker when it exits.
        session.close()


RUNNERS: dict[str, Callable[[BenchRun], None]] = {
    "sizes": run_sizes,
    "startup": run_startup,
    "calls": run_calls,
    "serving": run_serving,
}


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Run the kamiwaza-mcp benchmarks and write docs/benchmarks.md."
    )
    parser.add_argument(
        "--only",
        choices=GROUPS,
        action="append",
        help="run only this group (repeatable); the other figures are kept from docs/benchmarks.json",
    )
    parser.add_argument(
        "--note",
        action="append",
        default=[],
        help="a sentence about the run for the page, such as what else ran on the machine (repeatable)",
    )
    parser.add_argument(
        "--output", type=Path, default=REPO_DIR / "docs" / "benchmarks.md", help="markdown file to write"
    )
    args = parser.parse_args()
    raw_path = args.output.with_suffix(".json")
    kept_figures, kept_notes, kept_run_notes = (
        _kept_figures(raw_path, args.only) if args.only else ([], {}, [])
    )

    started = time.monotonic()
    bench = run_groups(args.only or list(GROUPS))
    figures = kept_figures + bench.figures
    notes = {**kept_notes, **bench.notes}
    run_notes = [*kept_run_notes, *args.note]

    command = "python bench/run.py" + "".join(f" --only {group}" for group in args.only or [])
    machine = machine_description()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(figures, machine, notes, command, run_notes))
    raw = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "machine": machine,
        "run_notes": run_notes,
        "figures": [figure.as_dict() for figure in figures],
        "notes": notes,
    }
    raw_path.write_text(json.dumps(raw, indent=2, ensure_ascii=False) + "\n")

    print(f"Wrote {args.output} and {raw_path} in {time.monotonic() - started:.0f} s")
    for figure in figures:
        print(f"  {figure.key}: {figure.value:.3f} {figure.unit}, target {figure.target}, met {figure.met}")
    return 0


def run_groups(groups: list[str]) -> BenchRun:
    """Run each group in a fresh temporary folder and return the figures they measured."""
    with tempfile.TemporaryDirectory(prefix="kamiwaza-bench-") as folder:
        root = Path(folder)
        (root / "hf-cache").mkdir()
        env = server_environment(
            {
                # The platform scans the Hugging Face cache for models; an empty one keeps runs comparable.
                "HF_HUB_CACHE": str(root / "hf-cache"),
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            }
        )
        bench = BenchRun(root=root, env=env)
        for group in groups:
            group_started = time.monotonic()
            print(f"Running {group} ...", flush=True)
            measured_before = len(bench.figures)
            RUNNERS[group](bench)
            finished = datetime.now(UTC).isoformat(timespec="seconds")
            for figure in bench.figures[measured_before:]:
                figure.measured_at = finished
            print(f"  {group} took {time.monotonic() - group_started:.0f} s", flush=True)
    return bench


def _kept_figures(raw_path: Path, rerun: list[str]) -> tuple[list[Figure], dict[str, list[str]], list[str]]:
    """Return the figures, notes and run notes of the last run that the groups being rerun do not replace."""
    if not raw_path.is_file():
        raise SystemExit(
            f"--only needs the figures of an earlier full run in {raw_path}; run without --only first"
        )
    raw = json.loads(raw_path.read_text())
    known = set(Figure.__dataclass_fields__)
    figures = [
        Figure(**{name: value for name, value in item.items() if name in known})
        for item in raw["figures"]
        if group_of(item["key"]) not in rerun
    ]
    replaced_notes = {heading for group in rerun for heading in GROUP_NOTES.get(group, ())}
    notes = {heading: lines for heading, lines in raw["notes"].items() if heading not in replaced_notes}
    return figures, notes, list(raw.get("run_notes", []))


if __name__ == "__main__":
    sys.exit(main())
