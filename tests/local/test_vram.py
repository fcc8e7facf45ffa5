"""Tests of the memory estimate: safetensors headers, parameter counts, KV cache and fit."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest

from kamiwaza_mcp.local.catalog import read_model_config
from kamiwaza_mcp.local.vram import (
    available_memory,
    count_parameters,
    estimate_deployment,
    kv_cache_bytes,
    read_safetensors_header,
    safetensors_files,
    safetensors_weight_bytes,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

CONTRACT_KEYS = {
    "computed_vram_estimate",
    "estimate_source",
    "highest_node_vram",
    "weights_bytes",
    "kv_cache_bytes",
    "overhead_bytes",
    "per_replica_bytes",
    "replicas",
    "total_bytes",
    "available_bytes",
    "memory_kind",
    "fits",
    "context_length",
    "concurrency",
    "dtype",
}


def _data_bytes(path: Path) -> int:
    """Size of the tensor data buffer: the file minus the length prefix and the header."""
    with path.open("rb") as file:
        header_length = int.from_bytes(file.read(8), "little")
    return path.stat().st_size - 8 - header_length


def _parameters_of(config: Any) -> int:
    model = transformers.AutoModelForCausalLM.from_config(config)
    return int(sum(p.numel() for p in model.parameters()))


def _config_json(config: Any, tmp_path: Path) -> dict[str, Any]:
    """Round-trip a config through config.json, as the estimate reads it from disk."""
    config.save_pretrained(tmp_path)
    return read_model_config(tmp_path)


# Safetensors headers


def test_header_bytes_equal_tiny_model_data(tiny_model_dir: Path) -> None:
    weights = tiny_model_dir / "model.safetensors"

    assert safetensors_files(tiny_model_dir) == [weights]
    assert safetensors_weight_bytes(tiny_model_dir) == _data_bytes(weights)


def test_header_matches_loaded_tensors(tiny_model_dir: Path) -> None:
    weights = tiny_model_dir / "model.safetensors"
    loaded = safetensors_torch.load_file(weights)
    tensors = {t.name: t for t in read_safetensors_header(weights)}

    assert set(tensors) == set(loaded)
    for name, tensor in loaded.items():
        assert tensors[name].shape == tuple(tensor.shape), name
        assert tensors[name].stored_bytes == tensor.numel() * tensor.element_size(), name


def test_header_mixed_dtypes(tmp_path: Path) -> None:
    path = tmp_path / "mixed.safetensors"
    safetensors_torch.save_file(
        {
            "bf16": torch.zeros(3, 5, dtype=torch.bfloat16),
            "int8": torch.zeros(7, dtype=torch.int8),
            "f32": torch.zeros(2, 2, 2, dtype=torch.float32),
        },
        path,
        metadata={"format": "pt"},
    )
    tensors = {t.name: t for t in read_safetensors_header(path)}

    assert tensors["bf16"].dtype == "BF16"
    assert tensors["bf16"].stored_bytes == 30
    assert tensors["int8"].stored_bytes == 7
    assert not tensors["int8"].is_float
    assert tensors["f32"].shape == (2, 2, 2)
    assert sum(t.stored_bytes for t in tensors.values()) == _data_bytes(path)


def test_sharded_index_counts_every_shard(tmp_path: Path) -> None:
    safetensors_torch.save_file({"a": torch.zeros(10)}, tmp_path / "model-00001-of-00002.safetensors")
    safetensors_torch.save_file({"b": torch.zeros(4, 4)}, tmp_path / "model-00002-of-00002.safetensors")
    # A stray file next to the shards must not be counted when an index exists.
    safetensors_torch.save_file({"c": torch.zeros(1000)}, tmp_path / "consolidated.safetensors")
    index = {
        "metadata": {"total_size": 104},
        "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"},
    }
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))

    assert len(safetensors_files(tmp_path)) == 2
    assert safetensors_weight_bytes(tmp_path) == (10 + 16) * 4


def test_sharded_index_missing_shard(tmp_path: Path) -> None:
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))

    with pytest.raises(FileNotFoundError, match="model-00001-of-00002"):
        safetensors_files(tmp_path)


@pytest.mark.parametrize(
    "content",
    [
        b"\x01\x02",
        struct.pack("<Q", 2**40) + b"{}",
        struct.pack("<Q", 4) + b"nope",
        struct.pack("<Q", 2) + b"[]",
    ],
    ids=["short", "huge-length", "not-json", "not-object"],
)
def test_header_invalid(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.safetensors"
    path.write_bytes(content)

    with pytest.raises(ValueError, match=r"broken\.safetensors"):
        read_safetensors_header(path)


# Parameter counts from config.json


def test_parameter_count_tiny_model(tiny_model_dir: Path) -> None:
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir, local_files_only=True)
    expected = sum(p.numel() for p in model.parameters())

    assert count_parameters(read_model_config(tiny_model_dir)).total == expected


LLAMA_BASE = {
    "vocab_size": 300,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 3,
    "num_attention_heads": 8,
}


@pytest.mark.parametrize(
    "overrides",
    [
        {"num_key_value_heads": 2},
        {"num_key_value_heads": 8, "tie_word_embeddings": True},
        {"num_key_value_heads": 4, "tie_word_embeddings": True},
        {},
        {"num_key_value_heads": 2, "head_dim": 24},
        {"num_key_value_heads": 2, "attention_bias": True, "mlp_bias": True},
    ],
    ids=["gqa", "mha-tied", "gqa-tied", "kv-heads-default", "head-dim-override", "biases"],
)
def test_parameter_count_llama_exact(tmp_path: Path, overrides: dict[str, Any]) -> None:
    config = transformers.LlamaConfig(**LLAMA_BASE, **overrides)

    assert count_parameters(_config_json(config, tmp_path)).total == _parameters_of(config)


@pytest.mark.parametrize(
    ("config_class", "overrides"),
    [
        ("Qwen2Config", {"num_key_value_heads": 2}),
        ("Qwen3Config", {"num_key_value_heads": 2, "head_dim": 16}),
        ("Qwen3Config", {"num_key_value_heads": 4, "attention_bias": True, "tie_word_embeddings": True}),
        ("MistralConfig", {"num_key_value_heads": 2}),
    ],
    ids=["qwen2", "qwen3", "qwen3-bias-tied", "mistral"],
)
def test_parameter_count_other_families(tmp_path: Path, config_class: str, overrides: dict[str, Any]) -> None:
    config = getattr(transformers, config_class)(**LLAMA_BASE, **overrides)

    assert count_parameters(_config_json(config, tmp_path)).total == _parameters_of(config)


def test_parameter_count_rejects_mixture_of_experts() -> None:
    with pytest.raises(ValueError, match="mixture-of-experts"):
        count_parameters({**LLAMA_BASE, "num_local_experts": 8})


def test_parameter_count_names_missing_key() -> None:
    config = dict(LLAMA_BASE)
    del config["intermediate_size"]

    with pytest.raises(ValueError, match="intermediate_size"):
        count_parameters(config)


# KV cache and the estimate


def test_kv_cache_llama3_8b_shape() -> None:
    # 32 layers, 8 KV heads of 128 dims, 8192 positions in float16: exactly 1 GiB.
    size = kv_cache_bytes(
        layers=32, kv_heads=8, head_dim=128, context_length=8192, dtype_bytes=2, sequences=1
    )

    assert size == 1024**3


def test_kv_cache_scales_with_sequences() -> None:
    single = kv_cache_bytes(layers=2, kv_heads=2, head_dim=16, context_length=512, dtype_bytes=4, sequences=1)
    triple = kv_cache_bytes(layers=2, kv_heads=2, head_dim=16, context_length=512, dtype_bytes=4, sequences=3)

    assert single == 2 * 2 * 2 * 16 * 512 * 4
    assert triple == 3 * single


def test_estimate_tiny_model_on_cpu(tiny_model_dir: Path) -> None:
    estimate = estimate_deployment(
        tiny_model_dir, context_length=None, concurrency=2, replicas=3, force_cpu=True
    )

    assert estimate.memory_kind == "ram"
    assert estimate.dtype == "float32"
    assert estimate.estimate_source == "safetensors"
    assert estimate.context_length == 512
    # The tiny model is stored in float32, so the float32 count equals the stored bytes.
    assert estimate.weights_bytes == safetensors_weight_bytes(tiny_model_dir)
    assert estimate.kv_cache_bytes == 2 * 2 * 2 * 16 * 512 * 4 * 2
    assert (
        estimate.per_replica_bytes
        == estimate.weights_bytes + estimate.kv_cache_bytes + estimate.overhead_bytes
    )
    assert estimate.total_bytes == 3 * estimate.per_replica_bytes
    assert estimate.fits == (estimate.total_bytes <= estimate.available_bytes)


def test_estimate_response_shape(tiny_model_dir: Path) -> None:
    estimate = estimate_deployment(
        tiny_model_dir, context_length=256, concurrency=1, replicas=1, force_cpu=True
    )
    body = estimate.as_response()

    assert set(body) >= CONTRACT_KEYS
    assert body["computed_vram_estimate"] == estimate.per_replica_bytes
    assert body["highest_node_vram"] == estimate.available_bytes
    assert isinstance(body["computed_vram_estimate"], int)
    assert body["context_length"] == 256
    json.dumps(body)


def test_estimate_absurd_context_does_not_fit(tiny_model_dir: Path) -> None:
    estimate = estimate_deployment(
        tiny_model_dir, context_length=10**12, concurrency=1, replicas=1, force_cpu=True
    )

    assert estimate.kv_cache_bytes > estimate.available_bytes
    assert estimate.fits is False


def test_estimate_from_config_only(tiny_model_dir: Path, tmp_path: Path) -> None:
    shutil.copy(tiny_model_dir / "config.json", tmp_path / "config.json")

    estimate = estimate_deployment(tmp_path, context_length=None, concurrency=1, replicas=1, force_cpu=True)

    assert estimate.estimate_source == "config"
    assert estimate.parameter_count == count_parameters(read_model_config(tmp_path)).total
    assert estimate.weights_bytes == safetensors_weight_bytes(tiny_model_dir)


@pytest.mark.parametrize(
    ("field", "kwargs"), [("concurrency", {"concurrency": 0}), ("replicas", {"replicas": 0})]
)
def test_estimate_rejects_invalid_counts(tiny_model_dir: Path, field: str, kwargs: dict[str, int]) -> None:
    arguments: dict[str, Any] = {"context_length": None, "concurrency": 1, "replicas": 1, "force_cpu": True}
    arguments.update(kwargs)

    with pytest.raises(ValueError, match=field):
        estimate_deployment(tiny_model_dir, **arguments)


def test_estimate_without_config(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        estimate_deployment(tmp_path, context_length=None, concurrency=1, replicas=1, force_cpu=True)


def test_available_memory_force_cpu() -> None:
    available, kind = available_memory(force_cpu=True)

    assert kind == "ram"
    assert available > 0
