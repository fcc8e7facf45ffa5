"""The interface between the engine worker and an inference engine.

An engine contains one loaded model and generates one request at a time, so the
worker serializes calls to `generate` and runs them off the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

__all__ = [
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
]

FinishReason = Literal["stop", "length"]
Role = Literal["system", "user", "assistant"]


class EngineError(Exception):
    """Base class of the errors an engine raises."""


class ModelLoadError(EngineError):
    """The model folder is missing, incomplete or cannot be loaded by the engine."""


class EngineOutOfMemoryError(EngineError):
    """The device ran out of memory while loading the model or generating."""


class InvalidPromptError(EngineError):
    """The request cannot be turned into a prompt, for example a chat template rejects a role."""


class PromptTooLongError(InvalidPromptError):
    """The prompt leaves no room for a completion within the model's context length."""


@dataclass(frozen=True)
class ChatMessage:
    """One message of a chat conversation."""

    role: Role
    content: str


@dataclass(frozen=True)
class GenerationRequest:
    """One generation: either chat `messages` or a raw `prompt`, never both.

    `temperature` 0 means greedy decoding. `stop` strings end the completion at
    their first occurrence and are not part of the returned text.
    """

    messages: tuple[ChatMessage, ...] | None = None
    prompt: str | None = None
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = field(default_factory=tuple)
    seed: int | None = None

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("a generation request needs exactly one of messages or prompt")
        if self.messages is not None and not self.messages:
            raise ValueError("messages is empty; pass at least one message")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens is {self.max_tokens}; it must be at least 1")
        if self.temperature < 0:
            raise ValueError(f"temperature is {self.temperature}; it must be 0 or more")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p is {self.top_p}; it must be in (0, 1]")
        if any(not s for s in self.stop):
            raise ValueError("stop contains an empty string; remove it")


@dataclass(frozen=True)
class GenerationResult:
    """The completion text and the token counts of one generation."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


class Engine(Protocol):
    """A loaded model that turns generation requests into text.

    `load` raises ModelLoadError or EngineOutOfMemoryError. `generate` raises
    InvalidPromptError (PromptTooLongError among them) or EngineOutOfMemoryError.
    Neither is safe to call from two threads at once.
    """

    @property
    def context_length(self) -> int:
        """The maximum number of tokens of prompt plus completion."""
        ...

    def load(self) -> None: ...

    def generate(self, request: GenerationRequest) -> GenerationResult: ...
