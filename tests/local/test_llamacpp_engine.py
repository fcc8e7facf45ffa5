"""The llama.cpp engine in-process and behind the worker, on a tiny GGUF model written in the test."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from tiny_gguf import CONTEXT_LENGTH, GREEDY_TOKEN, write_tiny_gguf

from kamiwaza_mcp.client import KamiwazaClient
from kamiwaza_mcp.client.models import CreateModelDeployment
from kamiwaza_mcp.local import LocalPlatform, LocalPlatformSettings
from kamiwaza_mcp.local.catalog import model_id_for_path
from kamiwaza_mcp.local.engines import (
    ChatMessage,
    GenerationRequest,
    ModelLoadError,
    PromptTooLongError,
    create_engine,
)
from kamiwaza_mcp.local.engines.llamacpp_engine import LlamaCppEngine

pytest.importorskip(
    "llama_cpp",
    reason="llama-cpp-python is not installed; pip install 'kamiwaza-mcp[llamacpp]' builds llama.cpp",
)

START_TIMEOUT_SECONDS = 60
API = "http://kamiwaza.local/api"


@pytest.fixture(scope="module")
def gguf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-gguf")
    write_tiny_gguf(folder / "tiny.gguf")
    return folder


@pytest.fixture(scope="module")
def engine(gguf_dir: Path) -> LlamaCppEngine:
    loaded = LlamaCppEngine(gguf_dir, device="cpu")
    loaded.load()
    return loaded


def test_create_engine_llamacpp(gguf_dir: Path) -> None:
    assert isinstance(create_engine("llamacpp", gguf_dir), LlamaCppEngine)


def test_llamacpp_context_from_gguf(engine: LlamaCppEngine) -> None:
    assert engine.context_length == CONTEXT_LENGTH


def test_llamacpp_greedy_completion(engine: LlamaCppEngine) -> None:
    result = engine.generate(GenerationRequest(prompt="hello", max_tokens=5, temperature=0))

    assert result.text == GREEDY_TOKEN * 5
    assert result.finish_reason == "length"
    assert result.completion_tokens == 5
    # The prompt is BOS plus the pieces of "▁hello".
    assert result.prompt_tokens == len(engine._require_llama().tokenize(b"hello", add_bos=True))


def test_llamacpp_chat_completion(engine: LlamaCppEngine) -> None:
    messages = (ChatMessage(role="user", content="hi"),)

    result = engine.generate(GenerationRequest(messages=messages, max_tokens=4, temperature=0))

    assert result.text == GREEDY_TOKEN * 4
    assert result.finish_reason == "length"
    assert result.completion_tokens == 4
    assert result.prompt_tokens > 2


def test_llamacpp_stop_string(engine: LlamaCppEngine) -> None:
    request = GenerationRequest(prompt="hello", max_tokens=10, temperature=0, stop=("aaa",))

    result = engine.generate(request)

    assert result.text == ""
    assert result.finish_reason == "stop"
    assert result.completion_tokens < 10


def test_llamacpp_seed_reproducible(engine: LlamaCppEngine) -> None:
    # At temperature 2 the tokens "a" to "d" share almost all the probability.
    def sample(seed: int) -> str:
        return engine.generate(GenerationRequest(prompt="x", max_tokens=24, temperature=2, seed=seed)).text

    first = sample(7)

    assert sample(7) == first
    assert set(first) <= set("abcd")
    assert len(set(first)) > 1


def test_llamacpp_prompt_too_long(engine: LlamaCppEngine) -> None:
    with pytest.raises(PromptTooLongError, match="exceed context window"):
        engine.generate(GenerationRequest(prompt="abc " * CONTEXT_LENGTH, max_tokens=1))


def test_llamacpp_missing_gguf(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"has no \.gguf file"):
        LlamaCppEngine(tmp_path).load()


def test_llamacpp_invalid_gguf(tmp_path: Path) -> None:
    (tmp_path / "broken.gguf").write_bytes(b"GGUF" + b"\0" * 64)

    with pytest.raises(ModelLoadError, match="is not a readable GGUF file"):
        LlamaCppEngine(tmp_path, device="cpu").load()


def test_llamacpp_truncated_gguf(gguf_dir: Path, tmp_path: Path) -> None:
    # The header stays readable but the tensor data is cut short, so llama.cpp rejects the file.
    data = (gguf_dir / "tiny.gguf").read_bytes()
    (tmp_path / "truncated.gguf").write_bytes(data[: len(data) // 2])

    with pytest.raises(ModelLoadError, match=r"llama\.cpp failed to load"):
        LlamaCppEngine(tmp_path, device="cpu").load()


@pytest.fixture(scope="module")
def worker_url(gguf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("llamacpp-worker")
    port_file, log = folder / "port", folder / "worker.log"
    command = [
        sys.executable,
        "-m",
        "kamiwaza_mcp.local.worker",
        "--engine",
        "llamacpp",
        "--model-path",
        str(gguf_dir),
        "--port-file",
        str(port_file),
        "--served-model-name",
        "tiny-gguf",
        "--device",
        "cpu",
    ]
    with log.open("wb") as log_stream:
        process = subprocess.Popen(command, stdout=log_stream, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{_wait_for_port(port_file, process, log)}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_for_port(port_file: Path, process: subprocess.Popen[bytes], log: Path) -> int:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not port_file.exists() or not port_file.read_text().strip():
        if process.poll() is not None:
            raise AssertionError(f"worker exited with {process.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"worker wrote no port within {START_TIMEOUT_SECONDS} s:\n{log.read_text()}")
        time.sleep(0.1)
    return int(port_file.read_text())


@pytest.mark.slow
async def test_worker_llamacpp_chat(worker_url: str) -> None:
    body = {
        "model": "tiny-gguf",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 3,
        "temperature": 0,
    }
    async with httpx.AsyncClient(base_url=worker_url, timeout=30) as client:
        with anyio.fail_after(30):
            response = await client.post("/v1/chat/completions", json=body)

    assert response.status_code == 200
    choice = response.json()["choices"][0]
    assert choice["message"]["content"] == GREEDY_TOKEN * 3
    assert choice["finish_reason"] == "length"
    assert response.json()["usage"]["completion_tokens"] == 3


@pytest.mark.slow
async def test_worker_llamacpp_completion(worker_url: str) -> None:
    body = {"model": "tiny-gguf", "prompt": "hello", "max_tokens": 6, "temperature": 0, "stop": ["aaaa"]}
    async with httpx.AsyncClient(base_url=worker_url, timeout=30) as client:
        with anyio.fail_after(30):
            response = await client.post("/v1/completions", json=body)

    assert response.status_code == 200
    choice = response.json()["choices"][0]
    assert choice["text"] == ""
    assert choice["finish_reason"] == "stop"


@pytest.mark.slow
async def test_platform_serves_gguf_folder(gguf_dir: Path, tmp_path: Path) -> None:
    settings = LocalPlatformSettings(
        state_dir=tmp_path / "state", models_dir=tmp_path / "models", model_paths=[gguf_dir]
    )
    model_id = model_id_for_path(gguf_dir)
    async with (
        LocalPlatform(settings) as platform,
        KamiwazaClient(API, transport=httpx.ASGITransport(app=platform.app)) as client,
    ):
        config = await client.select_config(model_id)
        deployment_id = await client.deploy_model(CreateModelDeployment(m_id=model_id, m_config_id=config.id))
        with anyio.fail_after(START_TIMEOUT_SECONDS):
            while True:
                if await client.get_deployment_status(deployment_id) not in ("REQUESTED", "DEPLOYING"):
                    break
                await anyio.sleep(0.2)
        deployment = await client.get_deployment(deployment_id)
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "temperature": 0}
        completion = await client.chat_completion(deployment, body)
        await client.stop_deployment(deployment_id)

    assert deployment.status == "DEPLOYED", deployment.last_error_message
    assert deployment.engine_name == "llamacpp"
    assert completion.choices[0].message.content == GREEDY_TOKEN * 2
