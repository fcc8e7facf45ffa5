"""An engine that serves a GGUF model with llama.cpp through the llama-cpp-python package.

llama_cpp is imported inside `load`, so importing this module works without the
`llamacpp` extra installed.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

from ..gguf import read_gguf_header
from ..vram import gguf_files
from .base import (
    EngineOutOfMemoryError,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    ModelLoadError,
    PromptTooLongError,
)

__all__ = ["LlamaCppEngine"]

logger = logging.getLogger(__name__)

INSTALL_HINT = "install it with pip install 'kamiwaza-mcp[llamacpp]'"


class LlamaCppEngine:
    """A GGUF model loaded in this process with `llama_cpp.Llama`.

    `model_path` is a GGUF file or a folder that contains one GGUF model (one file or
    its shards). The context length is the one the GGUF metadata states, unless
    `context_length` sets another. With device "auto" or "cuda" every layer is offloaded
    to the GPU when llama.cpp was built with GPU support, and a CPU build ignores that.
    """

    def __init__(self, model_path: Path, *, device: str = "auto", context_length: int | None = None) -> None:
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"invalid device {device!r}; use 'auto', 'cpu' or 'cuda'")
        self.model_path = model_path
        self.device = device
        self._requested_context = context_length
        self._llama: Any = None
        self._gguf_context_length: int | None = None

    @property
    def context_length(self) -> int:
        allocated = int(self._require_llama().n_ctx())
        # llama.cpp may allocate more than requested (with llama-cpp-python 0.3.36 a GGUF
        # context_length of 128 gave n_ctx 256), so the stated length is reported.
        stated = self._requested_context or self._gguf_context_length
        return min(stated, allocated) if stated else allocated

    def load(self) -> None:
        """Load the GGUF model; raise ModelLoadError when the file is missing or llama.cpp rejects it."""
        weights = self._weights_file()
        try:
            stated = read_gguf_header(weights).model_value("context_length")
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{weights} is not a readable GGUF file: {exc}") from exc
        self._gguf_context_length = stated if isinstance(stated, int) and stated > 0 else None

        try:
            llama_cpp = importlib.import_module("llama_cpp")
        except ImportError as exc:
            raise ModelLoadError(
                f"the llamacpp engine needs llama-cpp-python ({exc}); {INSTALL_HINT}"
            ) from exc

        try:
            self._llama = llama_cpp.Llama(
                model_path=str(weights),
                # 0 takes the context length from the GGUF metadata.
                n_ctx=self._requested_context or 0,
                n_gpu_layers=0 if self.device == "cpu" else -1,
                verbose=False,
            )
        except MemoryError as exc:
            raise EngineOutOfMemoryError(f"loading {weights} ran out of memory: {exc}") from exc
        except (ValueError, RuntimeError, OSError) as exc:
            # NOTE: llama-cpp-python 0.3.36 reports every load failure, a failed allocation among
            # them, as ValueError("Failed to load model from file"), so an out-of-memory load is
            # reported as MODEL_LOADING_FAILURE, not OOM.
            raise ModelLoadError(f"llama.cpp failed to load {weights}: {type(exc).__name__}: {exc}") from exc
        logger.info("Loaded %s with llama.cpp (context length %d)", weights, self.context_length)

    def generate(self, request: GenerationRequest) -> GenerationResult:
        """Generate one completion with create_chat_completion or create_completion.

        Raises PromptTooLongError when the prompt fills the context. llama.cpp applies the
        chat template stored in the GGUF file, or its default format when there is none.
        """
        llama = self._require_llama()
        options: dict[str, Any] = {
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            # The OpenAI API has no top_k or min_p, so both filters are off.
            "top_k": 0,
            "min_p": 0.0,
            "stop": list(request.stop),
            "seed": request.seed,
        }
        try:
            if request.messages is not None:
                messages = [{"role": m.role, "content": m.content} for m in request.messages]
                response = llama.create_chat_completion(messages=messages, **options)
                text = response["choices"][0]["message"]["content"] or ""
            else:
                response = llama.create_completion(prompt=request.prompt, **options)
                text = response["choices"][0]["text"]
        except ValueError as exc:
            # llama-cpp-python raises ValueError("Requested tokens (N) exceed context window of M").
            if "exceed context window" in str(exc):
                raise PromptTooLongError(f"{exc}; shorten the prompt") from exc
            raise

        usage = response["usage"]
        finish_reason: FinishReason = (
            "length" if response["choices"][0]["finish_reason"] == "length" else "stop"
        )
        return GenerationResult(
            text=text,
            finish_reason=finish_reason,
            prompt_tokens=int(usage["prompt_tokens"]),
            completion_tokens=int(usage["completion_tokens"]),
        )

    def _weights_file(self) -> Path:
        """Return the GGUF file to load: the path itself, or the first shard in the folder."""
        if self.model_path.is_file():
            return self.model_path
        if not self.model_path.is_dir():
            raise ModelLoadError(f"model path {self.model_path} not found; pass a GGUF file or its folder")
        try:
            # TODO: the worker gets no m_file_id, so a folder with several GGUF models is rejected
            # here even when the deployment chose one of them.
            files = gguf_files(self.model_path)
        except (ValueError, FileNotFoundError) as exc:
            raise ModelLoadError(str(exc)) from exc
        if not files:
            raise ModelLoadError(
                f"model folder {self.model_path} has no .gguf file; the llamacpp engine needs one"
            )
        # llama.cpp opens the other shards itself from the first one's name.
        return files[0]

    def _require_llama(self) -> Any:
        if self._llama is None:
            raise RuntimeError("the engine is not loaded; call load() first")
        return self._llama
