"""GGUF headers written byte by byte in the test, read back without loading tensors, and estimated."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kamiwaza_mcp.local.gguf import gguf_weight_bytes, read_gguf_header
from kamiwaza_mcp.local.vram import GGUF_KV_CACHE_BYTES, estimate_deployment, gguf_files

F32, F16, Q8_0, Q4_K, UNKNOWN_TYPE = 0, 1, 8, 12, 99


@dataclass(frozen=True)
class Tensor:
    name: str
    dims: tuple[int, ...]
    type_id: int
    nbytes: int


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _value(value: Any) -> tuple[int, bytes]:
    """Encode a metadata value as (GGUF value type, bytes)."""
    if isinstance(value, bool):
        return 7, struct.pack("<?", value)
    if isinstance(value, int):
        return 4, struct.pack("<I", value)
    if isinstance(value, float):
        return 6, struct.pack("<f", value)
    if isinstance(value, str):
        return 8, _string(value)
    item_type, _ = _value(value[0])
    items = b"".join(_value(item)[1] for item in value)
    return 9, struct.pack("<IQ", item_type, len(value)) + items


def write_gguf(
    path: Path, metadata: dict[str, Any], tensors: list[Tensor], *, version: int = 3, alignment: int = 32
) -> int:
    """Write a GGUF file whose tensor data is zeros; return the offset where the data starts."""
    header = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(metadata))
    for key, value in metadata.items():
        value_type, encoded = _value(value)
        header += _string(key) + struct.pack("<I", value_type) + encoded
    offset = 0
    offsets = []
    for tensor in tensors:
        offsets.append(offset)
        offset += -(-tensor.nbytes // alignment) * alignment
    for tensor, tensor_offset in zip(tensors, offsets, strict=True):
        header += _string(tensor.name) + struct.pack("<I", len(tensor.dims))
        header += b"".join(struct.pack("<Q", dim) for dim in tensor.dims)
        header += struct.pack("<IQ", tensor.type_id, tensor_offset)
    data_start = -(-len(header) // alignment) * alignment
    path.write_bytes(header.ljust(data_start, b"\0") + bytes(offset))
    return data_start


METADATA: dict[str, Any] = {
    "general.architecture": "llama",
    "general.name": "hand-written",
    "llama.block_count": 2,
    "llama.context_length": 128,
    "llama.embedding_length": 64,
    "llama.attention.head_count": 4,
    "llama.attention.head_count_kv": 2,
    "llama.rope.freq_base": 10000.0,
    "tokenizer.ggml.add_bos_token": True,
    "tokenizer.ggml.tokens": [f"token{i}" for i in range(300)],
    "tokenizer.ggml.token_type": list(range(300)),
    "tokenizer.ggml.merges": ["a b", "c d"],
}
TENSORS = [
    Tensor("token_embd.weight", (64, 10), F32, 64 * 10 * 4),
    # Q8_0: blocks of 32 values in 34 bytes, so a 64-value row is 68 bytes.
    Tensor("blk.0.attn_q.weight", (64, 64), Q8_0, 64 * 68),
    # Q4_K: blocks of 256 values in 144 bytes.
    Tensor("blk.0.ffn_up.weight", (256, 4), Q4_K, 4 * 144),
    Tensor("output_norm.weight", (8,), F16, 16),
]


@pytest.fixture
def gguf_path(tmp_path: Path) -> Path:
    path = tmp_path / "model" / "hand-written.Q8_0.gguf"
    path.parent.mkdir()
    write_gguf(path, METADATA, TENSORS)
    return path


def test_header_metadata(gguf_path: Path) -> None:
    header = read_gguf_header(gguf_path)

    assert header.version == 3
    assert header.architecture == "llama"
    assert header.model_value("block_count") == 2
    assert header.model_value("attention.head_count_kv") == 2
    assert header.metadata["general.name"] == "hand-written"
    assert header.metadata["tokenizer.ggml.add_bos_token"] is True
    assert header.metadata["llama.rope.freq_base"] == pytest.approx(10000.0)
    assert header.metadata["tokenizer.ggml.merges"] == ["a b", "c d"]
    # Long arrays (vocabularies) are skipped, not kept in memory.
    assert header.metadata["tokenizer.ggml.tokens"] is None
    assert header.metadata["tokenizer.ggml.token_type"] is None


def test_header_tensor_table(gguf_path: Path) -> None:
    header = read_gguf_header(gguf_path)

    assert [t.name for t in header.tensors] == [t.name for t in TENSORS]
    assert [t.dims for t in header.tensors] == [t.dims for t in TENSORS]
    assert [t.type_name for t in header.tensors] == ["F32", "Q8_0", "Q4_K", "F16"]
    assert [t.nbytes for t in header.tensors] == [t.nbytes for t in TENSORS]
    assert header.tensors[1].numel == 64 * 64
    assert [t.offset % 32 for t in header.tensors] == [0, 0, 0, 0]


def test_data_offset_and_weight_bytes(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    data_start = write_gguf(path, METADATA, TENSORS)
    header = read_gguf_header(path)

    assert header.data_offset == data_start
    assert gguf_weight_bytes(header) == 2560 + 4352 + 576 + 16


def test_custom_alignment_and_version_2(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    data_start = write_gguf(path, {**METADATA, "general.alignment": 64}, TENSORS, version=2, alignment=64)
    header = read_gguf_header(path)

    assert header.version == 2
    assert header.data_offset == data_start
    assert data_start % 64 == 0


def test_unknown_type_counts_its_span(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    tensors = [*TENSORS, Tensor("future.weight", (100,), UNKNOWN_TYPE, 40)]
    write_gguf(path, METADATA, tensors)
    header = read_gguf_header(path)

    assert header.tensors[-1].nbytes is None
    # The last tensor runs to the end of the file, which pads it to the 32-byte alignment.
    assert gguf_weight_bytes(header) == 2560 + 4352 + 576 + 16 + 64


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"GGML" + bytes(20), "magic"),
        (b"GGUF" + struct.pack("<IQQ", 1, 0, 0), "version 1"),
        (b"GGUF" + struct.pack("<I", 3) + b"\x01", "truncated"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2**40), "corrupt"),
    ],
    ids=["magic", "version-1", "truncated", "huge-string"],
)
def test_invalid_headers(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "broken.gguf"
    path.write_bytes(content)

    with pytest.raises(ValueError, match=message):
        read_gguf_header(path)


def test_row_not_whole_blocks(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    write_gguf(path, METADATA, [Tensor("odd.weight", (48, 2), Q8_0, 2 * 34)])

    with pytest.raises(ValueError, match="not a multiple"):
        gguf_weight_bytes(read_gguf_header(path))


# Estimates of GGUF models


def test_estimate_gguf_folder(gguf_path: Path) -> None:
    estimate = estimate_deployment(
        gguf_path.parent, context_length=None, concurrency=3, replicas=2, force_cpu=True
    )

    assert estimate.estimate_source == "gguf"
    assert estimate.weights_files == ("hand-written.Q8_0.gguf",)
    assert estimate.weights_bytes == 2560 + 4352 + 576 + 16
    assert estimate.parameter_count == 640 + 4096 + 1024 + 8
    assert estimate.context_length == 128
    # 2 layers × 2 KV heads × (16 key + 16 value dims) × 128 positions × 2 bytes × 3 sequences.
    assert estimate.kv_cache_bytes == 2 * 2 * 32 * 128 * GGUF_KV_CACHE_BYTES * 3
    assert estimate.dtype == "float16"
    assert estimate.total_bytes == 2 * estimate.per_replica_bytes
    assert "512 MiB" in estimate.overhead_basis


def test_estimate_gguf_key_value_lengths(tmp_path: Path) -> None:
    metadata = {
        **METADATA,
        "llama.attention.key_length": 24,
        "llama.attention.value_length": 8,
        "llama.attention.head_count_kv": [1, 3],
    }
    write_gguf(tmp_path / "m.gguf", metadata, TENSORS)

    estimate = estimate_deployment(tmp_path, context_length=10, concurrency=1, replicas=1, force_cpu=True)

    assert estimate.kv_cache_bytes == (1 + 3) * (24 + 8) * 10 * GGUF_KV_CACHE_BYTES


def test_gguf_shards_form_one_model(tmp_path: Path) -> None:
    for index in (1, 2):
        write_gguf(tmp_path / f"big-0000{index}-of-00002.gguf", METADATA, TENSORS[index - 1 : index])

    files = gguf_files(tmp_path)
    estimate = estimate_deployment(tmp_path, context_length=None, concurrency=1, replicas=1, force_cpu=True)

    assert [path.name for path in files] == ["big-00001-of-00002.gguf", "big-00002-of-00002.gguf"]
    assert estimate.weights_bytes == 2560 + 4352


def test_gguf_missing_shard(tmp_path: Path) -> None:
    write_gguf(tmp_path / "big-00001-of-00002.gguf", METADATA, TENSORS)

    with pytest.raises(FileNotFoundError, match="big-00002-of-00002"):
        gguf_files(tmp_path)


def test_gguf_several_models_need_a_choice(tmp_path: Path) -> None:
    write_gguf(tmp_path / "m.Q8_0.gguf", METADATA, TENSORS)
    write_gguf(tmp_path / "m.F16.gguf", METADATA, TENSORS[:1])

    with pytest.raises(ValueError, match="m_file_id"):
        gguf_files(tmp_path)
    chosen = estimate_deployment(
        tmp_path, context_length=None, concurrency=1, replicas=1, force_cpu=True, weights_file="m.F16.gguf"
    )
    assert chosen.weights_bytes == 2560
