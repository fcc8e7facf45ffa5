"""kamiwaza-mcp: an MCP server for model serving on the Kamiwaza AI platform."""

__version__ = "0.1.0"
