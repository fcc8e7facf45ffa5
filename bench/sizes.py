"""Figure 6: the size of `tools/list` and of a `list_deployments` result for 50 deployments.

Sizes are characters of the JSON-RPC response lines exactly as the server
wrote them on stdout, envelope included. The raw baseline is the body of the
platform's `GET /serving/deployments` for the same deployments. Sizes do not
vary between runs, so each is measured once.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from common import Figure, LoadMeter
from stdio_session import StdioSession

__all__ = ["concise_arguments", "measure_sizes"]

TOOLS_LIST_TARGET_CHARS = 24_000
CONCISE_TARGET = 0.25
# A rough token count for English and JSON text; real tokenizers vary by model.
CHARS_PER_TOKEN = 4


def concise_arguments(tools: list[dict[str, Any]], tool_name: str, count: int) -> dict[str, Any]:
    """Return the arguments that ask `tool_name` for `count` items in concise form, as far as its schema allows.

    `response_format: concise` and `limit` are passed only when the published
    input schema has them.
    """
    schema = next(tool["inputSchema"] for tool in tools if tool["name"] == tool_name)
    properties = schema.get("properties", {})
    arguments: dict[str, Any] = {}
    response_format = properties.get("response_format")
    if response_format is not None:
        arguments["response_format"] = "concise"
    limit = properties.get("limit")
    if limit is not None:
        arguments["limit"] = min(count, int(limit.get("maximum", count)))
    return arguments


def measure_sizes(session: StdioSession, platform_url: str, deployment_count: int) -> list[Figure]:
    load = LoadMeter()
    listing, listing_line = session.read_response(session.send("tools/list", {}))
    tools = listing["result"]["tools"]

    arguments = concise_arguments(tools, "list_deployments", deployment_count)
    answer, answer_line = session.read_response(
        session.send("tools/call", {"name": "list_deployments", "arguments": arguments})
    )
    result = answer["result"]
    if result.get("isError"):
        raise RuntimeError(f"list_deployments failed: {result.get('content')}")
    listed = len((result.get("structuredContent") or {}).get("deployments", []))
    text_chars = sum(len(block.get("text", "")) for block in result.get("content", []))
    structured_chars = len(json.dumps(result.get("structuredContent"), separators=(",", ":")))

    raw = httpx.get(f"{platform_url}/serving/deployments", timeout=30)
    raw.raise_for_status()
    raw_chars = len(raw.text)
    raw_count = len(raw.json())

    tools_chars = len(listing_line.rstrip("\n"))
    answer_chars = len(answer_line.rstrip("\n"))
    share = answer_chars / raw_chars
    form = json.dumps(arguments) if arguments else "no arguments (the tool has no response_format or limit)"
    return [
        Figure(
            key="tools_list_size",
            title=f"Answer size: tools/list ({len(tools)} tools)",
            ours=f"{tools_chars:,} chars",
            baseline="",
            value=tools_chars,
            unit="chars",
            target=f"≤ {TOOLS_LIST_TARGET_CHARS:,} chars",
            met=tools_chars <= TOOLS_LIST_TARGET_CHARS,
            runs=1,
            details=[
                f"about {tools_chars // CHARS_PER_TOKEN:,} tokens at {CHARS_PER_TOKEN} characters per token"
            ],
            **load.fields(),
        ),
        Figure(
            key="deployments_size",
            title=f"Answer size: list_deployments for {deployment_count} deployments, concise, against raw JSON",
            ours=f"{answer_chars:,} chars",
            baseline=f"{raw_chars:,} chars",
            value=share,
            unit="of raw",
            target=f"≤ {CONCISE_TARGET:.0%} of raw",
            met=share <= CONCISE_TARGET,
            runs=1,
            details=[
                f"arguments: {form}",
                f"the answer lists {listed} of the {raw_count} deployments the platform returned; "
                f"its text block has {text_chars:,} chars and its structuredContent {structured_chars:,} chars "
                "(compact JSON)",
                f"the {deployment_count} deployments were written into the platform's store, DEPLOYED with one "
                "replica each and no worker process",
            ],
            **load.fields(),
        ),
    ]
