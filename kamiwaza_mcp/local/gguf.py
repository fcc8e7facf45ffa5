"""Read the header of a GGUF file (llama.cpp's model format) without loading any tensor.

A GGUF file (versions 2 and 3) starts with the magic `GGUF`, a uint32 version, a
uint64 tensor count and a uint64 metadata count, all little-endian. Then come the
metadata key-value pairs, then one entry per tensor: name, dimension count,
dimensions, ggml type and data offset. Strings are a uint64 length and UTF-8 bytes.
Version 1, with 32-bit counts and lengths, is rejected, because current tools no
longer write it.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "GGML_TYPES",
    "GgmlType",
    "GgufHeader",
    "GgufTensor",
    "gguf_weight_bytes",
    "read_gguf_header",
]

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32


@dataclass(frozen=True)
class GgmlType:
    """A ggml tensor type: elements per quantization block and bytes per block."""

    name: str
    block_size: int
    block_bytes: int


# ggml tensor types by id, as llama.cpp defines them in ggml.h (`enum ggml_type`) and
# gguf-py/gguf/constants.py (`GGML_QUANT_SIZES`). Ids 4, 5, 31-33 and 36-38 are types
# that ggml removed. Q8_1 (9) is left out: it only exists during matrix products, and
# its block size differs between ggml versions.
GGML_TYPES: dict[int, GgmlType] = {
    0: GgmlType("F32", 1, 4),
    1: GgmlType("F16", 1, 2),
    2: GgmlType("Q4_0", 32, 18),
    3: GgmlType("Q4_1", 32, 20),
    6: GgmlType("Q5_0", 32, 22),
    7: GgmlType("Q5_1", 32, 24),
    8: GgmlType("Q8_0", 32, 34),
    10: GgmlType("Q2_K", 256, 84),
    11: GgmlType("Q3_K", 256, 110),
    12: GgmlType("Q4_K", 256, 144),
    13: GgmlType("Q5_K", 256, 176),
    14: GgmlType("Q6_K", 256, 210),
    15: GgmlType("Q8_K", 256, 292),
    16: GgmlType("IQ2_XXS", 256, 66),
    17: GgmlType("IQ2_XS", 256, 74),
    18: GgmlType("IQ3_XXS", 256, 98),
    19: GgmlType("IQ1_S", 256, 50),
    20: GgmlType("IQ4_NL", 32, 18),
    21: GgmlType("IQ3_S", 256, 110),
    22: GgmlType("IQ2_S", 256, 82),
    23: GgmlType("IQ4_XS", 256, 136),
    24: GgmlType("I8", 1, 1),
    25: GgmlType("I16", 1, 2),
    26: GgmlType("I32", 1, 4),
    27: GgmlType("I64", 1, 8),
    28: GgmlType("F64", 1, 8),
    29: GgmlType("IQ1_M", 256, 56),
    30: GgmlType("BF16", 1, 2),
    34: GgmlType("TQ1_0", 256, 54),
    35: GgmlType("TQ2_0", 256, 66),
    39: GgmlType("MXFP4", 32, 17),
}

# Metadata value types: struct format of the fixed-size ones, then string (8), array (9).
_SCALAR_FORMATS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
# Arrays longer than this (tokenizer vocabularies, merges) are skipped instead of kept.
_MAX_KEPT_ARRAY = 64
# Bounds that only a corrupt file exceeds; they stop a bad length from allocating gigabytes.
_MAX_STRING_BYTES = 1 << 24
_MAX_COUNT = 1 << 32
_MAX_DIMS = 8


@dataclass(frozen=True)
class GgufTensor:
    """One tensor entry of a GGUF header. `dims` are as stored, innermost first."""

    name: str
    dims: tuple[int, ...]
    type_id: int
    offset: int

    @property
    def numel(self) -> int:
        return math.prod(self.dims)

    @property
    def type_name(self) -> str:
        known = GGML_TYPES.get(self.type_id)
        return known.name if known else f"type {self.type_id}"

    @property
    def nbytes(self) -> int | None:
        """Bytes of the tensor's data, or None for a ggml type this reader does not know.

        Raises ValueError when a row is not a whole number of quantization blocks.
        """
        known = GGML_TYPES.get(self.type_id)
        if known is None:
            return None
        if self.dims and self.dims[0] % known.block_size:
            raise ValueError(
                f"tensor {self.name!r} has {self.dims[0]} elements per row, "
                f"not a multiple of the {known.name} block of {known.block_size}"
            )
        return self.numel // known.block_size * known.block_bytes


@dataclass(frozen=True)
class GgufHeader:
    """The metadata and tensor table of a GGUF file, and where its tensor data starts."""

    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: tuple[GgufTensor, ...]
    data_offset: int
    file_size: int

    @property
    def architecture(self) -> str | None:
        value = self.metadata.get("general.architecture")
        return value if isinstance(value, str) else None

    def model_value(self, key: str) -> Any:
        """Return the metadata value `<architecture>.<key>`, for example `block_count`, or None."""
        return self.metadata.get(f"{self.architecture}.{key}") if self.architecture else None


def read_gguf_header(path: Path) -> GgufHeader:
    """Parse the header of the GGUF file at `path`; raise ValueError when it is not valid GGUF."""
    with path.open("rb") as file:
        reader = _Reader(file, path)
        if reader.read(4) != GGUF_MAGIC:
            raise ValueError(f"{path} does not start with the GGUF magic bytes; it is not a GGUF file")
        version = reader.scalar("<I")
        if version not in SUPPORTED_VERSIONS:
            raise ValueError(f"{path} is GGUF version {version}; only versions 2 and 3 can be read")
        tensor_count = reader.count()
        metadata_count = reader.count()
        metadata = dict(reader.key_value() for _ in range(metadata_count))
        tensors = tuple(reader.tensor() for _ in range(tensor_count))
        alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0:
            raise ValueError(f"{path} has an invalid general.alignment {alignment!r}")
        data_offset = -(-file.tell() // alignment) * alignment
    return GgufHeader(
        path=path,
        version=version,
        metadata=metadata,
        tensors=tensors,
        data_offset=data_offset,
        file_size=path.stat().st_size,
    )


def gguf_weight_bytes(header: GgufHeader) -> int:
    """Return the bytes of every tensor in the file, computed from each tensor's type and dims.

    A tensor of a ggml type this reader does not know is counted as the span from its
    offset to the next tensor's offset, or to the end of the file. That span includes up
    to `general.alignment` - 1 bytes of padding.
    """
    ordered = sorted(header.tensors, key=lambda tensor: tensor.offset)
    ends = [tensor.offset for tensor in ordered[1:]] + [header.file_size - header.data_offset]
    total = 0
    for tensor, end in zip(ordered, ends, strict=True):
        size = tensor.nbytes
        total += size if size is not None else max(end - tensor.offset, 0)
    return total


class _Reader:
    """Little-endian reads from a GGUF file, each failing with ValueError at a truncated file."""

    def __init__(self, file: BinaryIO, path: Path) -> None:
        self._file = file
        self._path = path

    def read(self, size: int) -> bytes:
        data = self._file.read(size)
        if len(data) != size:
            raise ValueError(f"{self._path} ends inside its GGUF header; the file is truncated")
        return data

    def scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def count(self) -> int:
        value: int = self.scalar("<Q")
        if value > _MAX_COUNT:
            raise ValueError(f"{self._path} declares {value} entries; the GGUF header is corrupt")
        return value

    def string(self) -> str:
        length: int = self.scalar("<Q")
        if length > _MAX_STRING_BYTES:
            raise ValueError(f"{self._path} declares a {length}-byte string; the GGUF header is corrupt")
        return self.read(length).decode("utf-8", errors="replace")

    def value(self, value_type: int) -> Any:
        if value_type in _SCALAR_FORMATS:
            return self.scalar(_SCALAR_FORMATS[value_type])
        if value_type == _STRING:
            return self.string()
        if value_type == _ARRAY:
            return self.array()
        raise ValueError(f"{self._path} has a metadata value of unknown type {value_type}")

    def array(self) -> list[Any] | None:
        """Read an array value; one longer than _MAX_KEPT_ARRAY is skipped and returned as None."""
        item_type: int = self.scalar("<I")
        length = self.count()
        if length <= _MAX_KEPT_ARRAY:
            return [self.value(item_type) for _ in range(length)]
        if item_type in _SCALAR_FORMATS:
            self._file.seek(length * struct.calcsize(_SCALAR_FORMATS[item_type]), 1)
        else:
            for _ in range(length):
                self.value(item_type)
        return None

    def key_value(self) -> tuple[str, Any]:
        key = self.string()
        return key, self.value(self.scalar("<I"))

    def tensor(self) -> GgufTensor:
        name = self.string()
        n_dims: int = self.scalar("<I")
        if n_dims > _MAX_DIMS:
            raise ValueError(
                f"{self._path}: tensor {name!r} declares {n_dims} dimensions; the header is corrupt"
            )
        dims = tuple(self.scalar("<Q") for _ in range(n_dims))
        type_id: int = self.scalar("<I")
        offset: int = self.scalar("<Q")
        return GgufTensor(name=name, dims=dims, type_id=type_id, offset=offset)
