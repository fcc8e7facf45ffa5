"""An engine that serves a Hugging Face causal language model with transformers.

torch and transformers are imported inside `load`, so importing this module is
cheap and works without the `engine` extra installed.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

from .base import (
    ChatMessage,
    EngineOutOfMemoryError,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    InvalidPromptError,
    ModelLoadError,
    PromptTooLongError,
)

__all__ = ["TransformersEngine", "format_chat_fallback"]

logger = logging.getLogger(__name__)

# strerror of ENOMEM on Linux and macOS.
_ENOMEM_MESSAGE = "Cannot allocate memory"

# Used only when neither the model config nor the tokenizer states a context length.
# NOTE: 2048 is an assumption, not read from the model; such a model may accept more or fewer tokens.
_FALLBACK_CONTEXT_LENGTH = 2048
# Tokenizers without a configured limit report this huge sentinel as model_max_length.
_UNSET_MODEL_MAX_LENGTH = 10**9


def format_chat_fallback(messages: tuple[ChatMessage, ...]) -> str:
    """Join messages as `role: content` lines and end with an open `assistant:` turn.

    Used for tokenizers that have no chat template.
    """
    lines = [f"{message.role}: {message.content}" for message in messages]
    lines.append("assistant:")
    return "\n".join(lines)


class TransformersEngine:
    """A causal LM loaded from a local folder with AutoTokenizer and AutoModelForCausalLM.

    The model loads in float32 on CPU, or in float16 on CUDA when torch has a CUDA device and
    `device` is not "cpu". Nothing is downloaded: loading uses local files only.
    """

    def __init__(self, model_path: Path, *, device: str = "auto") -> None:
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"invalid device {device!r}; use 'auto', 'cpu' or 'cuda'")
        self.model_path = model_path
        self._requested_device = device
        self.device = "cpu"
        self._model: Any = None
        self._tokenizer: Any = None
        self._context_length = _FALLBACK_CONTEXT_LENGTH
        self._eos_token_ids: list[int] = []
        self._pad_token_id: int | None = None

    @property
    def context_length(self) -> int:
        return self._context_length

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self._require_tokenizer(), "chat_template", None))

    def load(self) -> None:
        """Load the tokenizer and the model onto the device.

        Raises ModelLoadError when the folder is missing or unusable, and
        EngineOutOfMemoryError when the weights do not fit.
        """
        if not self.model_path.is_dir():
            raise ModelLoadError(f"model folder {self.model_path} not found; pass an existing folder")
        if not (self.model_path / "config.json").is_file():
            raise ModelLoadError(
                f"model folder {self.model_path} has no config.json; it is not a Hugging Face model"
            )

        torch, transformers = _import_libraries()
        self.device = self._pick_device(torch)
        # NOTE: the CUDA path (float16, empty_cache after OOM) has not been run; the tests use CPU.
        dtype = torch.float16 if self.device == "cuda" else torch.float32
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
            model = transformers.AutoModelForCausalLM.from_pretrained(
                self.model_path, local_files_only=True, **_dtype_argument(transformers.__version__, dtype)
            )
            model.to(self.device)
        except (torch.OutOfMemoryError, MemoryError) as exc:
            raise EngineOutOfMemoryError(
                f"loading {self.model_path} on {self.device} ran out of memory: {exc}"
            ) from exc
        except Exception as exc:
            # A failed mmap of the weights raises RuntimeError or OSError with ENOMEM, which is
            # memory running out, not a broken folder.
            if _ENOMEM_MESSAGE in str(exc):
                raise EngineOutOfMemoryError(
                    f"loading {self.model_path} on {self.device} ran out of memory: {type(exc).__name__}: {exc}"
                ) from exc
            # transformers raises many unrelated types (OSError, ValueError, KeyError,
            # safetensors errors) for a broken folder, so they are reported as one kind.
            raise ModelLoadError(f"failed to load {self.model_path}: {type(exc).__name__}: {exc}") from exc

        model.eval()
        self._model = model
        self._tokenizer = tokenizer
        self._context_length = _context_length_of(model.config, tokenizer)
        self._eos_token_ids = _eos_token_ids_of(model.generation_config, tokenizer)
        # A batch of one needs no padding, so any id works as the pad id; EOS serves when
        # the tokenizer has no pad token.
        pad_token_id = tokenizer.pad_token_id
        self._pad_token_id = (
            pad_token_id if pad_token_id is not None else next(iter(self._eos_token_ids), None)
        )
        logger.info(
            "Loaded %s on %s (%s, context length %d)",
            self.model_path,
            self.device,
            dtype,
            self._context_length,
        )

    def format_chat(self, messages: tuple[ChatMessage, ...]) -> str:
        """Render messages with the tokenizer's chat template, else with `format_chat_fallback`.

        Raises InvalidPromptError when the template rejects the messages.
        """
        tokenizer = self._require_tokenizer()
        if not getattr(tokenizer, "chat_template", None):
            return format_chat_fallback(messages)
        from jinja2 import TemplateError

        conversation = [{"role": m.role, "content": m.content} for m in messages]
        try:
            text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        except TemplateError as exc:
            # Templates reject conversations with raise_exception(), for example a system
            # message on a model without a system role.
            raise InvalidPromptError(f"the model's chat template rejected the messages: {exc}") from exc
        return str(text)

    def generate(self, request: GenerationRequest) -> GenerationResult:
        """Generate one completion.

        Raises InvalidPromptError when the messages cannot be rendered or the
        prompt fills the context (PromptTooLongError), and
        EngineOutOfMemoryError when the device runs out of memory.
        """
        torch, transformers = _import_libraries()
        input_ids = self._encode(request)
        prompt_tokens = int(input_ids.shape[-1])
        room = self._context_length - prompt_tokens
        if room < 1:
            raise PromptTooLongError(
                f"the prompt has {prompt_tokens} tokens and the model's context length is "
                f"{self._context_length}; shorten the prompt"
            )
        max_new_tokens = min(request.max_tokens, room)

        try:
            new_ids = self._run_generate(torch, transformers, input_ids, request, max_new_tokens)
        except (torch.OutOfMemoryError, MemoryError) as exc:
            if self.device == "cuda":
                torch.cuda.empty_cache()
            raise EngineOutOfMemoryError(f"generation ran out of memory on {self.device}: {exc}") from exc

        text = self._require_tokenizer().decode(new_ids, skip_special_tokens=True)
        text, finish_reason = self._finish(text, new_ids, request.stop, max_new_tokens)
        return GenerationResult(
            text=text,
            finish_reason=finish_reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(new_ids),
        )

    def _pick_device(self, torch: Any) -> str:
        has_cuda = bool(torch.cuda.is_available())
        if self._requested_device == "cuda" and not has_cuda:
            raise ModelLoadError(
                "device 'cuda' was requested but torch has no CUDA device; use device 'auto' or 'cpu'"
            )
        if self._requested_device == "auto":
            return "cuda" if has_cuda else "cpu"
        return self._requested_device

    def _require_tokenizer(self) -> Any:
        if self._tokenizer is None:
            raise RuntimeError("the engine is not loaded; call load() first")
        return self._tokenizer

    def _encode(self, request: GenerationRequest) -> Any:
        tokenizer = self._require_tokenizer()
        if request.messages is None:
            assert request.prompt is not None  # GenerationRequest enforces one of the two
            text, add_special_tokens = request.prompt, True
        elif getattr(tokenizer, "chat_template", None):
            # Chat templates write their own BOS token, so the tokenizer must not add a second one.
            text, add_special_tokens = self.format_chat(request.messages), False
        else:
            text, add_special_tokens = format_chat_fallback(request.messages), True
        encoded = tokenizer(text, return_tensors="pt", add_special_tokens=add_special_tokens)
        return encoded["input_ids"].to(self.device)

    def _run_generate(
        self, torch: Any, transformers: Any, input_ids: Any, request: GenerationRequest, max_new_tokens: int
    ) -> list[int]:
        model = self._model
        # A fresh config, so the folder's generation_config.json (for example a default
        # temperature or repetition penalty) does not change the caller's sampling settings.
        options: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "eos_token_id": self._eos_token_ids,
            "pad_token_id": self._pad_token_id,
            "do_sample": request.temperature > 0,
        }
        if request.temperature > 0:
            # top_k 0 turns top-k filtering off, as the OpenAI API has no top_k.
            options.update(temperature=request.temperature, top_p=request.top_p, top_k=0)
        if request.stop:
            options["stop_strings"] = list(request.stop)
        config = transformers.GenerationConfig(**options)

        if request.seed is not None:
            # This seeds the global generators of the CPU and every CUDA device. The worker
            # runs one generation at a time, so no other request draws from them meanwhile.
            torch.manual_seed(request.seed)

        attention_mask = torch.ones_like(input_ids)
        extra = {"tokenizer": self._tokenizer} if request.stop else {}
        with torch.inference_mode():
            output = model.generate(
                input_ids=input_ids, attention_mask=attention_mask, generation_config=config, **extra
            )
        return [int(token) for token in output[0, input_ids.shape[-1] :].tolist()]

    def _finish(
        self, text: str, new_ids: list[int], stop: tuple[str, ...], max_new_tokens: int
    ) -> tuple[str, FinishReason]:
        cut = min((index for s in stop if (index := text.find(s)) != -1), default=-1)
        if cut != -1:
            return text[:cut], "stop"
        if new_ids and new_ids[-1] in self._eos_token_ids:
            return text, "stop"
        # Fewer tokens than allowed and no EOS means a stopping criterion ended generation,
        # such as a stop string that spans the end of the prompt.
        finish_reason: FinishReason = "length" if len(new_ids) >= max_new_tokens else "stop"
        return text, finish_reason


def _import_libraries() -> tuple[Any, Any]:
    """Import torch and transformers, typed as Any because their stubs are partial."""
    try:
        torch = importlib.import_module("torch")
        transformers = importlib.import_module("transformers")
    except ImportError as exc:
        raise ModelLoadError(
            f"the transformers engine needs torch and transformers ({exc}); "
            "install them with pip install 'kamiwaza-mcp[engine]'"
        ) from exc
    return torch, transformers


def _dtype_argument(version: str, dtype: Any) -> dict[str, Any]:
    """Return the keyword argument that passes `dtype` to `from_pretrained` in this transformers release.

    transformers 5 takes `dtype` and logs a deprecation warning for `torch_dtype`,
    the name that every 4.x release accepts.
    """
    major = int(version.split(".")[0])
    if major >= 5:
        return {"dtype": dtype}
    # NOTE: this branch for transformers 4.x has not been run; the tests use 5.x.
    return {"torch_dtype": dtype}


def _eos_token_ids_of(generation_config: Any, tokenizer: Any) -> list[int]:
    """Return the ids that end generation: the generation config's, else the tokenizer's EOS."""
    eos = generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return []
    return [int(token) for token in eos] if isinstance(eos, list) else [int(eos)]


def _context_length_of(config: Any, tokenizer: Any) -> int:
    text_config = getattr(config, "text_config", None) or config
    for source in (config, text_config):
        value = getattr(source, "max_position_embeddings", None)
        if isinstance(value, int) and value > 0:
            return value
    model_max_length = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max_length, int) and 0 < model_max_length < _UNSET_MODEL_MAX_LENGTH:
        return model_max_length
    logger.warning(
        "No context length in the config or tokenizer; assuming %d tokens", _FALLBACK_CONTEXT_LENGTH
    )
    return _FALLBACK_CONTEXT_LENGTH
