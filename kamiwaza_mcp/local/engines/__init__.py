"""Inference engines that the engine worker process can serve a model with."""

from __future__ import annotations

from pathlib import Path

from .base import (
    ChatMessage,
    Engine,
    EngineError,
    EngineOutOfMemoryError,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    InvalidPromptError,
    ModelLoadError,
    PromptTooLongError,
)

__all__ = [
    "ENGINE_NAMES",
    "ChatMessage",
    "Engine",
    "EngineError",
    "EngineOutOfMemoryError",
    "FinishReason",
    "GenerationRequest",
    "GenerationResult",
    "InvalidPromptError",
    "ModelLoadError",
    "PromptTooLongError",
    "create_engine",
]

# Engines that the worker process runs in-process; "vllm" runs its own server instead.
ENGINE_NAMES = ("transformers", "llamacpp")


def create_engine(name: str, model_path: Path, *, device: str = "auto") -> Engine:
    """Create an unloaded engine by name; call `load()` on it before generating.

    `device` is "auto", "cpu" or "cuda". Raises ValueError for an unknown engine name.
    """
    if name == "transformers":
        from .transformers_engine import TransformersEngine

        return TransformersEngine(model_path, device=device)
    if name == "llamacpp":
        from .llamacpp_engine import LlamaCppEngine

        return LlamaCppEngine(model_path, device=device)
    raise ValueError(f"unknown engine {name!r}; available engines: {', '.join(ENGINE_NAMES)}")
