"""Render the figures of a bench run as docs/benchmarks.md."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from common import Figure

__all__ = ["group_of", "number_of", "render"]

# Figure key prefixes with the benchmark's number and the bench group that measures it.
FIGURE_KINDS = {
    "cold_start": (1, "startup"),
    "idle_rss": (2, "startup"),
    "call_overhead": (3, "calls"),
    "concurrency": (4, "calls"),
    "serving": (5, "serving"),
    "tools_list_size": (6, "sizes"),
    "deployments_size": (6, "sizes"),
}


def _kind_of(key: str) -> tuple[int, str]:
    for prefix, kind in FIGURE_KINDS.items():
        if key.startswith(prefix):
            return kind
    raise KeyError(f"no benchmark kind for figure key {key!r}; add it to FIGURE_KINDS")


def number_of(key: str) -> int:
    return _kind_of(key)[0]


def group_of(key: str) -> str:
    return _kind_of(key)[1]


METHODS = """\
## How the figures are measured

Every server is started the way an MCP host starts it: as a child process on stdio, spoken to in
raw JSON-RPC lines (`bench/stdio_session.py`), so the client side costs almost nothing. Each figure
alternates kamiwaza-mcp and its baseline run by run, so a change of the machine's load hits both,
and reports medians. All state, models and logs live in a temporary folder; every connection is
to 127.0.0.1.

1. **Cold start**: time from spawning the process to the `initialize` result. kamiwaza-mcp is the
   installed `kamiwaza-mcp` console script; the baseline is `bench/minimal_server.py`, an
   `MCPServer` with one tool, run by the same interpreter. The default configuration (no
   `KAMIWAZA_BASE_URL`) starts the embedded local platform in the server's lifespan, before the
   `initialize` result, with an empty models folder; the remote configuration only creates the
   HTTP client. One unmeasured start of each comes first, so the OS file cache is warm.
2. **Idle RSS**: VmRSS from `/proc/<pid>/status`, read 0.5 s after the `initialize` result, in the
   same starts as figure 1.
3. **Per-call overhead**: the read-only tool `list_deployments` over stdio against
   `KamiwazaClient.list_deployments()` called in the bench process. Both reach the same local
   platform, served on 127.0.0.1 by uvicorn in a process of its own (`bench/platform_host.py`),
   with the server pointed at it by `KAMIWAZA_BASE_URL`. Calls alternate, after 20 warm-up calls.
4. **Concurrency**: 64 `tools/call` requests written at once on one session, timed until the last
   response, against one call. It runs twice: against the platform on 127.0.0.1 as it is, and
   against the same platform delaying every response by 50 ms, the round trip to a remote cluster.
5. **Serving overhead**: `generate` through the tool in the default configuration, on a deployment
   of a tiny random-weight Llama model (`kamiwaza_mcp.local.tiny_model`, 2 layers, hidden size 64)
   with one replica, against `TransformersEngine.generate` on the same model folder in
   `bench/engine_probe.py`, a process started with the worker's environment. Tokens per second are
   completion tokens divided by the wall time of the call (tool) or of `generate` (engine).
6. **Answer size**: characters of the JSON-RPC response lines as written on stdout. The 50
   deployments are written into the platform's store (DEPLOYED, one replica each, no worker), and
   the raw baseline is the body of the platform's `GET /api/serving/deployments`.
"""


def render(
    figures: Sequence[Figure],
    machine: Mapping[str, str],
    notes: Mapping[str, Sequence[str]],
    command: str,
    run_notes: Sequence[str],
) -> str:
    """Return the page: machine, results table, method, and each figure's details and the notes."""
    ordered = sorted(figures, key=lambda figure: (number_of(figure.key), figure.key))
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{command}`. Each figure compares kamiwaza-mcp with a baseline measured in the same",
        "run; the method of each is below the table, and the raw figures are in `docs/benchmarks.json`.",
        "",
    ]
    lines += _machine_section(figures, machine, run_notes)
    lines += _results_table(ordered)
    lines += ["", METHODS, "## Details", ""]
    for figure in ordered:
        lines += [f"### {figure.title}", ""]
        lines += [f"- {detail}" for detail in figure.details]
        lines.append(
            f"- runs: {figure.runs}; load average {figure.load_start:.2f} at the start and "
            f"{figure.load_end:.2f} at the end; measured at {figure.measured_at or 'an unknown time'}"
        )
        lines.append("")
    for heading, entries in notes.items():
        lines += [f"### {heading}", ""]
        lines += [f"- {entry}" for entry in entries]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _machine_section(
    figures: Sequence[Figure], machine: Mapping[str, str], run_notes: Sequence[str]
) -> list[str]:
    lines = ["## Machine", ""]
    lines += [f"- {name}: {value}" for name, value in machine.items()]
    lines += [f"- note: {note}" for note in run_notes]
    cores = os.cpu_count() or 1
    busiest = max((figure.load_start for figure in figures), default=0.0)
    if busiest > cores:
        lines.append(
            f"- the 1-minute load average, which counts the benchmark's own processes too, reached "
            f"{busiest:.2f} on {cores} cores at the start of a figure; above one per core, timings spread "
            "more (each figure lists its load)"
        )
    return [*lines, ""]


def _results_table(ordered: Sequence[Figure]) -> list[str]:
    lines = [
        "## Results",
        "",
        "| # | figure | kamiwaza-mcp | baseline | result | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for figure in ordered:
        lines.append(
            f"| {number_of(figure.key)} | {figure.title} | {figure.ours} | {figure.baseline or '—'} | "
            f"{_value(figure)} | {figure.target} | {_met(figure.met)} |"
        )
    return lines


def _value(figure: Figure) -> str:
    if figure.unit == "chars":
        return f"{figure.value:,.0f} chars"
    if figure.unit == "of raw":
        return f"{figure.value:.1%} of raw"
    if figure.unit.startswith("ms"):
        return f"{figure.value:+.2f} {figure.unit}"
    return f"{figure.value:.2f}{figure.unit}"


def _met(met: bool | None) -> str:
    if met is None:
        return "—"
    return "yes" if met else "**no, missed**"
