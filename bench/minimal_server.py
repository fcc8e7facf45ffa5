"""The baseline of the start-up benchmarks: an MCPServer with one tool, run on stdio.

It is started the way an MCP host starts kamiwaza-mcp, so the difference
between the two is what kamiwaza-mcp adds on top of the MCP SDK.
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

server = MCPServer(name="minimal")


@server.tool()
def echo(text: str) -> str:
    """Return `text` unchanged."""
    return text


if __name__ == "__main__":
    server.run("stdio")
