"""Tests of the engine worker as a real subprocess serving the tiny model on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from kamiwaza_mcp.client.models import ChatCompletion, Completion

pytestmark = pytest.mark.slow

SERVED_NAME = "tiny-test"
START_TIMEOUT_SECONDS = 120
EXIT_TIMEOUT_SECONDS = 30

# Starts the worker as its grandchild, so a test can kill the worker's parent.
_LAUNCHER = (
    "import pathlib, subprocess, sys\n"
    "child = subprocess.Popen(sys.argv[2:])\n"
    "pathlib.Path(sys.argv[1]).write_text(str(child.pid))\n"
    "sys.exit(child.wait())\n"
)


@dataclass
class RunningWorker:
    base_url: str
    pid: int
    parent: subprocess.Popen[bytes]
    log: Path


def _worker_command(model_dir: Path, port_file: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "kamiwaza_mcp.local.worker",
        "--model-path",
        str(model_dir),
        "--port-file",
        str(port_file),
        "--served-model-name",
        SERVED_NAME,
        "--device",
        "cpu",
    ]


def _is_running(pid: int) -> bool:
    """Report whether `pid` runs. A zombie left unreaped by a container's init counts as exited."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


async def _wait_for_file(path: Path, parent: subprocess.Popen[bytes], log: Path) -> str:
    target = anyio.Path(path)
    with anyio.fail_after(START_TIMEOUT_SECONDS):
        while not await target.exists():
            if parent.poll() is not None:
                output = await anyio.Path(log).read_text()
                raise AssertionError(f"worker exited with {parent.returncode}:\n{output}")
            await anyio.sleep(0.1)
    return (await target.read_text()).strip()


async def _wait_for_exit(pid: int) -> None:
    with anyio.fail_after(EXIT_TIMEOUT_SECONDS):
        while True:
            if not _is_running(pid):
                return
            await anyio.sleep(0.1)


def _stop(worker: RunningWorker) -> None:
    if _is_running(worker.pid):
        os.kill(worker.pid, signal.SIGTERM)
        try:
            anyio.run(_wait_for_exit, worker.pid)
        except TimeoutError:
            os.kill(worker.pid, signal.SIGKILL)
    if worker.parent.poll() is None:
        worker.parent.kill()
    worker.parent.wait(timeout=EXIT_TIMEOUT_SECONDS)


@pytest.fixture(scope="module")
def worker(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningWorker]:
    if not Path("/proc/self/stat").exists():
        pytest.skip("the worker tests read process states from /proc (Linux)")
    folder = tmp_path_factory.mktemp("worker")
    port_file, pid_file, log = folder / "port", folder / "worker.pid", folder / "worker.log"
    with log.open("wb") as log_stream:
        parent = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, str(pid_file), *_worker_command(tiny_model_dir, port_file)],
            stdout=log_stream,
            stderr=subprocess.STDOUT,
        )
    pid = int(anyio.run(_wait_for_file, pid_file, parent, log))
    running = RunningWorker(base_url="", pid=pid, parent=parent, log=log)
    try:
        port = int(anyio.run(_wait_for_file, port_file, parent, log))
        running.base_url = f"http://127.0.0.1:{port}"
        yield running
    finally:
        _stop(running)


async def _post(worker: RunningWorker, path: str, body: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=worker.base_url, timeout=60) as client:
        with anyio.fail_after(60):
            return await client.post(path, json=body)


async def test_worker_health(worker: RunningWorker) -> None:
    async with httpx.AsyncClient(base_url=worker.base_url, timeout=30) as client:
        with anyio.fail_after(30):
            health = await client.get("/health")
            models = await client.get("/v1/models")

    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    assert models.status_code == 200
    assert [entry["id"] for entry in models.json()["data"]] == [SERVED_NAME]


async def test_worker_chat_completion(worker: RunningWorker) -> None:
    body = {"model": SERVED_NAME, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
    response = await _post(worker, "/v1/chat/completions", body)

    assert response.status_code == 200, response.text
    data = response.json()
    completion = ChatCompletion.model_validate(data)
    assert data["object"] == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == SERVED_NAME
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert 0 < completion.usage.completion_tokens <= 8
    assert completion.usage.prompt_tokens > 0
    assert (
        completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


async def test_worker_completion_greedy_stop(worker: RunningWorker) -> None:
    body = {"prompt": "The river", "max_tokens": 20, "temperature": 0}
    full = await _post(worker, "/v1/completions", body)
    text = Completion.model_validate(full.json()).choices[0].text
    stop = text[4:6]

    stopped = await _post(worker, "/v1/completions", {**body, "stop": [stop]})
    choice = Completion.model_validate(stopped.json()).choices[0]

    assert full.json()["object"] == "text_completion"
    assert choice.text == text[: text.find(stop)]
    assert choice.finish_reason == "stop"


async def test_worker_seed_reproducible(worker: RunningWorker) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10, "temperature": 1, "seed": 99}

    first = await _post(worker, "/v1/chat/completions", body)
    second = await _post(worker, "/v1/chat/completions", body)

    assert first.json()["choices"] == second.json()["choices"]


async def test_worker_concurrent_requests(worker: RunningWorker) -> None:
    statuses: list[int] = []

    async def send(index: int) -> None:
        body = {"messages": [{"role": "user", "content": f"request {index}"}], "max_tokens": 16}
        statuses.append((await _post(worker, "/v1/chat/completions", body)).status_code)

    async with anyio.create_task_group() as tasks:
        for index in range(4):
            tasks.start_soon(send, index)

    assert statuses == [200] * 4


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, 422, "messages.0.role"),
        ("/v1/chat/completions", {"messages": []}, 422, "messages"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
            422,
            "max_tokens",
        ),
        ("/v1/completions", {"prompt": "x", "temperature": 3}, 422, "temperature"),
        ("/v1/completions", {"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, 422, "stop"),
        ("/v1/completions", {"prompt": ["a", "b"]}, 422, "prompt"),
        ("/v1/completions", {"max_tokens": 3}, 422, "prompt"),
        ("/v1/completions", {"prompt": "x", "n": 2}, 422, "n"),
        ("/v1/completions", {"prompt": "x", "stream": True}, 400, "stream"),
        ("/v1/completions", {"prompt": "word " * 600}, 400, "context length"),
    ],
    ids=[
        "bad-role",
        "no-messages",
        "zero-max-tokens",
        "temperature",
        "five-stops",
        "two-prompts",
        "no-prompt",
        "n",
        "stream",
        "prompt-too-long",
    ],
)
async def test_worker_rejects_invalid_body(
    worker: RunningWorker, path: str, body: dict[str, Any], status: int, field: str
) -> None:
    response = await _post(worker, path, body)

    assert response.status_code == status, response.text
    assert field in response.json()["detail"]


async def test_worker_rejects_malformed_json(worker: RunningWorker) -> None:
    async with httpx.AsyncClient(base_url=worker.base_url, timeout=30) as client:
        with anyio.fail_after(30):
            response = await client.post("/v1/chat/completions", content=b'{"messages": [')

    assert response.status_code == 400
    assert "not valid JSON" in response.json()["detail"]


async def test_worker_missing_model_exits(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    with anyio.fail_after(60):
        result = await anyio.run_process(_worker_command(tmp_path / "absent", port_file), check=False)
    stderr = result.stderr.decode()

    assert result.returncode == 2
    assert any(line.startswith("MODEL_LOADING_FAILURE: ") for line in stderr.splitlines()), stderr
    assert str(tmp_path / "absent") in stderr
    assert not port_file.exists()


# Keep last: it ends the shared worker.
async def test_worker_exits_when_parent_dies(worker: RunningWorker) -> None:
    worker.parent.kill()
    worker.parent.wait(timeout=EXIT_TIMEOUT_SECONDS)

    await _wait_for_exit(worker.pid)

    assert "Parent process" in await anyio.Path(worker.log).read_text()
