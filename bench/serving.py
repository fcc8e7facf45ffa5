"""Figure 5: tokens per second of `generate` through the tool against the engine's own `generate`.

The tool runs in kamiwaza-mcp's default configuration, the embedded local
platform, on a deployment of a tiny random-weight model with one replica. The
baseline is `engine_probe.py`: the same engine class on the same model folder, in
a process started with the same environment as an engine worker. Both generate
greedily (temperature 0) from the same prompt with the same max_tokens, and they take turns.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from common import BENCH_DIR, Figure, LoadMeter, median, spread
from stdio_session import StdioSession

__all__ = ["MAX_TOKENS", "PROMPT", "EngineProbe", "deploy_tiny_model", "measure_serving"]

SERVING_TARGET = 0.90
MAX_TOKENS = 128
PROMPT = "The river runs past the old mill, and the children walk to school"
DEPLOY_TIMEOUT_SECONDS = 240
WARMUP_GENERATIONS = 2


class EngineProbe:
    """`engine_probe.py` in a child process, loaded and waiting for generation requests."""

    def __init__(self, model_dir: Path, env: Mapping[str, str], log_path: Path) -> None:
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, str(BENCH_DIR / "engine_probe.py"), str(model_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            # A worker gets the platform's environment plus PYTHONUNBUFFERED=1.
            env={**env, "PYTHONUNBUFFERED": "1"},
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"engine_probe.py failed to load the model; see {log_path}")

    def generate(self, max_tokens: int) -> tuple[float, int]:
        """Return the seconds of one generation and the tokens it produced."""
        assert self.process.stdin is not None and self.process.stdout is not None
        request = {"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline())
        return float(answer["seconds"]), int(answer["completion_tokens"])

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)
        self._log.close()


def deploy_tiny_model(session: StdioSession, model_name: str) -> str:
    """Deploy the model with one replica through `deploy_model`, wait for DEPLOYED and return its id."""
    result = session.call(
        "tools/call",
        {
            "name": "deploy_model",
            "arguments": {"model": model_name, "replicas": 1, "wait_timeout_seconds": DEPLOY_TIMEOUT_SECONDS},
        },
    )
    view = result.get("structuredContent") or {}
    if result.get("isError") or view.get("status") != "DEPLOYED":
        raise RuntimeError(f"deploy_model did not reach DEPLOYED: {result.get('content')}")
    deployment_id: str = view["id"]
    return deployment_id


def _tool_generate(session: StdioSession, deployment_id: str, max_tokens: int) -> tuple[float, int]:
    arguments = {"deployment_id": deployment_id, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0}
    started = time.perf_counter()
    result = session.call("tools/call", {"name": "generate", "arguments": arguments})
    seconds = time.perf_counter() - started
    if result.get("isError"):
        raise RuntimeError(f"generate failed: {result.get('content')}")
    return seconds, int(result["structuredContent"]["usage"]["completion_tokens"])


def measure_serving(session: StdioSession, deployment_id: str, probe: EngineProbe, runs: int) -> Figure:
    """Compare tokens per second in turns, and time 1-token calls for the fixed cost of a call."""
    load = LoadMeter()
    for _ in range(WARMUP_GENERATIONS):
        _tool_generate(session, deployment_id, MAX_TOKENS)
        probe.generate(MAX_TOKENS)

    tool_rates: list[float] = []
    engine_rates: list[float] = []
    token_counts: set[tuple[int, int]] = set()
    for _ in range(runs):
        tool_seconds, tool_tokens = _tool_generate(session, deployment_id, MAX_TOKENS)
        engine_seconds, engine_tokens = probe.generate(MAX_TOKENS)
        tool_rates.append(tool_tokens / tool_seconds)
        engine_rates.append(engine_tokens / engine_seconds)
        token_counts.add((tool_tokens, engine_tokens))

    # One-token generations show the fixed cost of a call: the MCP round trip, the
    # platform's proxy and the worker's HTTP handling, with almost no generation in it.
    # NOTE: on Linux about 40 ms of it is a delayed-ACK stall: the worker binds its socket
    # without IPPROTO_TCP (kamiwaza_mcp/local/worker.py, _bind), so asyncio leaves
    # TCP_NODELAY off, and a response uvicorn writes in two parts waits for the platform's ACK.
    short_tool: list[float] = []
    short_engine: list[float] = []
    for _ in range(runs):
        short_tool.append(_tool_generate(session, deployment_id, 1)[0])
        short_engine.append(probe.generate(1)[0])

    ratio = median(tool_rates) / median(engine_rates)
    # Each pair of calls ran back to back, so its ratio shares the machine's load of that moment.
    paired = median([tool / engine for tool, engine in zip(tool_rates, engine_rates, strict=True)])
    return Figure(
        key="serving",
        title=f"Serving overhead: tokens/s of generate through the tool against the engine, {MAX_TOKENS} tokens",
        ours=f"{median(tool_rates):.0f} tokens/s",
        baseline=f"{median(engine_rates):.0f} tokens/s",
        value=ratio,
        unit="× (higher is better)",
        target=f"≥ {SERVING_TARGET:g}",
        met=ratio >= SERVING_TARGET,
        runs=runs,
        details=[
            "through the tool: "
            + spread(tool_rates, scale=1, unit="tokens/s", digits=1, sample_noun="calls"),
            "engine: " + spread(engine_rates, scale=1, unit="tokens/s", digits=1, sample_noun="calls"),
            f"median of the {runs} ratios of calls made back to back: {paired:.2f}",
            "tokens generated per call (tool, engine): "
            + ", ".join(f"{tool}/{engine}" for tool, engine in sorted(token_counts)),
            f"a 1-token generate takes {median(short_tool) * 1000:.1f} ms through the tool and "
            f"{median(short_engine) * 1000:.1f} ms in the engine (medians of {runs}), so a call "
            f"costs about {(median(short_tool) - median(short_engine)) * 1000:.0f} ms besides generation",
            f'prompt "{PROMPT}", max_tokens {MAX_TOKENS}, temperature 0 (greedy), one replica, CPU',
        ],
        **load.fields(),
    )
