"""The `kamiwaza-mcp` command: run the MCP server on stdio.

stdout carries JSON-RPC only, so logging goes to stderr and is configured
here and nowhere else.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from . import __version__

__all__ = ["main"]

logger = logging.getLogger(__name__)

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kamiwaza-mcp",
        description=(
            "Run the Kamiwaza MCP server on stdio. Set KAMIWAZA_BASE_URL (ending in /api) and "
            "KAMIWAZA_API_KEY to use a Kamiwaza platform; leave KAMIWAZA_BASE_URL unset to run the "
            "embedded local platform (models from KAMIWAZA_MCP_MODELS_DIR, state in KAMIWAZA_MCP_STATE_DIR)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=_LOG_LEVELS,
        default="INFO",
        help="minimum level of the log lines written to stderr (default: INFO)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, configure logging and serve until stdin closes; return the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    # Imported after argument parsing so --help and --version stay fast.
    from .config import ConfigurationError
    from .server import build_server

    try:
        server = build_server()
    except ConfigurationError as exc:
        logger.error("Invalid configuration: %s", exc)
        return 2
    logger.info("Starting kamiwaza-mcp %s on stdio", __version__)
    try:
        server.run("stdio")
    except KeyboardInterrupt:
        logger.info("Interrupted; stopping")
    return 0
