"""`python -m kamiwaza_mcp`: run the MCP server on stdio."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
