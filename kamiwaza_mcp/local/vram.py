"""Memory estimates for deploying a Hugging Face model folder.

The estimate is weights + KV cache + runtime overhead per replica. Weights come from
the safetensors headers (no tensor is loaded) or, without safetensors files, from a
parameter count computed from config.json. It is an estimate: activations, allocator
fragmentation and the CUDA context are covered by a stated allowance, not measured.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import struct
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from .catalog import SAFETENSORS_INDEX_FILE, context_length_from_config, read_model_config, text_config_of

__all__ = [
    "MemoryKind",
    "TensorInfo",
    "VramEstimate",
    "available_memory",
    "count_parameters",
    "estimate_deployment",
    "kv_cache_bytes",
    "read_safetensors_header",
    "safetensors_files",
    "safetensors_weight_bytes",
]

logger = logging.getLogger(__name__)

MemoryKind = Literal["gpu", "ram"]
# NOTE: GGUF files are not read, so no estimate has the source "gguf" that the API allows.
EstimateSource = Literal["safetensors", "config"]

# Bytes per element of the safetensors dtype codes.
SAFETENSORS_DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U64": 8,
    "U32": 4,
    "U16": 2,
    "U8": 1,
    "BOOL": 1,
}
# Floating-point tensors are converted to the deployment dtype when loaded, so they are
# counted at that dtype. Integer tensors (quantized packs, index tables) keep their stored size.
_FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "F8_E8M0"})

# Bytes per element of the torch dtype names used in config.json.
TORCH_DTYPE_BYTES = {
    "float64": 8,
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "float8_e4m3fn": 1,
    "float8_e5m2": 1,
}

# A header larger than this is a corrupt length field, not a real header.
_MAX_HEADER_BYTES = 100 * 1024 * 1024

# Runtime overhead allowance (an estimate, not a measurement of the device):
# - GPU: 1 GiB for the CUDA context and cuBLAS workspaces, which take a few hundred MiB
#   to about 1 GiB per process depending on the GPU and the torch build.
# - CPU: 512 MiB for the worker process itself: a worker serving the tiny test model
#   measured about 360 MiB resident (torch 2.13 CPU, transformers 5.25, Linux x86-64).
# - Both: 10% of weights plus KV cache for activations and allocator fragmentation.
GPU_FIXED_OVERHEAD_BYTES = 1024**3
CPU_FIXED_OVERHEAD_BYTES = 512 * 1024**2
OVERHEAD_FRACTION = 0.10

_NVIDIA_SMI_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class TensorInfo:
    """One tensor entry of a safetensors header."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    stored_bytes: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype in _FLOAT_DTYPES


@dataclass(frozen=True)
class VramEstimate:
    """Memory needed by a deployment, in bytes, and whether it fits in the free memory."""

    weights_bytes: int
    kv_cache_bytes: int
    overhead_bytes: int
    per_replica_bytes: int
    replicas: int
    total_bytes: int
    available_bytes: int
    memory_kind: MemoryKind
    fits: bool
    context_length: int
    concurrency: int
    dtype: str
    estimate_source: EstimateSource
    parameter_count: int

    def as_response(self) -> dict[str, Any]:
        """Return the body of `POST /api/serving/estimate_model_vram`."""
        body = asdict(self)
        body["computed_vram_estimate"] = self.per_replica_bytes
        body["highest_node_vram"] = self.available_bytes
        return body


# Safetensors


def read_safetensors_header(path: Path) -> list[TensorInfo]:
    """Read the tensor table of a safetensors file without loading any tensor.

    The file starts with an 8-byte little-endian header length, then that many bytes
    of JSON mapping each tensor name to its dtype, shape and data offsets.
    Raises ValueError when the header is not a valid safetensors header.
    """
    with path.open("rb") as file:
        prefix = file.read(8)
        if len(prefix) != 8:
            raise ValueError(f"{path} is too short to be a safetensors file")
        (header_length,) = struct.unpack("<Q", prefix)
        if header_length > _MAX_HEADER_BYTES:
            raise ValueError(
                f"{path} declares a {header_length}-byte header; the file is not valid safetensors"
            )
        raw = file.read(header_length)
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} has an invalid safetensors header: {exc}") from exc
    if not isinstance(header, dict):
        raise ValueError(f"{path} has a safetensors header that is not a JSON object")
    return [_tensor_info(path, name, entry) for name, entry in header.items() if name != "__metadata__"]


def _tensor_info(path: Path, name: str, entry: Any) -> TensorInfo:
    try:
        dtype = str(entry["dtype"])
        shape = tuple(int(dim) for dim in entry["shape"])
        begin, end = (int(offset) for offset in entry["data_offsets"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: tensor {name!r} has an invalid header entry: {exc}") from exc
    element_bytes = SAFETENSORS_DTYPE_BYTES.get(dtype)
    # Packed sub-byte dtypes (for example 4-bit floats) have no whole element size, so
    # their stored size comes from the data offsets.
    stored = element_bytes * math.prod(shape) if element_bytes is not None else end - begin
    return TensorInfo(name=name, dtype=dtype, shape=shape, stored_bytes=stored)


def safetensors_files(model_dir: Path) -> list[Path]:
    """List the weight files of a folder: the shards named by the index, else every `*.safetensors`.

    Raises ValueError when the index is invalid and FileNotFoundError when a shard it names is missing.
    """
    index_path = model_dir / SAFETENSORS_INDEX_FILE
    if not index_path.is_file():
        return sorted(model_dir.glob("*.safetensors"))
    try:
        weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
        shard_names = sorted(set(weight_map.values()))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{index_path} has no valid weight_map: {exc}") from exc
    shards = [model_dir / name for name in shard_names]
    missing = [shard.name for shard in shards if not shard.is_file()]
    if missing:
        raise FileNotFoundError(f"{index_path} names missing shards: {', '.join(missing)}")
    return shards


def safetensors_weight_bytes(model_dir: Path) -> int:
    """Return the bytes of every tensor stored in the folder's safetensors files."""
    return sum(t.stored_bytes for path in safetensors_files(model_dir) for t in read_safetensors_header(path))


# Config-based counts


def count_parameters(config: dict[str, Any]) -> int:
    """Count the parameters of a Llama-style decoder from its config.json.

    Counts embeddings, attention q/k/v/o with grouped-query attention and any
    `head_dim` override, the gated MLP, RMSNorm weights and lm_head unless
    `tie_word_embeddings`. Qwen2's q/k/v biases and Qwen3's per-head q/k norms
    are included. Raises ValueError for a config that lacks the needed keys or
    describes a mixture-of-experts model.
    """
    text = text_config_of(config)
    if any(text.get(key) for key in ("num_local_experts", "num_experts", "n_routed_experts")):
        raise ValueError(
            "config.json describes a mixture-of-experts model, which config-only estimates do not cover; "
            "add the model's safetensors files"
        )
    hidden = _positive_int(text, "hidden_size")
    layers = _positive_int(text, "num_hidden_layers")
    vocab = _positive_int(text, "vocab_size")
    intermediate = _positive_int(text, "intermediate_size")
    heads, kv_heads, head_dim = _attention_shape(text)
    model_type = text.get("model_type", config.get("model_type"))

    attention_bias = bool(text.get("attention_bias", False))
    qkv_bias = attention_bias or model_type == "qwen2"
    attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
    if qkv_bias:
        attention += heads * head_dim + 2 * kv_heads * head_dim
    if attention_bias:
        attention += hidden

    mlp = 3 * hidden * intermediate
    if text.get("mlp_bias", False):
        mlp += 2 * intermediate + hidden

    norms = 2 * hidden + (2 * head_dim if model_type == "qwen3" else 0)
    embeddings = vocab * hidden
    # NOTE: a config without tie_word_embeddings counts an untied lm_head, the Llama
    # default; families whose class defaults to tied embeddings are then overcounted.
    tied = bool(text.get("tie_word_embeddings", config.get("tie_word_embeddings", False)))
    lm_head = 0 if tied else vocab * hidden
    return embeddings + layers * (attention + mlp + norms) + hidden + lm_head


def kv_cache_bytes(
    *, layers: int, kv_heads: int, head_dim: int, context_length: int, dtype_bytes: int, sequences: int
) -> int:
    """Return the KV cache size: keys and values for every layer, KV head and position of each sequence."""
    return 2 * layers * kv_heads * head_dim * context_length * dtype_bytes * sequences


def _attention_shape(text: dict[str, Any]) -> tuple[int, int, int]:
    """Return (attention heads, KV heads, head dim), with the Llama defaults for the optional keys."""
    heads = _positive_int(text, "num_attention_heads")
    kv_heads = text.get("num_key_value_heads") or heads
    head_dim = text.get("head_dim") or _positive_int(text, "hidden_size") // heads
    if not isinstance(kv_heads, int) or not isinstance(head_dim, int):
        raise ValueError("config.json has a non-integer num_key_value_heads or head_dim")
    return heads, kv_heads, head_dim


def _positive_int(config: dict[str, Any], key: str) -> int:
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(
            f"config.json has no positive integer {key} (found {value!r}); the estimate needs it"
        )
    return value


# Available memory


def available_memory(force_cpu: bool) -> tuple[int, MemoryKind]:
    """Return the free memory for a deployment in bytes, and whether it is GPU memory or RAM.

    GPU memory is the free memory of GPU 0 as nvidia-smi reports it, because workers
    load onto the default CUDA device. Without nvidia-smi, with force_cpu, or when the
    query fails, it is the available RAM.
    """
    if not force_cpu and shutil.which("nvidia-smi"):
        free_gpu = _nvidia_smi_free_bytes()
        if free_gpu is not None:
            # NOTE: this assumes torch in the worker can use the GPU; a CPU-only torch build
            # loads on CPU in float32, which this GPU figure does not describe.
            return free_gpu, "gpu"
    return _available_ram_bytes(), "ram"


def _nvidia_smi_free_bytes() -> int | None:
    command = ["nvidia-smi", "--query-gpu=memory.total,memory.free", "--format=csv,noheader,nounits"]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=_NVIDIA_SMI_TIMEOUT_SECONDS, check=True
        )
        _total_mib, free_mib = (int(part) for part in result.stdout.splitlines()[0].split(","))
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        logger.warning("nvidia-smi failed (%s); estimating against RAM instead", exc)
        return None
    return free_mib * 1024**2


def _available_ram_bytes() -> int:
    """Return MemAvailable from /proc/meminfo, else the sysconf page counts."""
    try:
        for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    page_size = os.sysconf("SC_PAGE_SIZE")
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * page_size
    except (ValueError, OSError):
        # NOTE: macOS has no available-pages counter, so this is total RAM and overstates what is free.
        return os.sysconf("SC_PHYS_PAGES") * page_size


# Estimate


def estimate_deployment(
    model_dir: Path, *, context_length: int | None, concurrency: int, replicas: int, force_cpu: bool
) -> VramEstimate:
    """Estimate the memory of a deployment of the model in `model_dir` and check it against free memory.

    `context_length` None means the config's maximum. CPU deployments count float32,
    because the transformers engine loads float32 on CPU; GPU deployments count the
    config's dtype. Raises ValueError when the folder lacks what the estimate needs.
    """
    for name, value in (("concurrency", concurrency), ("replicas", replicas)):
        if value < 1:
            raise ValueError(f"{name} is {value}; it must be at least 1")
    config = read_model_config(model_dir)
    context_length = _resolve_context_length(config, context_length)

    available_bytes, memory_kind = available_memory(force_cpu)
    dtype = "float32" if memory_kind == "ram" else _config_dtype(config)
    dtype_bytes = TORCH_DTYPE_BYTES[dtype]

    weights_bytes, parameter_count, source = _weights(model_dir, config, dtype_bytes)
    text = text_config_of(config)
    _heads, kv_heads, head_dim = _attention_shape(text)
    kv_bytes = kv_cache_bytes(
        layers=_positive_int(text, "num_hidden_layers"),
        kv_heads=kv_heads,
        head_dim=head_dim,
        context_length=context_length,
        dtype_bytes=dtype_bytes,
        sequences=concurrency,
    )
    fixed = GPU_FIXED_OVERHEAD_BYTES if memory_kind == "gpu" else CPU_FIXED_OVERHEAD_BYTES
    overhead_bytes = fixed + int(OVERHEAD_FRACTION * (weights_bytes + kv_bytes))
    per_replica = weights_bytes + kv_bytes + overhead_bytes
    total = per_replica * replicas

    return VramEstimate(
        weights_bytes=weights_bytes,
        kv_cache_bytes=kv_bytes,
        overhead_bytes=overhead_bytes,
        per_replica_bytes=per_replica,
        replicas=replicas,
        total_bytes=total,
        available_bytes=available_bytes,
        memory_kind=memory_kind,
        # Every replica runs on this machine (and on GPU 0), so all of them must fit together.
        fits=total <= available_bytes,
        context_length=context_length,
        concurrency=concurrency,
        dtype=dtype,
        estimate_source=source,
        parameter_count=parameter_count,
    )


def _weights(model_dir: Path, config: dict[str, Any], dtype_bytes: int) -> tuple[int, int, EstimateSource]:
    """Return (weight bytes at the deployment dtype, parameter count, source of the figures)."""
    files = safetensors_files(model_dir)
    if not files:
        parameters = count_parameters(config)
        return parameters * dtype_bytes, parameters, "config"
    tensors = [tensor for path in files for tensor in read_safetensors_header(path)]
    weights = sum(t.numel * dtype_bytes if t.is_float else t.stored_bytes for t in tensors)
    return weights, sum(t.numel for t in tensors), "safetensors"


def _resolve_context_length(config: dict[str, Any], requested: int | None) -> int:
    if requested is not None:
        if requested < 1:
            raise ValueError(f"context_length is {requested}; it must be at least 1")
        return requested
    from_config = context_length_from_config(config)
    if from_config is None:
        raise ValueError(
            "config.json states no context length (max_position_embeddings); pass context_length"
        )
    return from_config


def _config_dtype(config: dict[str, Any]) -> str:
    """Return the config's dtype name, from `dtype` (transformers 5) or `torch_dtype` (older configs)."""
    for source in (config, text_config_of(config)):
        for key in ("dtype", "torch_dtype"):
            value = source.get(key)
            if isinstance(value, str) and value in TORCH_DTYPE_BYTES:
                return value
    # With no dtype in the config, assume float16, the transformers engine's CUDA dtype.
    # NOTE: a float32 config is counted at 4 bytes, although that engine loads it in float16.
    return "float16"
