"""Streamable HTTP transport: the ASGI app around the MCP server, its access checks, and the uvicorn runner.

Checks on every request, outermost first:

1. bearer token (401), when the server has one;
2. request body size (413), by the MCP SDK's session manager;
3. Host header (421) and Origin header (403), by the MCP SDK's transport
   security settings, which this module fills from the bind address and the
   `--allowed-host` and `--allowed-origin` values.

A server that binds anything but a loopback address must have a token, so no
client on the network reaches the tools without one.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp, Receive, Scope, Send

from .config import ConfigurationError

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "DEFAULT_PORT",
    "MCP_PATH",
    "MIN_TOKEN_LENGTH",
    "TOKEN_ENV",
    "BearerTokenMiddleware",
    "HTTPOptions",
    "build_http_app",
    "generate_token",
    "is_loopback",
    "serve_http",
    "transport_security",
    "validate_options",
]

logger = logging.getLogger(__name__)

MCP_PATH = "/mcp"
DEFAULT_PORT = 8765
TOKEN_ENV = "KAMIWAZA_MCP_HTTP_TOKEN"
# 16 characters of a URL-safe random token carry 96 bits, and `generate_token` makes 43.
MIN_TOKEN_LENGTH = 16
# The largest request a tool takes is a generate call with chat messages, and 1 MiB fits
# several hundred thousand characters of them.
DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024
# Seconds uvicorn waits for open requests and SSE streams after a stop signal.
GRACEFUL_SHUTDOWN_SECONDS = 5

_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
# Binding these addresses listens on every interface, so they name no host a client would use.
_WILDCARD_ADDRESSES = frozenset({"0.0.0.0", "::", ""})
# Log the first rejected request and then one in this many, so a client retrying without
# a token cannot fill the log.
_REJECTION_LOG_INTERVAL = 100


@dataclass(frozen=True)
class HTTPOptions:
    """Settings of the streamable HTTP listener."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = field(default=None, repr=False)
    stateless: bool = False
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES


def generate_token() -> str:
    """Return a new random bearer token of 43 URL-safe characters (256 bits)."""
    return secrets.token_urlsafe(32)


def is_loopback(host: str) -> bool:
    """Return whether `host` is a loopback address or the name `localhost`; other host names return False."""
    name = host.strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def validate_options(options: HTTPOptions) -> None:
    """Raise ConfigurationError for options the listener must not start with."""
    if not 0 <= options.port <= 65535:
        raise ConfigurationError(f"invalid port {options.port}: expected 0 to 65535 (0 picks a free port)")
    if options.max_request_bytes <= 0:
        raise ConfigurationError(
            f"invalid --max-request-bytes {options.max_request_bytes}: expected a positive number of bytes"
        )
    if options.token is not None and len(options.token) < MIN_TOKEN_LENGTH:
        raise ConfigurationError(
            f"the bearer token is {len(options.token)} characters long; use at least {MIN_TOKEN_LENGTH}, "
            "or pass --generate-token"
        )
    if options.token is None and not is_loopback(options.host):
        raise ConfigurationError(
            f"binding {options.host!r} exposes the server beyond this machine, so it needs a bearer token: "
            f"set {TOKEN_ENV}, pass --token-file, or pass --generate-token"
        )
    for origin in options.allowed_origins:
        if not origin.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"invalid --allowed-origin {origin!r}: expected a scheme and host, such as https://chat.example.com"
            )


def transport_security(options: HTTPOptions) -> TransportSecuritySettings:
    """Return the Host and Origin allow-lists: loopback names, the bound host and the `--allowed-*` values."""
    names = list(_LOOPBACK_NAMES)
    bound = options.host.strip("[]")
    if bound not in _WILDCARD_ADDRESSES:
        names.append(f"[{bound}]" if ":" in bound else bound)
    names.extend(options.allowed_hosts)

    hosts: list[str] = []
    origins: list[str] = []
    for name in dict.fromkeys(names):
        hosts.append(name)
        origins.extend([f"http://{name}", f"https://{name}"])
        # A name that already carries a port allows only that port. The SDK reads `:*` as any port.
        if not _has_port(name):
            hosts.append(f"{name}:*")
            origins.extend([f"http://{name}:*", f"https://{name}:*"])
    origins.extend(options.allowed_origins)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )


def _has_port(name: str) -> bool:
    if name.startswith("["):
        return "]:" in name
    return ":" in name


class BearerTokenMiddleware:
    """ASGI middleware that returns 401 for any HTTP request without `Authorization: Bearer <token>`.

    Lifespan events pass through untouched. The scheme name is case-insensitive (RFC 7235),
    and the token comparison takes constant time.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = token.encode()
        self._rejected = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._is_authorized(scope):
            await self.app(scope, receive, send)
            return
        self._log_rejection(scope)
        await _send_unauthorized(send)

    def _is_authorized(self, scope: Scope) -> bool:
        values = [value for key, value in scope["headers"] if key == b"authorization"]
        if len(values) != 1:
            return False
        scheme, _, token = values[0].partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token, self._expected)

    def _log_rejection(self, scope: Scope) -> None:
        self._rejected += 1
        if self._rejected == 1 or self._rejected % _REJECTION_LOG_INTERVAL == 0:
            client = scope.get("client")
            logger.warning(
                "Rejected a %s request from %s without a valid bearer token (%d rejected so far)",
                scope.get("method"),
                f"{client[0]}:{client[1]}" if client else "an unknown client",
                self._rejected,
            )


async def _send_unauthorized(send: Send) -> None:
    body = json.dumps(
        {"error": "invalid_token", "error_description": "missing or invalid bearer token"}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b'Bearer realm="kamiwaza-mcp", error="invalid_token"'),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def build_http_app(server: MCPServer[Any], options: HTTPOptions) -> ASGIApp:
    """Build the ASGI app that serves `server` at `/mcp` with the checks in the module docstring.

    The app's lifespan runs the server's lifespan once, so every session shares one
    platform client and one confirmation guard.
    """
    app: ASGIApp = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        stateless_http=options.stateless,
        max_request_body_size=options.max_request_bytes,
        transport_security=transport_security(options),
        host=options.host,
    )
    if options.token is not None:
        app = BearerTokenMiddleware(app, options.token)
    return app


def _bind(host: str, port: int) -> socket.socket:
    """Bind a listening TCP socket, resolving `host` the way a client would (IPv4 or IPv6)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigurationError(f"invalid --host {host!r}: cannot resolve it ({exc})") from exc
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigurationError(
            f"cannot listen on {host}:{port} ({exc}); choose another --port, or 0 for a free one"
        ) from exc
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server, logging the real URL once the lifespan has started and the socket listens."""

    def __init__(self, config: uvicorn.Config, url: str, description: str) -> None:
        super().__init__(config)
        self._url = url
        self._description = description

    async def startup(self, sockets: Sequence[socket.socket] | None = None) -> None:
        await super().startup(list(sockets) if sockets is not None else None)
        if self.started:
            logger.info("Serving MCP over streamable HTTP at %s (%s)", self._url, self._description)


async def serve_http(server: MCPServer[Any], options: HTTPOptions) -> None:
    """Serve `server` over streamable HTTP until SIGINT or SIGTERM.

    Raises ConfigurationError for invalid options or an address that cannot be bound.
    """
    validate_options(options)
    sock = _bind(options.host, options.port)
    port = sock.getsockname()[1]
    shown_host = f"[{options.host.strip('[]')}]" if ":" in options.host else options.host
    url = f"http://{shown_host}:{port}{MCP_PATH}"
    if not is_loopback(options.host):
        # NOTE: the server speaks plain HTTP, so the token crosses the network unencrypted
        # unless a TLS-terminating proxy sits in front of it.
        logger.warning(
            "Listening beyond loopback without TLS; put a TLS-terminating proxy in front of %s", url
        )

    config = uvicorn.Config(
        build_http_app(server, options),
        log_config=None,
        lifespan="on",
        ws="none",
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    description = ", ".join(
        [
            "stateless" if options.stateless else "stateful sessions",
            "bearer token required" if options.token is not None else "no token, loopback only",
        ]
    )
    try:
        await _Server(config, url, description).serve(sockets=[sock])
    finally:
        sock.close()
