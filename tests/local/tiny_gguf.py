"""A tiny llama-architecture GGUF model with a byte-fallback SentencePiece vocabulary, written in the test.

The weights make the output predictable: every token embedding is the same positive
vector and the layers are small random matrices, so the final hidden state is close to
a positive constant. The output rows then rank "a" first, "b", "c" and "d" close
behind, and the control tokens (EOS among them) last, so greedy decoding emits "a"
until max_tokens and never EOS.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

EMBEDDING = 32
HEADS = 4
FEED_FORWARD = 64
CONTEXT_LENGTH = 128
GREEDY_TOKEN = "a"

# GGUF metadata value types.
_UINT32, _INT32, _FLOAT32, _BOOL, _STRING, _ARRAY = 4, 5, 6, 7, 8, 9
# SentencePiece token types as llama.cpp numbers them.
_NORMAL, _UNKNOWN, _CONTROL, _BYTE = 1, 2, 3, 6
_ALIGNMENT = 32


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _scalar(value: Any) -> tuple[int, bytes]:
    if isinstance(value, bool):
        return _BOOL, struct.pack("<?", value)
    if isinstance(value, int):
        return _UINT32, struct.pack("<I", value)
    if isinstance(value, float):
        return _FLOAT32, struct.pack("<f", value)
    return _STRING, _string(value)


def _metadata_value(value: Any) -> tuple[int, bytes]:
    """Encode a value; lists of ints are int32 arrays, as llama.cpp reads token types."""
    if not isinstance(value, list):
        return _scalar(value)
    if isinstance(value[0], float):
        item_type, items = _FLOAT32, b"".join(struct.pack("<f", item) for item in value)
    elif isinstance(value[0], int):
        item_type, items = _INT32, b"".join(struct.pack("<i", item) for item in value)
    else:
        item_type, items = _STRING, b"".join(_string(item) for item in value)
    return _ARRAY, struct.pack("<IQ", item_type, len(value)) + items


def _vocabulary() -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{byte:02X}>" for byte in range(256)]
    types = [_UNKNOWN, _CONTROL, _CONTROL] + [_BYTE] * 256
    pieces = ["▁", *"abcdefghijklmnopqrstuvwxyz"]
    tokens += pieces
    types += [_NORMAL] * len(pieces)
    scores = [0.0] * 259 + [-float(index) for index in range(len(pieces))]
    return tokens, scores, types


def _tensors(vocab_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Return the tensors in numpy shape order, which is the reverse of GGUF's dims."""

    def small(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.01).astype(np.float32)

    tokens, _, _ = _vocabulary()
    output = small(vocab_size, EMBEDDING)
    for token, weight in (("a", 1.0), ("b", 0.95), ("c", 0.95), ("d", 0.95)):
        output[tokens.index(token)] = weight
    output[:3] = -1.0
    return {
        "token_embd.weight": np.full((vocab_size, EMBEDDING), 0.5, dtype=np.float32),
        "output_norm.weight": np.ones(EMBEDDING, dtype=np.float32),
        "output.weight": output,
        "blk.0.attn_norm.weight": np.ones(EMBEDDING, dtype=np.float32),
        "blk.0.attn_q.weight": small(EMBEDDING, EMBEDDING),
        "blk.0.attn_k.weight": small(EMBEDDING, EMBEDDING),
        "blk.0.attn_v.weight": small(EMBEDDING, EMBEDDING),
        "blk.0.attn_output.weight": small(EMBEDDING, EMBEDDING),
        "blk.0.ffn_norm.weight": np.ones(EMBEDDING, dtype=np.float32),
        "blk.0.ffn_gate.weight": small(FEED_FORWARD, EMBEDDING),
        "blk.0.ffn_up.weight": small(FEED_FORWARD, EMBEDDING),
        "blk.0.ffn_down.weight": small(EMBEDDING, FEED_FORWARD),
    }


def write_tiny_gguf(path: Path, *, seed: int = 0) -> None:
    """Write the tiny model as one float32 GGUF version 3 file at `path`."""
    tokens, scores, types = _vocabulary()
    metadata: dict[str, Any] = {
        "general.architecture": "llama",
        "general.name": "tiny-gguf",
        "llama.context_length": CONTEXT_LENGTH,
        "llama.embedding_length": EMBEDDING,
        "llama.block_count": 1,
        "llama.feed_forward_length": FEED_FORWARD,
        "llama.attention.head_count": HEADS,
        "llama.attention.head_count_kv": HEADS,
        "llama.rope.dimension_count": EMBEDDING // HEADS,
        "llama.attention.layer_norm_rms_epsilon": 1e-5,
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": scores,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.unknown_token_id": 0,
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
    }
    tensors = _tensors(len(tokens), np.random.default_rng(seed))

    header = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata))
    for key, value in metadata.items():
        value_type, encoded = _metadata_value(value)
        header += _string(key) + struct.pack("<I", value_type) + encoded
    data = b""
    for name, array in tensors.items():
        offset = len(data)
        header += _string(name) + struct.pack("<I", array.ndim)
        header += b"".join(struct.pack("<Q", dim) for dim in reversed(array.shape))
        header += struct.pack("<IQ", 0, offset)  # ggml type 0 is F32
        raw = array.tobytes()
        data += raw.ljust(-(-len(raw) // _ALIGNMENT) * _ALIGNMENT, b"\0")
    data_start = -(-len(header) // _ALIGNMENT) * _ALIGNMENT
    path.write_bytes(header.ljust(data_start, b"\0") + data)
