"""The command that runs vLLM's OpenAI-compatible server in place of the engine worker.

vLLM serves /v1/chat/completions and /v1/completions itself and answers GET /health
with 200 once the model is loaded, so the supervisor's usual readiness check applies.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["VLLM_HEALTH_PATH", "vllm_server_command"]

VLLM_HEALTH_PATH = "/health"


def vllm_server_command(
    python_executable: str, model_path: Path, *, host: str, port: int, served_model_name: str
) -> list[str]:
    """Build the argv that serves `model_path` with vLLM on `host`:`port`."""
    # NOTE: this command has not been run; the tests check the argv only, on machines without a GPU.
    return [
        python_executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_path),
        "--host",
        host,
        "--port",
        str(port),
        "--served-model-name",
        served_model_name,
    ]
