"""Parameter counts from config.json alone: real published configs, and models built by transformers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kamiwaza_mcp.local.catalog import read_model_config
from kamiwaza_mcp.local.param_count import FAMILIES, count_parameters

# The architecture keys of each publisher's config.json, as published on the Hugging Face Hub.
LLAMA_1 = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000,
           "max_position_embeddings": 2048, "rms_norm_eps": 1e-06, "torch_dtype": "float16"}  # fmt: skip
LLAMA_2 = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000,
           "max_position_embeddings": 4096, "rms_norm_eps": 1e-05, "tie_word_embeddings": False,
           "torch_dtype": "float16"}  # fmt: skip
LLAMA_3 = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256,
           "hidden_act": "silu", "rope_theta": 500000.0, "tie_word_embeddings": False,
           "torch_dtype": "bfloat16"}  # fmt: skip

REAL_CONFIGS: dict[str, dict[str, Any]] = {
    "huggyllama/llama-7b": {**LLAMA_1, "hidden_size": 4096, "intermediate_size": 11008,
                            "num_attention_heads": 32, "num_hidden_layers": 32},
    "huggyllama/llama-13b": {**LLAMA_1, "hidden_size": 5120, "intermediate_size": 13824,
                             "num_attention_heads": 40, "num_hidden_layers": 40},
    "huggyllama/llama-30b": {**LLAMA_1, "hidden_size": 6656, "intermediate_size": 17920,
                             "num_attention_heads": 52, "num_hidden_layers": 60},
    "huggyllama/llama-65b": {**LLAMA_1, "hidden_size": 8192, "intermediate_size": 22016,
                             "num_attention_heads": 64, "num_hidden_layers": 80},
    "meta-llama/Llama-2-7b-hf": {**LLAMA_2, "hidden_size": 4096, "intermediate_size": 11008,
                                 "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32},
    "meta-llama/Llama-2-13b-hf": {**LLAMA_2, "hidden_size": 5120, "intermediate_size": 13824,
                                  "num_attention_heads": 40, "num_hidden_layers": 40, "num_key_value_heads": 40},
    "meta-llama/Llama-2-70b-hf": {**LLAMA_2, "hidden_size": 8192, "intermediate_size": 28672,
                                  "num_attention_heads": 64, "num_hidden_layers": 80, "num_key_value_heads": 8},
    "meta-llama/Meta-Llama-3-8B": {**LLAMA_3, "hidden_size": 4096, "intermediate_size": 14336,
                                   "max_position_embeddings": 8192, "num_attention_heads": 32,
                                   "num_hidden_layers": 32, "num_key_value_heads": 8},
    "meta-llama/Meta-Llama-3-70B": {**LLAMA_3, "hidden_size": 8192, "intermediate_size": 28672,
                                    "max_position_embeddings": 8192, "num_attention_heads": 64,
                                    "num_hidden_layers": 80, "num_key_value_heads": 8},
    "meta-llama/Llama-3.2-1B": {**LLAMA_3, "hidden_size": 2048, "intermediate_size": 8192, "head_dim": 64,
                                "max_position_embeddings": 131072, "num_attention_heads": 32,
                                "num_hidden_layers": 16, "num_key_value_heads": 8, "tie_word_embeddings": True},
    "meta-llama/Llama-3.2-3B": {**LLAMA_3, "hidden_size": 3072, "intermediate_size": 8192, "head_dim": 128,
                                "max_position_embeddings": 131072, "num_attention_heads": 24,
                                "num_hidden_layers": 28, "num_key_value_heads": 8, "tie_word_embeddings": True},
    "mistralai/Mistral-7B-v0.1": {"architectures": ["MistralForCausalLM"], "model_type": "mistral",
                                  "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
                                  "max_position_embeddings": 32768, "num_attention_heads": 32,
                                  "num_hidden_layers": 32, "num_key_value_heads": 8, "sliding_window": 4096,
                                  "tie_word_embeddings": False, "torch_dtype": "bfloat16"},
    "mistralai/Mistral-7B-v0.3": {"architectures": ["MistralForCausalLM"], "model_type": "mistral",
                                  "vocab_size": 32768, "hidden_size": 4096, "intermediate_size": 14336,
                                  "max_position_embeddings": 32768, "num_attention_heads": 32,
                                  "num_hidden_layers": 32, "num_key_value_heads": 8, "sliding_window": None,
                                  "tie_word_embeddings": False, "torch_dtype": "bfloat16"},
    "mistralai/Mixtral-8x7B-v0.1": {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
                                    "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
                                    "max_position_embeddings": 32768, "num_attention_heads": 32,
                                    "num_hidden_layers": 32, "num_key_value_heads": 8, "num_local_experts": 8,
                                    "num_experts_per_tok": 2, "tie_word_embeddings": False,
                                    "torch_dtype": "bfloat16"},
    "mistralai/Mixtral-8x22B-v0.1": {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
                                     "vocab_size": 32768, "hidden_size": 6144, "intermediate_size": 16384,
                                     "max_position_embeddings": 65536, "num_attention_heads": 48,
                                     "num_hidden_layers": 56, "num_key_value_heads": 8, "num_local_experts": 8,
                                     "num_experts_per_tok": 2, "tie_word_embeddings": False,
                                     "torch_dtype": "bfloat16"},
    "Qwen/Qwen2.5-0.5B": {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 151936,
                          "hidden_size": 896, "intermediate_size": 4864, "max_position_embeddings": 32768,
                          "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
                          "tie_word_embeddings": True, "torch_dtype": "bfloat16"},
    "Qwen/Qwen2.5-7B": {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 152064,
                        "hidden_size": 3584, "intermediate_size": 18944, "max_position_embeddings": 131072,
                        "num_attention_heads": 28, "num_hidden_layers": 28, "num_key_value_heads": 4,
                        "tie_word_embeddings": False, "torch_dtype": "bfloat16"},
    "Qwen/Qwen3-0.6B": {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 151936,
                        "hidden_size": 1024, "intermediate_size": 3072, "head_dim": 128,
                        "max_position_embeddings": 40960, "num_attention_heads": 16, "num_hidden_layers": 28,
                        "num_key_value_heads": 8, "attention_bias": False, "tie_word_embeddings": True,
                        "torch_dtype": "bfloat16"},
    "Qwen/Qwen1.5-MoE-A2.7B": {"architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe",
                               "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 5632,
                               "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632,
                               "num_experts": 60, "num_experts_per_tok": 4, "decoder_sparse_step": 1,
                               "max_position_embeddings": 8192, "num_attention_heads": 16,
                               "num_hidden_layers": 24, "num_key_value_heads": 16, "tie_word_embeddings": False,
                               "torch_dtype": "bfloat16"},
    "Qwen/Qwen3-30B-A3B": {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
                           "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 6144,
                           "moe_intermediate_size": 768, "num_experts": 128, "num_experts_per_tok": 8,
                           "decoder_sparse_step": 1, "mlp_only_layers": [], "head_dim": 128,
                           "max_position_embeddings": 40960, "num_attention_heads": 32, "num_hidden_layers": 48,
                           "num_key_value_heads": 4, "attention_bias": False, "tie_word_embeddings": False,
                           "torch_dtype": "bfloat16"},
    # Gemma configs do not state tie_word_embeddings; the Gemma classes tie by default.
    "google/gemma-2b": {"architectures": ["GemmaForCausalLM"], "model_type": "gemma", "vocab_size": 256000,
                        "hidden_size": 2048, "intermediate_size": 16384, "head_dim": 256,
                        "max_position_embeddings": 8192, "num_attention_heads": 8, "num_hidden_layers": 18,
                        "num_key_value_heads": 1, "torch_dtype": "bfloat16"},
    "google/gemma-7b": {"architectures": ["GemmaForCausalLM"], "model_type": "gemma", "vocab_size": 256000,
                        "hidden_size": 3072, "intermediate_size": 24576, "head_dim": 256,
                        "max_position_embeddings": 8192, "num_attention_heads": 16, "num_hidden_layers": 28,
                        "num_key_value_heads": 16, "torch_dtype": "bfloat16"},
    "google/gemma-2-2b": {"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "vocab_size": 256000,
                          "hidden_size": 2304, "intermediate_size": 9216, "head_dim": 256,
                          "max_position_embeddings": 8192, "num_attention_heads": 8, "num_hidden_layers": 26,
                          "num_key_value_heads": 4, "torch_dtype": "float32"},
    "google/gemma-2-9b": {"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "vocab_size": 256000,
                          "hidden_size": 3584, "intermediate_size": 14336, "head_dim": 256,
                          "max_position_embeddings": 8192, "num_attention_heads": 16, "num_hidden_layers": 42,
                          "num_key_value_heads": 8, "torch_dtype": "float32"},
    "google/gemma-2-27b": {"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "vocab_size": 256000,
                           "hidden_size": 4608, "intermediate_size": 36864, "head_dim": 128,
                           "max_position_embeddings": 8192, "num_attention_heads": 32, "num_hidden_layers": 46,
                           "num_key_value_heads": 16, "torch_dtype": "float32"},
    "microsoft/Phi-3-mini-4k-instruct": {"architectures": ["Phi3ForCausalLM"], "model_type": "phi3",
                                         "vocab_size": 32064, "hidden_size": 3072, "intermediate_size": 8192,
                                         "max_position_embeddings": 4096, "num_attention_heads": 32,
                                         "num_hidden_layers": 32, "num_key_value_heads": 32,
                                         "tie_word_embeddings": False, "torch_dtype": "bfloat16"},
    "microsoft/Phi-3-medium-4k-instruct": {"architectures": ["Phi3ForCausalLM"], "model_type": "phi3",
                                           "vocab_size": 32064, "hidden_size": 5120, "intermediate_size": 17920,
                                           "max_position_embeddings": 4096, "num_attention_heads": 40,
                                           "num_hidden_layers": 40, "num_key_value_heads": 10,
                                           "tie_word_embeddings": False, "torch_dtype": "bfloat16"},
}  # fmt: skip

# Parameter totals the publishers state. The exact ones are the totals of the publishers'
# safetensors uploads on the Hugging Face Hub. The figures were written down from memory,
# not fetched, and every one of them equals the count derived from its config by hand.
EXACT_TOTALS = {
    "meta-llama/Llama-2-7b-hf": 6_738_415_616,
    "meta-llama/Llama-2-13b-hf": 13_015_864_320,
    "meta-llama/Llama-2-70b-hf": 68_976_648_192,
    "meta-llama/Meta-Llama-3-8B": 8_030_261_248,
    "meta-llama/Meta-Llama-3-70B": 70_553_706_496,
    "meta-llama/Llama-3.2-1B": 1_235_814_400,
    "meta-llama/Llama-3.2-3B": 3_212_749_824,
    "mistralai/Mistral-7B-v0.1": 7_241_732_096,
    "mistralai/Mistral-7B-v0.3": 7_248_023_552,
    "mistralai/Mixtral-8x7B-v0.1": 46_702_792_704,
    "Qwen/Qwen2.5-0.5B": 494_032_768,
    "Qwen/Qwen2.5-7B": 7_615_616_512,
    "google/gemma-2b": 2_506_172_416,
    "google/gemma-7b": 8_537_680_896,
    "google/gemma-2-2b": 2_614_341_888,
    "google/gemma-2-9b": 9_241_705_984,
    "google/gemma-2-27b": 27_227_128_320,
    "microsoft/Phi-3-mini-4k-instruct": 3_821_079_552,
}
# Non-embedding counts in the Gemma and Gemma 2 technical reports' model tables (their
# embedding counts use a padded vocabulary, so only these are compared).
EXACT_NON_EMBEDDING = {
    "google/gemma-2b": 1_981_884_416,
    "google/gemma-7b": 7_751_248_896,
    "google/gemma-2-2b": 2_024_517_888,
    "google/gemma-2-9b": 8_324_201_984,
    "google/gemma-2-27b": 26_047_480_320,
}
# Rounded sizes in billions: the LLaMA paper's model table, the Qwen model cards
# ("Number of Parameters", "Non-Embedding"), Mistral's Mixtral 8x22B announcement and the
# Phi-3 model card. The LLaMA paper truncates (65.29 B is given as 65.2 B), so a count
# must be within one unit of the last stated digit.
ROUNDED_TOTALS = {
    "huggyllama/llama-7b": "6.7",
    "huggyllama/llama-13b": "13.0",
    "huggyllama/llama-30b": "32.5",
    "huggyllama/llama-65b": "65.2",
    "Qwen/Qwen2.5-0.5B": "0.49",
    "Qwen/Qwen2.5-7B": "7.61",
    "Qwen/Qwen3-0.6B": "0.6",
    "Qwen/Qwen1.5-MoE-A2.7B": "14.3",
    "Qwen/Qwen3-30B-A3B": "30.5",
    "mistralai/Mixtral-8x22B-v0.1": "141",
    "microsoft/Phi-3-medium-4k-instruct": "14",
}
ROUNDED_NON_EMBEDDING = {
    "Qwen/Qwen2.5-0.5B": "0.36",
    "Qwen/Qwen2.5-7B": "6.53",
    "Qwen/Qwen3-0.6B": "0.44",
    "Qwen/Qwen3-30B-A3B": "29.9",
}


def _within_stated(count: int, stated: str) -> bool:
    """Check a count against a size in billions, allowing one unit of its last digit."""
    decimals = len(stated.partition(".")[2])
    unit = 10 ** (9 - decimals)
    return abs(count - round(float(stated) * 10**9)) < unit


@pytest.mark.parametrize("repo", sorted(EXACT_TOTALS))
def test_real_config_exact_total(repo: str) -> None:
    assert count_parameters(REAL_CONFIGS[repo]).total == EXACT_TOTALS[repo]


@pytest.mark.parametrize("repo", sorted(EXACT_NON_EMBEDDING))
def test_gemma_non_embedding_exact(repo: str) -> None:
    assert count_parameters(REAL_CONFIGS[repo]).non_embedding == EXACT_NON_EMBEDDING[repo]


@pytest.mark.parametrize("repo", sorted(ROUNDED_TOTALS))
def test_real_config_rounded_total(repo: str) -> None:
    count = count_parameters(REAL_CONFIGS[repo]).total

    assert _within_stated(count, ROUNDED_TOTALS[repo]), f"{repo}: {count:,} vs {ROUNDED_TOTALS[repo]} B"


@pytest.mark.parametrize("repo", sorted(ROUNDED_NON_EMBEDDING))
def test_real_config_rounded_non_embedding(repo: str) -> None:
    count = count_parameters(REAL_CONFIGS[repo]).non_embedding

    assert _within_stated(count, ROUNDED_NON_EMBEDDING[repo]), f"{repo}: {count:,}"


def test_every_family_has_a_real_config() -> None:
    covered = {config["model_type"] for config in REAL_CONFIGS.values()}

    assert covered == set(FAMILIES) - {"gemma3_text"}


def test_gemma_ties_by_default() -> None:
    config = REAL_CONFIGS["google/gemma-2b"]
    untied = count_parameters({**config, "tie_word_embeddings": False})

    assert untied.total - count_parameters(config).total == 256000 * 2048


def test_unknown_moe_type_rejected() -> None:
    config = {**REAL_CONFIGS["mistralai/Mixtral-8x7B-v0.1"], "model_type": "deepseek_v3"}

    with pytest.raises(ValueError, match="deepseek_v3"):
        count_parameters(config)


def test_multimodal_counts_text_config() -> None:
    wrapped = {"model_type": "llava", "text_config": REAL_CONFIGS["meta-llama/Llama-2-7b-hf"]}

    assert count_parameters(wrapped).total == EXACT_TOTALS["meta-llama/Llama-2-7b-hf"]


# Scaled-down configs of each family, counted by transformers itself on the meta device.

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SMALL = {"vocab_size": 320, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 3,
         "num_attention_heads": 8, "num_key_value_heads": 2}  # fmt: skip

SCALED_DOWN: list[tuple[str, dict[str, Any]]] = [
    ("LlamaConfig", {"head_dim": 16, "attention_bias": True, "mlp_bias": True}),
    ("LlamaConfig", {"tie_word_embeddings": True}),
    ("MistralConfig", {"head_dim": 12}),
    ("Qwen2Config", {"tie_word_embeddings": True}),
    ("Qwen3Config", {"head_dim": 16, "attention_bias": True}),
    ("GemmaConfig", {"head_dim": 32}),
    ("GemmaConfig", {"head_dim": 16, "tie_word_embeddings": False, "attention_bias": True}),
    ("Gemma2Config", {"head_dim": 24}),
    ("Gemma3TextConfig", {"head_dim": 16}),
    ("Phi3Config", {"num_key_value_heads": 4, "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 1}),
    ("MixtralConfig", {"num_local_experts": 4, "num_experts_per_tok": 2}),
    ("Qwen2MoeConfig", {"num_experts": 6, "num_experts_per_tok": 2, "moe_intermediate_size": 40,
                        "shared_expert_intermediate_size": 72, "decoder_sparse_step": 2}),
    ("Qwen2MoeConfig", {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 40,
                        "shared_expert_intermediate_size": 56, "mlp_only_layers": [0], "qkv_bias": False}),
    ("Qwen3MoeConfig", {"num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 24,
                        "head_dim": 16, "mlp_only_layers": [1]}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("config_class", "overrides"),
    SCALED_DOWN,
    ids=[f"{name}-{index}" for index, (name, _) in enumerate(SCALED_DOWN)],
)
def test_count_matches_transformers(tmp_path: Path, config_class: str, overrides: dict[str, Any]) -> None:
    config = getattr(transformers, config_class)(**{**SMALL, **overrides})
    config.save_pretrained(tmp_path)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    expected = sum(parameter.numel() for parameter in model.parameters())

    assert count_parameters(read_model_config(tmp_path)).total == expected


def test_real_config_round_trips_json(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(REAL_CONFIGS["Qwen/Qwen3-30B-A3B"]))

    assert count_parameters(read_model_config(tmp_path)).total == 30_532_122_624
