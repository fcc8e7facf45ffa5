"""The standalone server's guards: the bearer token, the loopback rule and the generated token."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import pytest
from local_platform_process import stop_platform
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from kamiwaza_mcp.client import AuthenticationError, KamiwazaClient
from kamiwaza_mcp.local.serve import TOKEN_ENV, BearerTokenMiddleware, is_loopback, serve
from kamiwaza_mcp.local.settings import LocalPlatformSettings


async def _ok(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (None, 401),
        ("Bearer secret-token", 200),
        ("bearer secret-token", 200),
        ("Bearer secret-tokem", 401),
        ("Bearer secret-token-and-more", 401),
        ("Basic secret-token", 401),
        ("secret-token", 401),
    ],
    ids=["missing", "right", "scheme-case", "wrong", "longer", "basic", "no-scheme"],
)
async def test_middleware_checks_token(header: str | None, status: int) -> None:
    app = BearerTokenMiddleware(Starlette(routes=[Route("/api/ping", _ok)]), "secret-token")
    headers = {"Authorization": header} if header else {}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://platform") as http:
        response = await http.get("/api/ping", headers=headers)

    assert response.status_code == status
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
        assert "bearer token" in response.json()["detail"]


def test_middleware_rejects_empty_token() -> None:
    with pytest.raises(ValueError, match="empty"):
        BearerTokenMiddleware(Starlette(), "")


@pytest.mark.parametrize(
    ("host", "expected"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("localhost", True), ("0.0.0.0", False),
     ("192.168.1.5", False), ("::", False), ("example.com", False)],
)  # fmt: skip
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::"])
def test_serve_refuses_open_host_without_token(tmp_path: Path, host: str) -> None:
    with pytest.raises(ValueError, match="without a token"):
        serve(host, 0, None, LocalPlatformSettings(state_dir=tmp_path / "state"))

    assert not (tmp_path / "state").exists()


async def test_entry_refuses_open_host_without_token(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != TOKEN_ENV}
    command = [sys.executable, "-m", "kamiwaza_mcp.local", "--host", "0.0.0.0", "--port", "0"]

    with anyio.fail_after(60):
        result = await anyio.run_process(
            [*command, "--state-dir", str(tmp_path / "state")], env=env, check=False
        )

    assert result.returncode == 2
    assert b"without a token" in result.stderr


@pytest.mark.slow
async def test_entry_generates_token(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != TOKEN_ENV}
    log = tmp_path / "platform.log"
    command = [sys.executable, "-m", "kamiwaza_mcp.local", "--port", "0", "--no-hf-cache"]
    command += ["--state-dir", str(tmp_path / "state")]

    with log.open("wb") as stderr:
        process = await anyio.open_process(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
    try:
        with anyio.fail_after(60):
            while not (
                found := re.search(
                    r"token for this run.*: (\S+)\n.*127\.0\.0\.1:(\d+)/api", log.read_text(), re.S
                )
            ):
                assert process.returncode is None, log.read_text()
                await anyio.sleep(0.1)
        token, port = found.group(1), int(found.group(2))
        base_url = f"http://127.0.0.1:{port}/api"

        async with KamiwazaClient(base_url, api_key=token) as client:
            assert await client.list_models() == []
        async with KamiwazaClient(base_url, max_retries=0) as anonymous:
            with pytest.raises(AuthenticationError):
                await anonymous.list_models()
    finally:
        with anyio.CancelScope(shield=True):
            exit_code = await stop_platform(process)
            await process.aclose()
    assert exit_code == 0
    assert log.read_text().count(token) == 1
