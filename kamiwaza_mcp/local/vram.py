"""Memory estimates for deploying a Hugging Face model folder.

The estimate is weights + KV cache + runtime overhead per replica. Weights come from
the safetensors headers, from the GGUF header of a llama.cpp model file (no tensor
is loaded from either), or, without weight files, from a parameter count computed
from config.json. It is an estimate: activations, allocator fragmentation and the
CUDA context are covered by a stated allowance, not measured.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import struct
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from .catalog import SAFETENSORS_INDEX_FILE, context_length_from_config, read_model_config, text_config_of
from .gguf import GgufHeader, gguf_weight_bytes, read_gguf_header
from .param_count import attention_shape, count_parameters, positive_int

__all__ = [
    "MemoryKind",
    "TensorInfo",
    "VramEstimate",
    "available_memory",
    "count_parameters",
    "estimate_deployment",
    "gguf_files",
    "kv_cache_bytes",
    "read_safetensors_header",
    "safetensors_files",
    "safetensors_weight_bytes",
]

logger = logging.getLogger(__name__)

MemoryKind = Literal["gpu", "ram"]
EstimateSource = Literal["safetensors", "config", "gguf"]

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
#   measured about 370 MiB resident (torch 2.13 CPU, transformers 5.25, Linux x86-64).
# - Both: 10% of weights plus KV cache for activations and allocator fragmentation.
GPU_FIXED_OVERHEAD_BYTES = 1024**3
CPU_FIXED_OVERHEAD_BYTES = 512 * 1024**2
OVERHEAD_FRACTION = 0.10
OVERHEAD_BASIS = {
    "gpu": "1 GiB per replica for the CUDA context and cuBLAS workspaces (a few hundred MiB to about "
    "1 GiB per process, by GPU and torch build), plus 10% of weights and KV cache for activations "
    "and allocator fragmentation; an allowance, not a measurement",
    "ram": "512 MiB per replica for the worker process (a worker serving the tiny test model measured "
    "about 370 MiB resident with torch 2.13 CPU on Linux x86-64), plus 10% of weights and KV cache "
    "for activations and allocator fragmentation; an allowance, not a measurement",
}
# llama.cpp keeps its KV cache in float16 by default (its --cache-type-k and --cache-type-v).
GGUF_KV_CACHE_BYTES = 2
_GGUF_SHARD = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")

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
    overhead_basis: str
    weights_files: tuple[str, ...] = ()

    def as_response(self) -> dict[str, Any]:
        """Return the body of `POST /api/serving/estimate_model_vram`."""
        body = asdict(self)
        body["weights_files"] = list(self.weights_files)
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


# KV cache


def kv_cache_bytes(
    *, layers: int, kv_heads: int, head_dim: int, context_length: int, dtype_bytes: int, sequences: int
) -> int:
    """Return the KV cache size: keys and values for every layer, KV head and position of each sequence."""
    return 2 * layers * kv_heads * head_dim * context_length * dtype_bytes * sequences


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


# GGUF


def gguf_files(model_dir: Path, weights_file: str | None = None) -> list[Path]:
    """List the GGUF files of one model in the folder: `weights_file` and its sibling shards.

    Without `weights_file`, the folder must contain one GGUF model (one file, or the
    shards `<name>-0000i-of-0000n.gguf` of one model). Returns [] for a folder without
    GGUF files. Raises ValueError when several models are present and none is chosen,
    and FileNotFoundError when a chosen file or one of its shards is missing.
    """
    if weights_file is not None:
        chosen = model_dir / weights_file
        if not chosen.is_file():
            raise FileNotFoundError(f"weights file {weights_file} not found in {model_dir}")
        return _shard_set(chosen)
    found = sorted(model_dir.glob("*.gguf"))
    groups = {_shard_stem(path) for path in found}
    if len(groups) > 1:
        raise ValueError(
            f"{model_dir} contains {len(groups)} GGUF models ({', '.join(sorted(groups))}); "
            "choose one with m_file_id"
        )
    return _shard_set(found[0]) if found else []


def _shard_stem(path: Path) -> str:
    match = _GGUF_SHARD.match(path.name)
    return match.group("stem") if match else path.stem


def _shard_set(path: Path) -> list[Path]:
    match = _GGUF_SHARD.match(path.name)
    if match is None:
        return [path]
    count = int(match.group("count"))
    shards = [
        path.with_name(f"{match.group('stem')}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)
    ]
    missing = [shard.name for shard in shards if not shard.is_file()]
    if missing:
        raise FileNotFoundError(f"GGUF model {match.group('stem')} is missing shards: {', '.join(missing)}")
    return shards


def _gguf_cached_values(header: GgufHeader) -> int:
    """Return the values the KV cache keeps per position, summed over layers, from GGUF metadata.

    Each layer caches KV heads × (key length + value length) values per position. The
    key and value lengths default to embedding_length / head_count, and
    `head_count_kv` may be one number or a list with one entry per layer.
    """
    layers = header.model_value("block_count")
    heads = header.model_value("attention.head_count")
    embedding = header.model_value("embedding_length")
    if not isinstance(layers, int) or layers <= 0:
        raise ValueError(f"{header.path} has no {header.architecture}.block_count; the estimate needs it")
    kv_heads = header.model_value("attention.head_count_kv")
    if kv_heads is None:
        kv_heads = heads
    per_layer = kv_heads if isinstance(kv_heads, list) else [kv_heads] * layers
    default_dim = (
        embedding // heads if isinstance(embedding, int) and isinstance(heads, int) and heads else None
    )
    key_length = header.model_value("attention.key_length") or default_dim
    value_length = header.model_value("attention.value_length") or default_dim
    if not isinstance(key_length, int) or not isinstance(value_length, int):
        raise ValueError(
            f"{header.path} states neither attention.key_length nor embedding_length and head_count; "
            "the KV cache cannot be estimated"
        )
    if not all(isinstance(count, int) for count in per_layer):
        raise ValueError(f"{header.path} has an invalid {header.architecture}.attention.head_count_kv")
    return sum(per_layer) * (key_length + value_length)


# Estimate


@dataclass(frozen=True)
class _Weights:
    """Weight bytes at the deployment dtype, their parameter count and where the figures came from."""

    bytes: int
    parameters: int
    source: EstimateSource
    files: tuple[str, ...]


def estimate_deployment(
    model_dir: Path,
    *,
    context_length: int | None,
    concurrency: int,
    replicas: int,
    force_cpu: bool,
    weights_file: str | None = None,
) -> VramEstimate:
    """Estimate the memory of a deployment of the model in `model_dir` and check it against free memory.

    `context_length` None means the model's maximum. A folder with GGUF files and no
    safetensors files, or a `weights_file` ending in `.gguf`, is estimated from the GGUF
    header: weights at their stored size and a float16 KV cache, as llama.cpp runs them.
    Otherwise CPU deployments count float32, because the transformers engine loads
    float32 on CPU, and GPU deployments count the config's dtype. Raises ValueError
    when the folder lacks what the estimate needs.
    """
    for name, value in (("concurrency", concurrency), ("replicas", replicas)):
        if value < 1:
            raise ValueError(f"{name} is {value}; it must be at least 1")
    available_bytes, memory_kind = available_memory(force_cpu)
    ggufs = gguf_files(model_dir, weights_file) if _may_be_gguf(model_dir, weights_file) else []
    if ggufs:
        weights, context, cache_bytes, dtype = _gguf_parts(ggufs, context_length, concurrency)
    else:
        weights, context, cache_bytes, dtype = _transformers_parts(
            model_dir, memory_kind, context_length, concurrency
        )

    fixed = GPU_FIXED_OVERHEAD_BYTES if memory_kind == "gpu" else CPU_FIXED_OVERHEAD_BYTES
    overhead_bytes = fixed + int(OVERHEAD_FRACTION * (weights.bytes + cache_bytes))
    per_replica = weights.bytes + cache_bytes + overhead_bytes
    total = per_replica * replicas
    return VramEstimate(
        weights_bytes=weights.bytes,
        kv_cache_bytes=cache_bytes,
        overhead_bytes=overhead_bytes,
        per_replica_bytes=per_replica,
        replicas=replicas,
        total_bytes=total,
        available_bytes=available_bytes,
        memory_kind=memory_kind,
        # Every replica runs on this machine (and on GPU 0), so all of them must fit together.
        fits=total <= available_bytes,
        context_length=context,
        concurrency=concurrency,
        dtype=dtype,
        estimate_source=weights.source,
        parameter_count=weights.parameters,
        overhead_basis=OVERHEAD_BASIS[memory_kind],
        weights_files=weights.files,
    )


def _may_be_gguf(model_dir: Path, weights_file: str | None) -> bool:
    if weights_file is not None:
        return weights_file.endswith(".gguf")
    return not safetensors_files(model_dir) and any(model_dir.glob("*.gguf"))


def _gguf_parts(
    files: list[Path], requested_context: int | None, concurrency: int
) -> tuple[_Weights, int, int, str]:
    """Return (weights, context length, KV cache bytes, KV cache dtype) of a GGUF model."""
    headers = [read_gguf_header(path) for path in files]
    first = headers[0]
    weights = _Weights(
        bytes=sum(gguf_weight_bytes(header) for header in headers),
        parameters=sum(tensor.numel for header in headers for tensor in header.tensors),
        source="gguf",
        files=tuple(path.name for path in files),
    )
    stated = first.model_value("context_length")
    context = _resolve_context_length(stated if isinstance(stated, int) else None, requested_context)
    cache_bytes = _gguf_cached_values(first) * context * GGUF_KV_CACHE_BYTES * concurrency
    return weights, context, cache_bytes, "float16"


def _transformers_parts(
    model_dir: Path, memory_kind: MemoryKind, requested_context: int | None, concurrency: int
) -> tuple[_Weights, int, int, str]:
    """Return (weights, context length, KV cache bytes, dtype) of a Hugging Face folder."""
    config = read_model_config(model_dir)
    context = _resolve_context_length(context_length_from_config(config), requested_context)
    dtype = "float32" if memory_kind == "ram" else _config_dtype(config)
    dtype_bytes = TORCH_DTYPE_BYTES[dtype]
    weights = _weights(model_dir, config, dtype_bytes)
    text = text_config_of(config)
    _heads, kv_heads, head_dim = attention_shape(text)
    cache_bytes = kv_cache_bytes(
        layers=positive_int(text, "num_hidden_layers"),
        kv_heads=kv_heads,
        head_dim=head_dim,
        context_length=context,
        dtype_bytes=dtype_bytes,
        sequences=concurrency,
    )
    return weights, context, cache_bytes, dtype


def _weights(model_dir: Path, config: dict[str, Any], dtype_bytes: int) -> _Weights:
    """Return the weight bytes at the deployment dtype, from safetensors headers or else config.json."""
    files = safetensors_files(model_dir)
    if not files:
        parameters = count_parameters(config).total
        return _Weights(parameters * dtype_bytes, parameters, "config", ())
    tensors = [tensor for path in files for tensor in read_safetensors_header(path)]
    weights = sum(t.numel * dtype_bytes if t.is_float else t.stored_bytes for t in tensors)
    names = tuple(path.name for path in files)
    return _Weights(weights, sum(t.numel for t in tensors), "safetensors", names)


def _resolve_context_length(stated: int | None, requested: int | None) -> int:
    if requested is not None:
        if requested < 1:
            raise ValueError(f"context_length is {requested}; it must be at least 1")
        return requested
    if stated is None:
        raise ValueError(
            "the model states no context length (max_position_embeddings in config.json, or "
            "<architecture>.context_length in a GGUF file); pass context_length"
        )
    return stated


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
