"""`python -m kamiwaza_mcp.local`: serve the local platform's API on its own, behind a bearer token."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .serve import DEFAULT_PORT, TOKEN_ENV, serve
from .settings import LocalPlatformSettings


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m kamiwaza_mcp.local",
        description=(
            "Serve the Kamiwaza API of the local platform over HTTP, so several MCP sessions share its "
            "deployments. Clients set KAMIWAZA_BASE_URL to http://HOST:PORT/api and KAMIWAZA_API_KEY to "
            f"the token. The token comes from ${TOKEN_ENV}; without it, one is generated and written to stderr."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"TCP port; 0 lets the OS choose (default: {DEFAULT_PORT})",
    )
    parser.add_argument("--state-dir", type=Path, help="folder of the platform's database and worker logs")
    parser.add_argument("--models-dir", type=Path, help="folder scanned for Hugging Face model folders")
    parser.add_argument(
        "--model-path", type=Path, action="append", default=[], help="a model folder to serve; repeatable"
    )
    parser.add_argument(
        "--no-hf-cache", action="store_true", help="leave the Hugging Face hub cache out of model discovery"
    )
    parser.add_argument(
        "--log-level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        default="INFO",
        help="level of the stderr log",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT or SIGTERM; return the exit status."""
    args = _parse_args(argv)
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # httpx logs every request at INFO, which would put each health probe of each worker in the log.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLevelName(args.log_level)))
    settings = LocalPlatformSettings(
        state_dir=args.state_dir,
        models_dir=args.models_dir,
        model_paths=args.model_path,
        scan_hf_cache=not args.no_hf_cache,
    )
    try:
        serve(args.host, args.port, os.environ.get(TOKEN_ENV) or None, settings)
    except (ValueError, OSError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
