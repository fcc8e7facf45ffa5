"""A chat-ops session against kamiwaza-mcp, driven the way an MCP host drives it.

The script starts `kamiwaza-mcp` as a subprocess over stdio, with no
KAMIWAZA_BASE_URL set, so the server runs its embedded local platform. It then
lists the tools and models, estimates memory, deploys two replicas of a model,
generates text, checks health, unloads and loads the model, and stops the
deployment. Stop and unload go through the confirmation flow: a first call
returns a preview and a single-use token, and only a second call with that
token acts.

    python examples/chat_ops_session.py [--state-dir DIR] [--model NAME]

With no model in the models folder, the script first builds a tiny random-weight
model there (this needs the `engine` extra), so the session runs on any laptop.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters
from mcp_types import CallToolResult, TextContent

DEFAULT_TIMEOUT_SECONDS = 600.0


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def show(text: str) -> None:
    print(textwrap.indent(text.strip(), "   "), flush=True)


def text_of(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


async def call(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Call a tool, print its text block, and return its structured content."""
    result = await client.call_tool(tool, arguments)
    if result.is_error:
        raise SystemExit(f"{tool} failed: {text_of(result)}")
    show(text_of(result))
    return result.structured_content or {}


def ensure_model(models_dir: Path) -> None:
    """Create a tiny model in `models_dir` when it contains no model folder yet."""
    if any(models_dir.glob("*/config.json")) or any(models_dir.glob("*/*/config.json")):
        return
    from kamiwaza_mcp.local.tiny_model import create_tiny_model

    target = models_dir / "tiny-chat"
    print(f"No model in {models_dir}; creating a tiny random-weight model at {target}", flush=True)
    create_tiny_model(target)


async def wait_for_status(client: Client, deployment_id: str, wanted: str, wait_seconds: float) -> str:
    deadline = time.monotonic() + wait_seconds
    status = ""
    while time.monotonic() < deadline:
        result = await client.call_tool("get_deployment_status", {"deployment_id": deployment_id})
        status = (result.structured_content or {}).get("status", "")
        if status == wanted or status in ("FAILED", "ERROR", "STOPPED"):
            return status
        await asyncio.sleep(1.0)
    return status


async def confirmed(client: Client, tool: str, deployment_id: str) -> dict[str, Any]:
    """Run a destructive tool through its preview-then-confirm flow."""
    print(f"   [{tool}: preview call, nothing is changed yet]", flush=True)
    preview = await call(client, tool, {"deployment_id": deployment_id})
    token = preview["confirmation_token"]
    print(f"   [{tool}: confirming with the single-use token from the preview]", flush=True)
    return await call(client, tool, {"deployment_id": deployment_id, "confirmation_token": token})


async def run_session(state_dir: Path, model: str | None, wait_seconds: float) -> None:
    models_dir = state_dir / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    ensure_model(models_dir)

    env = {
        "KAMIWAZA_MCP_STATE_DIR": str(state_dir),
        "KAMIWAZA_MCP_MODELS_DIR": str(models_dir),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    # The server logs to stderr; WARNING keeps its lines out of the session transcript.
    command = shutil.which("kamiwaza-mcp")
    args = ["--log-level", "WARNING"]
    if command is None:
        command, args = sys.executable, ["-m", "kamiwaza_mcp", *args]
    server = StdioServerParameters(command=command, args=args, env=env)

    async with Client(server, read_timeout_seconds=wait_seconds) as client:
        step("List tools")
        tools = await client.list_tools()
        show(", ".join(sorted(tool.name for tool in tools.tools)))

        step("List models")
        models = await call(client, "list_models", {})
        model_ref = model or models["models"][0]["id"]

        step("Estimate memory for 2 replicas")
        await call(client, "estimate_model_vram", {"model": model_ref, "replicas": 2})

        step("Deploy 2 replicas")
        deployment = await call(
            client, "deploy_model", {"model": model_ref, "replicas": 2, "max_concurrent_requests": 4}
        )
        deployment_id = deployment["id"]

        step("Wait for DEPLOYED")
        status = await wait_for_status(client, deployment_id, "DEPLOYED", wait_seconds)
        show(f"status: {status}")
        if status != "DEPLOYED":
            raise SystemExit(
                f"deployment {deployment_id} ended as {status}; see get_deployment for the error"
            )

        step("Generate")
        answer = await call(
            client,
            "generate",
            {
                "deployment_id": deployment_id,
                "messages": [{"role": "user", "content": "Say hello to the operators."}],
                "max_tokens": 24,
                "temperature": 0,
            },
        )
        if not answer.get("text"):
            raise SystemExit("generate returned no text")
        print("   (a tiny model with random weights writes noise; a real model writes an answer)", flush=True)

        step("Health")
        await call(client, "get_health", {"deployment_id": deployment_id})

        step("Unload the model (confirmation required)")
        await confirmed(client, "unload_model", deployment_id)

        step("Load it back")
        await call(client, "load_model", {"deployment_id": deployment_id})
        status = await wait_for_status(client, deployment_id, "DEPLOYED", wait_seconds)
        show(f"status: {status}")

        step("Generate again after the reload")
        await call(
            client, "simple_generate", {"deployment_id": deployment_id, "prompt": "Hello", "max_tokens": 12}
        )

        step("Stop the deployment (confirmation required)")
        await confirmed(client, "stop_deployment", deployment_id)

        step("Final status")
        await call(client, "get_deployment_status", {"deployment_id": deployment_id})

    print("\nSession finished: a deployed model generated text, and every step succeeded.", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="platform state folder (default: a new temporary folder, removed at the end)",
    )
    parser.add_argument("--model", help="model id, name or repo id to deploy (default: the first listed)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        help="seconds to wait for each deployment step (default: %(default)s)",
    )
    options = parser.parse_args()

    if options.state_dir is not None:
        asyncio.run(run_session(options.state_dir.resolve(), options.model, options.timeout))
        return
    with tempfile.TemporaryDirectory(prefix="kamiwaza-mcp-demo-") as folder:
        asyncio.run(run_session(Path(folder), options.model, options.timeout))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
