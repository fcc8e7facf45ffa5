"""Patterns of failures in worker logs: out of memory, CUDA errors, model loading failures, crashes.

The worker ends a failed load with one stderr line `MODEL_LOADING_FAILURE: ...` or
`OOM: ...`. The other patterns catch what a worker, torch or an engine library
writes before that line, or instead of it when the process dies first.
"""

from __future__ import annotations

import re

__all__ = ["CODE_LINE", "LOAD_FAILURE_PATTERN", "LOG_PATTERNS", "OOM_PATTERN"]

CODE_LINE = re.compile(r"^(MODEL_LOADING_FAILURE|OOM):")
OOM_PATTERN = re.compile(
    r"out of memory|OutOfMemoryError|\bMemoryError\b|Cannot allocate memory|std::bad_alloc|^OOM:",
    re.IGNORECASE | re.MULTILINE,
)
LOAD_FAILURE_PATTERN = re.compile(
    r"ModelLoadError|failed to load|could not load|no file named|does not appear to have a file|"
    r"Unrecognized model|^MODEL_LOADING_FAILURE:",
    re.IGNORECASE | re.MULTILINE,
)
CUDA_ERROR_PATTERN = re.compile(
    r"CUDA error|cudaError|CUDA driver|no CUDA-capable device|CUBLAS_STATUS|cuDNN error|NCCL error|"
    r"device-side assert",
    re.IGNORECASE,
)
# A Python traceback, a fatal signal, or the platform's note that a worker exited with a nonzero code.
CRASH_PATTERN = re.compile(
    r"Traceback \(most recent call last\)|Segmentation fault|core dumped|Fatal Python error|"
    r"worker exited with code -?[1-9]\d*"
)
PORT_CONFLICT_PATTERN = re.compile(r"address already in use", re.IGNORECASE)

# Pattern names as `GET /serving/deployment/{id}/logs/patterns` reports them.
LOG_PATTERNS: dict[str, re.Pattern[str]] = {
    "oom": OOM_PATTERN,
    "cuda_error": CUDA_ERROR_PATTERN,
    "model_loading_failure": LOAD_FAILURE_PATTERN,
    "crash": CRASH_PATTERN,
    "port_conflict": PORT_CONFLICT_PATTERN,
}
