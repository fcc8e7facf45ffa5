"""Tests of the transformers engine and of the tiny model it serves in tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kamiwaza_mcp.local.engines import (
    ChatMessage,
    GenerationRequest,
    InvalidPromptError,
    ModelLoadError,
    PromptTooLongError,
    create_engine,
)
from kamiwaza_mcp.local.engines.transformers_engine import TransformersEngine, format_chat_fallback

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

HELLO = (ChatMessage(role="user", content="hello there"),)


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> TransformersEngine:
    loaded = TransformersEngine(tiny_model_dir, device="cpu")
    loaded.load()
    return loaded


def _token_count(model_dir: Path, text: str, *, add_special_tokens: bool) -> int:
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    return len(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])


# Tiny model


def test_tiny_model_shape(tiny_model_dir: Path) -> None:
    config = transformers.AutoConfig.from_pretrained(tiny_model_dir, local_files_only=True)

    assert config.model_type == "llama"
    assert config.hidden_size == 64
    assert config.num_hidden_layers == 2
    assert config.num_attention_heads == 4
    assert config.num_key_value_heads == 2
    assert config.vocab_size == 512
    assert config.max_position_embeddings == 512
    assert config.tie_word_embeddings is False


def test_tiny_model_special_rows_zero(tiny_model_dir: Path) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir, local_files_only=True)
    special_ids = tokenizer.convert_tokens_to_ids(["<s>", "</s>", "<unk>", "<pad>"])

    assert tokenizer.bos_token == "<s>"
    assert tokenizer.eos_token == "</s>"
    assert tokenizer.pad_token == "<pad>"
    assert tokenizer.chat_template
    assert torch.count_nonzero(model.lm_head.weight[special_ids]) == 0
    assert torch.count_nonzero(model.lm_head.weight) > 0


def test_tiny_model_same_seed_same_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    from kamiwaza_mcp.local.tiny_model import create_tiny_model

    again = create_tiny_model(tmp_path / "again", seed=0)
    other = create_tiny_model(tmp_path / "other", seed=1)

    original = (tiny_model_dir / "model.safetensors").read_bytes()
    assert (again / "model.safetensors").read_bytes() == original
    assert (other / "model.safetensors").read_bytes() != original


# Generation


def test_generate_chat_greedy(engine: TransformersEngine, tiny_model_dir: Path) -> None:
    result = engine.generate(GenerationRequest(messages=HELLO, max_tokens=12, temperature=0))
    templated = engine.format_chat(HELLO)

    assert result.text.strip()
    assert result.finish_reason == "length"
    assert result.completion_tokens == 12
    assert result.prompt_tokens == _token_count(tiny_model_dir, templated, add_special_tokens=False)


def test_generate_prompt_counts_bos(engine: TransformersEngine, tiny_model_dir: Path) -> None:
    result = engine.generate(GenerationRequest(prompt="The river runs", max_tokens=5, temperature=0))

    assert result.text
    assert result.prompt_tokens == _token_count(tiny_model_dir, "The river runs", add_special_tokens=True)
    assert result.completion_tokens == 5


def test_chat_template_used(engine: TransformersEngine) -> None:
    conversation = (ChatMessage("system", "be brief"), ChatMessage("user", "hi"))
    rendered = engine.format_chat(conversation)

    assert engine.has_chat_template
    assert rendered == "<s><|system|>\nbe brief</s>\n<|user|>\nhi</s>\n<|assistant|>\n"


def test_chat_fallback_without_template(tiny_model_dir: Path, tmp_path: Path) -> None:
    plain = shutil.copytree(tiny_model_dir, tmp_path / "no-template")
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    tokenizer_config = json.loads((plain / "tokenizer_config.json").read_text())
    tokenizer_config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    fallback = TransformersEngine(plain, device="cpu")
    fallback.load()

    result = fallback.generate(GenerationRequest(messages=HELLO, max_tokens=3, temperature=0))

    assert not fallback.has_chat_template
    assert fallback.format_chat(HELLO) == "user: hello there\nassistant:"
    assert format_chat_fallback(HELLO) == "user: hello there\nassistant:"
    assert result.prompt_tokens == _token_count(
        plain, "user: hello there\nassistant:", add_special_tokens=True
    )


def test_chat_template_rejection(tiny_model_dir: Path, tmp_path: Path) -> None:
    strict = shutil.copytree(tiny_model_dir, tmp_path / "no-system-role")
    template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}{{ m['content'] }}{% endfor %}"
    )
    (strict / "chat_template.jinja").write_text(template)
    engine = TransformersEngine(strict, device="cpu")
    engine.load()
    conversation = (ChatMessage("system", "be brief"), ChatMessage("user", "hi"))

    with pytest.raises(InvalidPromptError, match="System role not supported"):
        engine.generate(GenerationRequest(messages=conversation, max_tokens=2))


def test_stop_string_cuts_text(engine: TransformersEngine) -> None:
    full = engine.generate(GenerationRequest(prompt="The library", max_tokens=30, temperature=0)).text
    # The first character that has not appeared before position 3 stops the text exactly there.
    position = next(i for i in range(3, len(full)) if full[i] not in full[:i] and not full[i].isspace())
    stop = full[position]

    result = engine.generate(
        GenerationRequest(prompt="The library", max_tokens=30, temperature=0, stop=(stop,))
    )

    assert result.text == full[:position]
    assert result.finish_reason == "stop"
    assert result.completion_tokens < 30


def test_seed_reproducible(engine: TransformersEngine) -> None:
    request = GenerationRequest(messages=HELLO, max_tokens=20, temperature=1.0, seed=1234)

    first = engine.generate(request)
    second = engine.generate(request)

    assert first == second


def test_different_seeds_differ(engine: TransformersEngine) -> None:
    texts = {
        engine.generate(GenerationRequest(messages=HELLO, max_tokens=20, temperature=1.0, seed=seed)).text
        for seed in range(3)
    }

    assert len(texts) > 1


def test_prompt_too_long(engine: TransformersEngine) -> None:
    with pytest.raises(PromptTooLongError, match="context length is 512"):
        engine.generate(GenerationRequest(prompt="word " * 600, max_tokens=4))


def test_max_tokens_capped_by_context(engine: TransformersEngine) -> None:
    result = engine.generate(GenerationRequest(prompt="the " * 250, max_tokens=500, temperature=0))

    assert result.prompt_tokens + result.completion_tokens <= 512
    assert result.finish_reason == "length"


# Loading and requests


def test_load_missing_folder(tmp_path: Path) -> None:
    engine = create_engine("transformers", tmp_path / "absent")

    with pytest.raises(ModelLoadError, match="not found"):
        engine.load()


def test_load_folder_without_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    shutil.copy(tiny_model_dir / "config.json", tmp_path / "config.json")
    engine = create_engine("transformers", tmp_path)

    with pytest.raises(ModelLoadError, match="failed to load"):
        engine.load()


def test_create_engine_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown engine 'vllm'"):
        create_engine("vllm", tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of messages or prompt"),
        ({"prompt": "a", "messages": HELLO}, "exactly one of messages or prompt"),
        ({"messages": ()}, "messages is empty"),
        ({"prompt": "a", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "a", "temperature": -1}, "temperature"),
        ({"prompt": "a", "top_p": 0}, "top_p"),
        ({"prompt": "a", "stop": ("",)}, "empty string"),
    ],
    ids=["neither", "both", "no-messages", "max-tokens", "temperature", "top-p", "empty-stop"],
)
def test_generation_request_invalid(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GenerationRequest(**kwargs)  # type: ignore[arg-type]
