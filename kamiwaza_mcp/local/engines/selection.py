"""Choice of the engine that serves a model, from the request, the model's files and the hardware."""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass

__all__ = [
    "ALL_ENGINE_NAMES",
    "EngineUnavailableError",
    "Hardware",
    "choose_engine",
    "detect_hardware",
]

# Every engine a deployment may name. "vllm" runs vLLM's own server instead of the worker.
ALL_ENGINE_NAMES = ("transformers", "llamacpp", "vllm")

# The module each engine imports, and the pip command that installs it.
_ENGINE_MODULES = {"transformers": "transformers", "llamacpp": "llama_cpp", "vllm": "vllm"}
_INSTALL_COMMANDS = {
    "transformers": "pip install 'kamiwaza-mcp[engine]'",
    "llamacpp": "pip install 'kamiwaza-mcp[llamacpp]'",
    "vllm": "pip install vllm",
}


class EngineUnavailableError(ValueError):
    """The requested engine is unknown, not installed, or cannot serve on this machine."""


@dataclass(frozen=True)
class Hardware:
    """The installed engine packages and whether an NVIDIA GPU is present."""

    installed: frozenset[str]
    nvidia_gpu: bool


def detect_hardware() -> Hardware:
    """Find the installed engine packages and an NVIDIA GPU, without importing any engine.

    An NVIDIA GPU counts as present when `nvidia-smi` is on PATH.
    """
    installed = frozenset(
        name for name, module in _ENGINE_MODULES.items() if importlib.util.find_spec(module) is not None
    )
    return Hardware(installed=installed, nvidia_gpu=shutil.which("nvidia-smi") is not None)


def choose_engine(requested: str | None, *, has_gguf: bool, hardware: Hardware) -> str:
    """Return the engine for a model: `requested` when set, else one chosen by files and hardware.

    Without a request, GGUF files go to llamacpp, and other models go to vllm when
    vLLM and an NVIDIA GPU are present, else to transformers. Raises
    EngineUnavailableError for an unknown requested engine, one whose package is not
    installed, and vllm without an NVIDIA GPU.
    """
    if requested is None:
        if has_gguf:
            return "llamacpp"
        if hardware.nvidia_gpu and "vllm" in hardware.installed:
            return "vllm"
        return "transformers"

    if requested not in ALL_ENGINE_NAMES:
        raise EngineUnavailableError(
            f"engine {requested!r} is not available on the local platform; "
            f"use one of {', '.join(ALL_ENGINE_NAMES)}, or leave engine_name unset"
        )
    if requested not in hardware.installed:
        raise EngineUnavailableError(
            f"engine {requested!r} is not installed; install it with {_INSTALL_COMMANDS[requested]}, "
            "or leave engine_name unset"
        )
    if requested == "vllm" and not hardware.nvidia_gpu:
        raise EngineUnavailableError(
            "engine 'vllm' needs an NVIDIA GPU and none was found (no nvidia-smi on PATH); "
            "leave engine_name unset to use transformers"
        )
    return requested
