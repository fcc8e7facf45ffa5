"""The published tool surface: a checked-in snapshot of tools/list, and its size in tokens.

After an intended change to a tool's name, description, schema or hints,
regenerate the snapshot and review its diff:

    UPDATE_SNAPSHOTS=1 pytest tests/mcp/test_mcp_tools_list.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from kamiwaza_mcp.config import ServerSettings
from kamiwaza_mcp.server import build_server
from kamiwaza_mcp.tools._common import estimated_tokens

SNAPSHOT = Path(__file__).parent / "snapshots" / "tools_list.json"
# Hosts put the whole tools/list into the model's context; this keeps it small.
MAX_TOOLS_LIST_TOKENS = 6000
# No request reaches the platform: only tools/list is called.
UNUSED_PLATFORM = "http://127.0.0.1:9/api"


async def tools_list(mode: str) -> dict[str, Any]:
    """Return the tools/list result of a server with the default policy, as JSON data in wire form."""
    with anyio.fail_after(30):
        async with Client(build_server(ServerSettings(base_url=UNUSED_PLATFORM)), mode=mode) as client:
            listing = await client.list_tools()
    data: dict[str, Any] = listing.model_dump(mode="json", by_alias=True, exclude_none=True)
    return data


def tools_of(listing: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the tools of a listing; the result's other fields depend on the protocol version."""
    tools: list[dict[str, Any]] = listing["tools"]
    return tools


async def test_tools_list_matches_snapshot() -> None:
    tools = tools_of(await tools_list("legacy"))
    rendered = json.dumps({"tools": tools}, indent=2, sort_keys=True) + "\n"

    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(rendered, encoding="utf-8")
    assert SNAPSHOT.exists(), f"{SNAPSHOT} is missing; create it with UPDATE_SNAPSHOTS=1"
    assert rendered == SNAPSHOT.read_text(encoding="utf-8"), (
        "tools/list differs from the snapshot; if the change is intended, run "
        "UPDATE_SNAPSHOTS=1 pytest tests/mcp/test_mcp_tools_list.py and review the diff"
    )


async def test_both_modes_list_the_same_tools() -> None:
    assert tools_of(await tools_list("auto")) == tools_of(await tools_list("legacy"))


async def test_tools_list_token_count(capsys: pytest.CaptureFixture[str]) -> None:
    listing = await tools_list("legacy")
    wire = json.dumps(listing, separators=(",", ":"))
    tokens = estimated_tokens(wire)

    with capsys.disabled():
        print(f"\ntools/list: {len(listing['tools'])} tools, {len(wire)} characters, about {tokens} tokens")
    assert tokens < MAX_TOOLS_LIST_TOKENS


async def test_descriptions_are_short() -> None:
    """Each description tells when to use the tool and what it returns, in a sentence or two."""
    listing = await tools_list("legacy")

    for tool in tools_of(listing):
        sentences = [part for part in tool["description"].replace("\n", " ").split(". ") if part.strip()]
        assert len(sentences) <= 3, tool["name"]
        assert len(tool["description"]) <= 400, tool["name"]
