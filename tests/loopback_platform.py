"""A scripted Kamiwaza 1.2.0 API on 127.0.0.1, served over raw asyncio streams, with faults to switch on.

The fault tests need responses that no ASGI app can send: a response that never
comes, a body that trickles in, a TCP reset after the request was read. So
this server parses each HTTP/1.1 request itself, responds and closes the
connection (`Connection: close`). Every request is recorded in `received`.

Without a fault, the routes behave like a small Kamiwaza 1.2.0: one model
with two configurations (the default one second), deployments created by
`POST /serving/deploy_model` that are DEPLOYED at once, and a `/ping` without
the local platform's load and unload extensions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import ssl
import struct
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

MODEL_ID = "0b6f6a0e-7f43-4d0c-9a43-2c1d1e3f4a5b"
FILE_ID = "9a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d"
SMALL_CONFIG_ID = "6d2f9a70-1c3b-4e5d-8f9a-0b1c2d3e4f50"
DEFAULT_CONFIG_ID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
TIMESTAMP = "2026-12-04T10:00:00Z"
DEPLOY_PATH = "/api/serving/deploy_model"
DEPLOYMENTS_PATH = "/api/serving/deployments"

_DEPLOYMENT_PATH = re.compile(r"^/api/serving/deployment/([0-9a-f-]{36})(/status)?$")
_MODEL_PATH = re.compile(r"^/api/models/([0-9a-f-]{36})(/configs)?$")


@dataclass(frozen=True)
class Received:
    """One request the platform read."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


class Fault(Protocol):
    """A misbehaviour that replaces the platform's response on one route."""

    async def act(
        self, platform: LoopbackPlatform, request: Received, writer: asyncio.StreamWriter
    ) -> None: ...


@dataclass(frozen=True)
class Reply:
    """Respond with this status and body instead of the route's own response."""

    status: int
    body: bytes
    content_type: str = "application/json"

    async def act(self, platform: LoopbackPlatform, request: Received, writer: asyncio.StreamWriter) -> None:
        await write_response(writer, self.status, self.body, self.content_type)


@dataclass(frozen=True)
class Hang:
    """Read the request and never respond: no status line, no headers."""

    async def act(self, platform: LoopbackPlatform, request: Received, writer: asyncio.StreamWriter) -> None:
        await platform.closing.wait()


@dataclass(frozen=True)
class Trickle:
    """Send the headers of a 200 at once, then the body one byte every `interval` seconds."""

    body: bytes
    interval: float

    async def act(self, platform: LoopbackPlatform, request: Received, writer: asyncio.StreamWriter) -> None:
        writer.write(_head(200, len(self.body), "application/json"))
        for index in range(len(self.body)):
            writer.write(self.body[index : index + 1])
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(platform.closing.wait(), self.interval)
            if platform.closing.is_set():
                return


@dataclass(frozen=True)
class Reset:
    """Read the request, optionally act on it as the route would, then reset the TCP connection."""

    act_first: bool

    async def act(self, platform: LoopbackPlatform, request: Received, writer: asyncio.StreamWriter) -> None:
        if self.act_first:
            platform.respond(request)
        reset_connection(writer)


@dataclass
class LoopbackPlatform:
    """The scripted platform; use it as an async context manager, which yields it with `url` set.

    `api_key` or `login` (username, password) turn on the bearer check. The
    login route issues `access_token`. `faults` maps (method, path) to a Fault.
    """

    api_key: str | None = None
    login: tuple[str, str] | None = None
    access_token: str = "kz-loopback-access-token-5c1e9b"
    tls: ssl.SSLContext | None = None
    faults: dict[tuple[str, str], Fault] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    url: str = ""
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None

    async def __aenter__(self) -> LoopbackPlatform:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{port}/api"
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.closing.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # What the tests read

    def requests_to(self, method: str, path: str) -> list[Received]:
        return [r for r in self.received if r.method == method and r.path == path]

    @property
    def deploy_posts(self) -> list[Received]:
        return self.requests_to("POST", DEPLOY_PATH)

    # Serving

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await read_request(reader)
            if request is None:
                return
            self.received.append(request)
            fault = self.faults.get((request.method, request.path))
            if fault is not None:
                await fault.act(self, request, writer)
                return
            status, body = self.respond(request)
            await write_response(writer, status, json.dumps(body).encode())
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            return
        finally:
            writer.close()

    def respond(self, request: Received) -> tuple[int, Any]:
        """Return the status and JSON body the platform gives `request` when no fault is set."""
        if request.method == "POST" and request.path == "/api/auth/token":
            return self._log_in(request)
        if not self._authorized(request):
            return 401, {"detail": "Not authenticated"}
        return self._route(request)

    def _log_in(self, request: Received) -> tuple[int, Any]:
        form = {key: values[0] for key, values in parse_qs(request.body.decode()).items()}
        if self.login is None or (form.get("username"), form.get("password")) != self.login:
            return 401, {"detail": "Invalid username or password"}
        return 200, {"access_token": self.access_token, "token_type": "bearer", "expires_in": 3600}

    def _authorized(self, request: Received) -> bool:
        accepted = set()
        if self.api_key is not None:
            accepted.add(self.api_key)
        if self.login is not None:
            accepted.add(self.access_token)
        if not accepted:
            return True
        return request.headers.get("authorization") in {f"Bearer {token}" for token in accepted}

    def _route(self, request: Received) -> tuple[int, Any]:
        method, path = request.method, request.path
        if (method, path) == ("GET", "/api/ping"):
            return 200, {"status": "ok"}
        if (method, path) == ("GET", "/api/models/"):
            return 200, [model_body()]
        if (method, path) == ("POST", "/api/serving/estimate_model_vram"):
            return 200, {"computed_vram_estimate": 1_500_000_000, "highest_node_vram": 24_000_000_000}
        if (method, path) == ("POST", DEPLOY_PATH):
            return 200, self.create_deployment(request.json())
        if (method, path) == ("GET", DEPLOYMENTS_PATH):
            model_ids = request.query.get("model_id")
            return 200, [d for d in self.deployments.values() if not model_ids or d["m_id"] in model_ids]
        model = _MODEL_PATH.match(path)
        if model is not None and method == "GET":
            return self._model_route(model.group(1), configs=model.group(2) is not None)
        deployment = _DEPLOYMENT_PATH.match(path)
        if deployment is not None:
            return self._deployment_route(
                method, deployment.group(1), status_only=deployment.group(2) is not None
            )
        return 404, {"detail": "Not Found"}

    def _model_route(self, model_id: str, *, configs: bool) -> tuple[int, Any]:
        if model_id != MODEL_ID:
            return 404, {"detail": f"Model {model_id} not found"}
        return 200, config_bodies() if configs else model_body()

    def _deployment_route(self, method: str, deployment_id: str, *, status_only: bool) -> tuple[int, Any]:
        deployment = self.deployments.get(deployment_id)
        if deployment is None:
            return 404, {"detail": f"Deployment {deployment_id} not found"}
        if method == "DELETE" and not status_only:
            deployment["status"] = "STOPPED"
            return 200, True
        if method != "GET":
            return 405, {"detail": "Method Not Allowed"}
        return 200, deployment["status"] if status_only else deployment

    def create_deployment(self, body: dict[str, Any]) -> str:
        """Record a deployment of the CreateModelDeployment `body`, DEPLOYED at once, and return its id."""
        deployment_id = str(uuid.uuid4())
        self.deployments[deployment_id] = {
            **body,
            "id": deployment_id,
            "requested_at": TIMESTAMP,
            "created_at": TIMESTAMP,
            "deployed_at": TIMESTAMP,
            "status": "DEPLOYED",
            "lb_port": 61100 + len(self.deployments),
            "m_name": "tiny-llama",
            "instances": [],
        }
        return deployment_id


@dataclass
class StalledTLSServer:
    """Accepts TCP connections on 127.0.0.1 and never responds, so a TLS handshake never completes.

    httpx counts the TLS handshake under its connect timeout, so `https://` URLs
    of this server reach the connect timeout on any OS. (A listener with a full
    backlog also stalls a connect, but whether the kernel drops the SYN or
    refuses the connection differs by OS.)
    """

    url: str = ""
    _release: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None

    async def __aenter__(self) -> StalledTLSServer:
        self._server = await asyncio.start_server(self._stall, "127.0.0.1", 0)
        self.url = f"https://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/api"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._release.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _stall(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._release.wait()
        writer.close()


@contextlib.asynccontextmanager
async def closed_port_url() -> AsyncIterator[str]:
    """Yield an API URL on a 127.0.0.1 port that was just free, so connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    yield f"http://127.0.0.1:{port}/api"


# HTTP/1.1 on raw streams


async def read_request(reader: asyncio.StreamReader) -> Received | None:
    """Read one request with a Content-Length body (httpx sends no chunked bodies); None at end of stream."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    parts = urlsplit(target)
    return Received(method, parts.path, parse_qs(parts.query), headers, body)


async def write_response(
    writer: asyncio.StreamWriter, status: int, body: bytes, content_type: str = "application/json"
) -> None:
    writer.write(_head(status, len(body), content_type) + body)
    await writer.drain()


def _head(status: int, length: int, content_type: str) -> bytes:
    reason = HTTPStatus(status).phrase
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")


def reset_connection(writer: asyncio.StreamWriter) -> None:
    """Close the connection with a TCP RST: SO_LINGER with a zero timeout, then an abort."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# Bodies


def model_body() -> dict[str, Any]:
    return {
        "id": MODEL_ID,
        "name": "tiny-llama",
        "repo_modelId": "acme/tiny-llama",
        "m_files": [{"name": "model.safetensors", "size": 1024, "id": FILE_ID}],
        "hosted": "local",
    }


def config_bodies() -> list[dict[str, Any]]:
    """Two configurations; the default one comes second, so "default, else first" is observable."""
    return [
        {"id": SMALL_CONFIG_ID, "m_id": MODEL_ID, "default": False, "name": "small", "created_at": TIMESTAMP},
        {
            "id": DEFAULT_CONFIG_ID,
            "m_id": MODEL_ID,
            "default": True,
            "name": "default",
            "m_file_id": FILE_ID,
            "created_at": TIMESTAMP,
        },
    ]
