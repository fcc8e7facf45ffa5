"""The `kamiwaza-mcp` command: run the MCP server on stdio (the default) or over streamable HTTP.

On stdio, stdout carries JSON-RPC only, so logging goes to stderr and is
configured here and nowhere else.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from .config import ServerSettings
    from .http_app import HTTPOptions

__all__ = ["main"]

logger = logging.getLogger(__name__)

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Kept equal to kamiwaza_mcp.local.serve's TOKEN_ENV and DEFAULT_PORT, which are not imported
# here so that --help and the stdio server do not load the local platform.
_PLATFORM_TOKEN_ENV = "KAMIWAZA_MCP_PLATFORM_TOKEN"
_PLATFORM_DEFAULT_PORT = 8765
# Flags that configure the HTTP listener, rejected with `--transport stdio`.
_HTTP_ONLY_FLAGS = {
    "host": "--host",
    "port": "--port",
    "stateless": "--stateless",
    "token_file": "--token-file",
    "generate_token": "--generate-token",
    "allowed_hosts": "--allowed-host",
    "allowed_origins": "--allowed-origin",
    "max_request_bytes": "--max-request-bytes",
}
# The Policy field each safety flag sets, and the flag's name for error messages.
_POLICY_FLAGS = {
    "read_only": "--read-only",
    "disable_destructive": "--disable-destructive",
    "tools": "--tools",
    "exclude_tools": "--exclude-tools",
    "confirmation": "--confirmation",
    "elicitation_timeout_seconds": "--elicitation-timeout",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kamiwaza-mcp",
        description=(
            "Run the Kamiwaza MCP server on stdio, or over streamable HTTP with --transport http. "
            "Set KAMIWAZA_BASE_URL (ending in /api) and "
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
    parser.add_argument(
        "--transport",
        choices=("stdio", "http"),
        default="stdio",
        help="stdio for a host that starts the server as a subprocess, http to serve MCP at /mcp (default: stdio)",
    )
    _add_http_arguments(parser)
    _add_policy_arguments(parser)
    _add_platform_command(parser)
    return parser


def _add_platform_command(parser: argparse.ArgumentParser) -> None:
    """Add `platform serve`, which runs the embedded local platform on its own, without MCP."""
    commands = parser.add_subparsers(dest="command", metavar="{platform}")
    platform = commands.add_parser(
        "platform",
        help="run the embedded local platform on its own; see 'kamiwaza-mcp platform serve --help'",
    )
    actions = platform.add_subparsers(dest="platform_action", metavar="{serve}", required=True)
    serve = actions.add_parser(
        "serve",
        help="serve the local platform's Kamiwaza API over HTTP",
        description=(
            "Serve the Kamiwaza API of the embedded local platform over HTTP, so several MCP servers share "
            "its deployments: point their KAMIWAZA_BASE_URL at http://HOST:PORT/api and KAMIWAZA_API_KEY "
            f"at the token. The token comes from --token-file or ${_PLATFORM_TOKEN_ENV}; without either, one "
            "is generated and printed once to stderr, and only a loopback address may be bound. Models come "
            "from KAMIWAZA_MCP_MODELS_DIR and state is kept in KAMIWAZA_MCP_STATE_DIR."
        ),
    )
    # The destinations differ from the HTTP transport's --host, --port and --token-file,
    # whose defaults must stay None so the stdio check can tell whether they were given.
    serve.add_argument(
        "--host",
        dest="platform_host",
        metavar="HOST",
        default="127.0.0.1",
        help="address to bind (default: 127.0.0.1)",
    )
    serve.add_argument(
        "--port",
        dest="platform_port",
        metavar="PORT",
        type=int,
        default=_PLATFORM_DEFAULT_PORT,
        help=f"TCP port to listen on; 0 picks a free one (default: {_PLATFORM_DEFAULT_PORT})",
    )
    serve.add_argument(
        "--token-file",
        dest="platform_token_file",
        type=Path,
        metavar="PATH",
        help="file whose content (surrounding whitespace removed) is the bearer token",
    )


def _add_policy_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "Safety",
        "Each flag overrides the environment variable of the same setting (KAMIWAZA_MCP_READ_ONLY, "
        "KAMIWAZA_MCP_TOOLS, ...). Limits such as KAMIWAZA_MCP_MAX_REPLICAS, KAMIWAZA_MCP_MAX_DEPLOYMENTS, "
        "KAMIWAZA_MCP_ALLOWED_MODELS and KAMIWAZA_MCP_PROTECTED_DEPLOYMENTS are set in the environment.",
    )
    group.add_argument(
        "--read-only",
        action="store_true",
        default=None,
        help="offer only the tools that change nothing, and reject calls to the others",
    )
    group.add_argument(
        "--disable-destructive",
        action="store_true",
        default=None,
        help="do not offer stop_deployment and unload_model, and reject calls to them",
    )
    group.add_argument("--tools", metavar="NAME,...", help="comma-separated names of the only tools to offer")
    group.add_argument(
        "--exclude-tools", metavar="NAME,...", help="comma-separated names of tools not to offer"
    )
    group.add_argument(
        "--confirmation",
        choices=("auto", "token", "deny"),
        help="how stop_deployment and unload_model get the person's confirmation: auto (a form when the "
        "client supports one, else a single-use token; the default), token, or deny (reject them)",
    )
    group.add_argument(
        "--elicitation-timeout",
        type=float,
        metavar="SECONDS",
        help="seconds the person has to fill in a confirmation form (default: 60)",
    )


def _settings(args: argparse.Namespace) -> ServerSettings:
    """Read the settings from the environment, then apply the safety flags given on the command line.

    Raises ConfigurationError naming the variable or flag with an invalid value.
    """
    from .config import ServerSettings, build_policy

    settings = ServerSettings.from_env()
    overrides: dict[str, object] = {}
    for field, name in (
        ("read_only", "read_only"),
        ("disable_destructive", "disable_destructive"),
        ("confirmation", "confirmation"),
        ("elicitation_timeout_seconds", "elicitation_timeout"),
    ):
        value = getattr(args, name)
        if value is not None:
            overrides[field] = value
    for field in ("tools", "exclude_tools"):
        names = getattr(args, field)
        if names is not None:
            overrides[field] = frozenset(name.strip() for name in names.split(",") if name.strip())
    if not overrides:
        return settings
    policy = build_policy({**settings.policy.model_dump(), **overrides}, _POLICY_FLAGS)
    return settings.model_copy(update={"policy": policy})


def _add_http_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "HTTP transport",
        "Used with --transport http. A bearer token comes from --token-file, from KAMIWAZA_MCP_HTTP_TOKEN "
        "or from --generate-token; clients send it as 'Authorization: Bearer <token>'. Binding any "
        "address but loopback requires one.",
    )
    group.add_argument("--host", help="address to bind (default: 127.0.0.1)")
    group.add_argument("--port", type=int, help="TCP port to listen on; 0 picks a free one (default: 8765)")
    group.add_argument(
        "--stateless",
        action="store_true",
        default=None,
        help="handle each request independently, without Mcp-Session-Id sessions; suits a load balancer",
    )
    tokens = group.add_mutually_exclusive_group()
    tokens.add_argument(
        "--token-file",
        type=Path,
        metavar="PATH",
        help="file whose content (surrounding whitespace removed) is the bearer token",
    )
    tokens.add_argument(
        "--generate-token",
        action="store_true",
        default=None,
        help="generate a random bearer token and print it once to stderr",
    )
    group.add_argument(
        "--allowed-host",
        dest="allowed_hosts",
        action="append",
        metavar="HOST",
        help="another accepted Host header, such as mcp.example.com or mcp.example.com:443; repeatable "
        "(loopback names and the bound address are always accepted)",
    )
    group.add_argument(
        "--allowed-origin",
        dest="allowed_origins",
        action="append",
        metavar="ORIGIN",
        help="another accepted Origin header, such as https://chat.example.com; repeatable",
    )
    group.add_argument(
        "--max-request-bytes",
        type=int,
        metavar="BYTES",
        help="largest accepted request body in bytes; larger ones get 413 (default: 1048576)",
    )


def _http_options(args: argparse.Namespace) -> HTTPOptions:
    """Collect the HTTP listener settings; raise ConfigurationError for a missing or conflicting token."""
    from .config import ConfigurationError
    from .http_app import DEFAULT_MAX_REQUEST_BYTES, DEFAULT_PORT, TOKEN_ENV, HTTPOptions, generate_token

    token = os.environ.get(TOKEN_ENV, "").strip() or None
    if token is not None and (args.token_file is not None or args.generate_token):
        raise ConfigurationError(
            f"{TOKEN_ENV} is set and so is --token-file or --generate-token; give the token one way"
        )
    if args.token_file is not None:
        try:
            token = args.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigurationError(f"cannot read --token-file {str(args.token_file)!r}: {exc}") from exc
        if not token:
            raise ConfigurationError(
                f"--token-file {str(args.token_file)!r} is empty; write the token into it"
            )
    if args.generate_token:
        token = generate_token()
    return HTTPOptions(
        host=args.host if args.host is not None else "127.0.0.1",
        port=args.port if args.port is not None else DEFAULT_PORT,
        token=token,
        stateless=bool(args.stateless),
        allowed_hosts=tuple(args.allowed_hosts or ()),
        allowed_origins=tuple(args.allowed_origins or ()),
        max_request_bytes=(
            args.max_request_bytes if args.max_request_bytes is not None else DEFAULT_MAX_REQUEST_BYTES
        ),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, configure logging and serve until stdin closes or a stop signal; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "platform":
        server_flags = [flag for name, flag in _HTTP_ONLY_FLAGS.items() if getattr(args, name) is not None]
        if args.transport != "stdio":
            server_flags.insert(0, "--transport")
        if server_flags:
            parser.error(f"{', '.join(server_flags)}: options of the MCP server, not of 'platform serve'")
        return _serve_platform(args)
    if args.transport == "stdio":
        http_flags = [flag for name, flag in _HTTP_ONLY_FLAGS.items() if getattr(args, name) is not None]
        if http_flags:
            parser.error(f"{', '.join(http_flags)}: valid only with --transport http")
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    # Imported after argument parsing so --help and --version stay fast.
    from .config import ConfigurationError
    from .server import build_server

    try:
        http_options = _http_options(args) if args.transport == "http" else None
        if http_options is not None:
            from .http_app import validate_options

            validate_options(http_options)
        server = build_server(_settings(args))
    except ConfigurationError as exc:
        logger.error("Invalid configuration: %s", exc)
        return 2

    if http_options is None:
        logger.info("Starting kamiwaza-mcp %s on stdio", __version__)
        try:
            server.run("stdio")
        except KeyboardInterrupt:
            logger.info("Interrupted; stopping")
        return 0
    return _serve_http(server, http_options, generated=bool(args.generate_token))


def _serve_http(server: MCPServer[Any], options: HTTPOptions, *, generated: bool) -> int:
    import anyio

    from .config import ConfigurationError
    from .http_app import serve_http

    if generated and options.token is not None:
        # Printed, not logged, so the token reaches no log handler or file.
        print(f"Bearer token for this server (shown only now): {options.token}", file=sys.stderr, flush=True)
    logger.info("Starting kamiwaza-mcp %s on streamable HTTP", __version__)
    try:
        anyio.run(serve_http, server, options)
    except ConfigurationError as exc:
        logger.error("Invalid configuration: %s", exc)
        return 2
    except KeyboardInterrupt:
        logger.info("Interrupted; stopping")
    return 0


def _serve_platform(args: argparse.Namespace) -> int:
    """Run `platform serve`: the local platform's API over HTTP until SIGINT or SIGTERM."""
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs every request at INFO, which would log each health probe of each worker.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLevelName(args.log_level)))

    token = os.environ.get(_PLATFORM_TOKEN_ENV, "").strip() or None
    if args.platform_token_file is not None:
        if token is not None:
            logger.error(
                "Invalid configuration: %s is set and so is --token-file; give the token one way",
                _PLATFORM_TOKEN_ENV,
            )
            return 2
        try:
            token = args.platform_token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            logger.error(
                "Invalid configuration: cannot read --token-file %r: %s", str(args.platform_token_file), exc
            )
            return 2
        if not token:
            logger.error(
                "Invalid configuration: --token-file %r is empty; write the token into it",
                str(args.platform_token_file),
            )
            return 2

    # Imported here so that the MCP server never loads the local platform's web stack.
    from .local.serve import serve

    logger.info("Starting the kamiwaza-mcp %s local platform server", __version__)
    try:
        serve(args.platform_host, args.platform_port, token)
    except (ValueError, OSError) as exc:
        logger.error("Cannot serve the local platform: %s", exc)
        return 2
    except KeyboardInterrupt:
        logger.info("Interrupted; stopping")
    return 0
