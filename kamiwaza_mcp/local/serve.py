"""Run the local platform on its own as an HTTP server, behind a bearer token.

Several MCP sessions can then share one platform and its deployments: each points
KAMIWAZA_BASE_URL at `http://<host>:<port>/api` and KAMIWAZA_API_KEY at the token.
Every route, `/api/...` and `/runtime/...` alike, needs `Authorization: Bearer <token>`.
Without a token, one is generated and written to stderr once. The server binds a
non-loopback address only with a token given by the caller, and serves plain HTTP
(put a TLS proxy in front of it to reach it from other machines).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import secrets
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import anyio
import uvicorn
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .platform import LocalPlatform
from .settings import LocalPlatformSettings

__all__ = ["DEFAULT_PORT", "TOKEN_ENV", "BearerTokenMiddleware", "is_loopback", "serve", "serve_async"]

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8765
# Environment variable the `python -m kamiwaza_mcp.local` entry reads the token from.
TOKEN_ENV = "KAMIWAZA_MCP_PLATFORM_TOKEN"
_LOOPBACK_NAMES = frozenset({"localhost"})
_GRACEFUL_SHUTDOWN_SECONDS = 5


class BearerTokenMiddleware:
    """Reject every HTTP request without `Authorization: Bearer <token>` with 401."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        if not token:
            raise ValueError("the bearer token is empty; pass a non-empty token")
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        response = JSONResponse(
            {
                "detail": "missing or invalid bearer token; send Authorization: Bearer <token> (KAMIWAZA_API_KEY)"
            },
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
        await response(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        scheme, _, credentials = Headers(scope=scope).get("authorization", "").partition(" ")
        # compare_digest takes the same time for every wrong token of a given length.
        return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), self._token)


def is_loopback(host: str) -> bool:
    """Return whether `host` is `localhost` or a loopback IP address such as 127.0.0.1 or ::1."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    token: str | None = None,
    settings: LocalPlatformSettings | None = None,
) -> None:
    """Serve the local platform's API on `host`:`port` until SIGINT or SIGTERM, then stop its workers.

    `token` None generates a token and writes it to stderr; that is allowed only on a
    loopback host. Port 0 lets the OS choose, and the bound address is written to
    stderr. Raises ValueError for a non-loopback host without a token.
    """
    if token is None and not is_loopback(host):
        raise ValueError(
            f"cannot serve on {host} without a token, because it is not a loopback address; "
            f"pass a token (or set {TOKEN_ENV}), or serve on 127.0.0.1"
        )
    if token is None:
        token = secrets.token_urlsafe(32)
        sys.stderr.write(f"Generated a bearer token for this run (use it as KAMIWAZA_API_KEY): {token}\n")
        sys.stderr.flush()
    elif not is_loopback(host):
        logger.warning(
            "Serving on %s over plain HTTP; put a TLS proxy in front of it for remote clients", host
        )
    anyio.run(serve_async, host, port, token, settings or LocalPlatformSettings())


async def serve_async(
    host: str,
    port: int,
    token: str,
    settings: LocalPlatformSettings,
    *,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM (or cancellation); `on_ready` receives the bound port."""
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    async with LocalPlatform(settings) as platform:
        config = uvicorn.Config(
            BearerTokenMiddleware(platform.app, token),
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_SECONDS,
        )
        server = _PlatformServer(config)
        async with anyio.create_task_group() as group:
            group.start_soon(_stop_on_signal, server)
            _announce(host, bound_port)
            if on_ready is not None:
                on_ready(bound_port)
            await server.serve(sockets=[sock])
            group.cancel_scope.cancel()
    logger.info("Local platform server on port %d stopped", bound_port)


class _PlatformServer(uvicorn.Server):
    """A uvicorn server that leaves SIGINT and SIGTERM to serve_async.

    uvicorn's own handlers raise the signal again once the server stops, which would
    end the process before the platform stops its workers.
    """

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _stop_on_signal(server: uvicorn.Server) -> None:
    """Ask the server to stop at the first SIGINT or SIGTERM, and to stop at once at the second."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            if server.should_exit:
                server.force_exit = True
            server.should_exit = True
            logger.info("Received %s; stopping the server and the workers", signal.Signals(signum).name)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly, so asyncio sets TCP_NODELAY (see local/worker.py).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc}; choose another --port") from exc
    return sock


def _announce(host: str, port: int) -> None:
    shown = f"[{host}]" if ":" in host else host
    sys.stderr.write(f"Kamiwaza API of the local platform listening on http://{shown}:{port}/api\n")
    sys.stderr.flush()
