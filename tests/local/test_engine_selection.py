"""Engine choice by files and hardware, the vLLM server command, and discovery of GGUF model folders."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from tiny_gguf import CONTEXT_LENGTH, write_tiny_gguf

from kamiwaza_mcp.local.catalog import inspect_model_folder, scan_models_dir
from kamiwaza_mcp.local.engines.selection import EngineUnavailableError, Hardware, choose_engine
from kamiwaza_mcp.local.engines.vllm_server import vllm_server_command
from kamiwaza_mcp.local.vram import estimate_deployment

EVERYTHING = frozenset({"transformers", "llamacpp", "vllm"})
GPU_BOX = Hardware(installed=EVERYTHING, nvidia_gpu=True)
CPU_BOX = Hardware(installed=EVERYTHING, nvidia_gpu=False)
GPU_WITHOUT_VLLM = Hardware(installed=frozenset({"transformers", "llamacpp"}), nvidia_gpu=True)
BARE_BOX = Hardware(installed=frozenset({"transformers"}), nvidia_gpu=False)


@pytest.mark.parametrize(
    ("requested", "has_gguf", "hardware", "expected"),
    [
        (None, True, GPU_BOX, "llamacpp"),
        (None, True, BARE_BOX, "llamacpp"),
        (None, False, GPU_BOX, "vllm"),
        (None, False, CPU_BOX, "transformers"),
        (None, False, GPU_WITHOUT_VLLM, "transformers"),
        ("transformers", True, GPU_BOX, "transformers"),
        ("llamacpp", False, CPU_BOX, "llamacpp"),
        ("vllm", False, GPU_BOX, "vllm"),
    ],
)
def test_choose_engine_table(
    requested: str | None, has_gguf: bool, hardware: Hardware, expected: str
) -> None:
    assert choose_engine(requested, has_gguf=has_gguf, hardware=hardware) == expected


@pytest.mark.parametrize(
    ("requested", "hardware", "expected_detail"),
    [
        ("tensorrt", GPU_BOX, "engine 'tensorrt' is not available"),
        ("llamacpp", BARE_BOX, "pip install 'kamiwaza-mcp[llamacpp]'"),
        ("vllm", GPU_WITHOUT_VLLM, "engine 'vllm' is not installed; install it with pip install vllm"),
        ("vllm", CPU_BOX, "engine 'vllm' needs an NVIDIA GPU"),
    ],
)
def test_choose_engine_rejects(requested: str, hardware: Hardware, expected_detail: str) -> None:
    with pytest.raises(EngineUnavailableError, match=re.escape(expected_detail)):
        choose_engine(requested, has_gguf=False, hardware=hardware)


def test_vllm_server_command(tmp_path: Path) -> None:
    command = vllm_server_command(
        "/usr/bin/python3", tmp_path / "model", host="127.0.0.1", port=8123, served_model_name="tiny"
    )

    assert command == [
        "/usr/bin/python3",
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(tmp_path / "model"),
        "--host",
        "127.0.0.1",
        "--port",
        "8123",
        "--served-model-name",
        "tiny",
    ]


def test_scan_finds_gguf_folder(tmp_path: Path) -> None:
    write_tiny_gguf(_folder(tmp_path / "models" / "tiny-gguf") / "tiny.Q8.gguf")
    write_tiny_gguf(_folder(tmp_path / "models" / "org" / "nested-gguf") / "nested.gguf")

    found = scan_models_dir(tmp_path / "models")

    assert [model.repo_id for model in found] == ["org/nested-gguf", "tiny-gguf"]
    tiny = found[1]
    assert tiny.family == "llama"
    assert tiny.context_length == CONTEXT_LENGTH
    assert [file.name for file in tiny.files] == ["tiny.Q8.gguf"]
    assert not tiny.has_safetensors


def test_gguf_with_config_uses_config(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "both"
    shutil.copytree(tiny_model_dir, folder)
    write_tiny_gguf(folder / "tiny.gguf")

    model = inspect_model_folder(folder)

    assert model.architecture == "LlamaForCausalLM"
    assert "tiny.gguf" in [file.name for file in model.files]


def test_invalid_gguf_folder_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (_folder(tmp_path / "models" / "broken") / "broken.gguf").write_bytes(b"not gguf")

    assert scan_models_dir(tmp_path / "models") == []
    assert "does not start with the GGUF magic bytes" in caplog.text


def test_gguf_folder_estimate(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "tiny-gguf")
    write_tiny_gguf(folder / "tiny.gguf")

    estimate = estimate_deployment(folder, context_length=None, concurrency=1, replicas=1, force_cpu=True)

    assert estimate.estimate_source == "gguf"
    assert estimate.context_length == CONTEXT_LENGTH
    # float32: embedding and output matrices of 286 tokens, three norms, four attention and
    # three feed-forward matrices.
    assert estimate.weights_bytes == 4 * (2 * 286 * 32 + 3 * 32 + 4 * 32 * 32 + 3 * 64 * 32)


def _folder(path: Path) -> Path:
    path.mkdir(parents=True)
    return path
