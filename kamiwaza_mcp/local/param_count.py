"""Exact parameter counts of decoder-only language models from config.json alone.

Each supported `model_type` maps to the layer layout of its transformers class, as
read from transformers 5.25. The layout names which projections carry biases, how
many RMSNorm weights a layer has, whether the embeddings are tied by default and
the default `head_dim`. For mixture-of-experts models it adds the experts, shared
experts and router. Phi-3's fused `qkv_proj` and `gate_up_proj` hold exactly the weights of
separate q/k/v and gate/up projections, so they count the same.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from .catalog import text_config_of

__all__ = ["FAMILIES", "ParameterCount", "attention_shape", "count_parameters", "positive_int"]

logger = logging.getLogger(__name__)

# The attention projections (q/k/v/o) that carry a bias. "none" means none of them, and
# "qkv" means q, k and v always (Qwen2). "qkv_flag" means q, k and v when the config's `qkv_bias` is true
# (Qwen2-MoE, default true), and "attention_bias" means all four when `attention_bias` is true.
BiasRule = Literal["none", "qkv", "qkv_flag", "attention_bias"]
MoeKind = Literal["dense", "mixtral", "qwen2_moe", "qwen3_moe"]


@dataclass(frozen=True)
class Family:
    """The layer layout of one `model_type`, with the defaults of its transformers config class."""

    bias: BiasRule = "attention_bias"
    tied_default: bool = False
    head_dim_default: int | None = None
    norms_per_layer: int = 2
    qk_norm: bool = False
    mlp_bias_flag: bool = False
    moe: MoeKind = "dense"


FAMILIES: dict[str, Family] = {
    "llama": Family(mlp_bias_flag=True),
    "mistral": Family(bias="none"),
    "qwen2": Family(bias="qkv"),
    "qwen3": Family(head_dim_default=128, qk_norm=True),
    "gemma": Family(tied_default=True, head_dim_default=256),
    "gemma2": Family(tied_default=True, head_dim_default=256, norms_per_layer=4),
    "gemma3_text": Family(tied_default=True, head_dim_default=256, norms_per_layer=4, qk_norm=True),
    "phi3": Family(bias="none"),
    "mixtral": Family(bias="none", moe="mixtral"),
    "qwen2_moe": Family(bias="qkv_flag", moe="qwen2_moe"),
    "qwen3_moe": Family(head_dim_default=128, qk_norm=True, moe="qwen3_moe"),
}
# Defaults of the mixture-of-experts config classes for keys a config.json may leave out.
_MOE_DEFAULTS: dict[str, dict[str, Any]] = {
    "mixtral": {"experts": 8},
    "qwen2_moe": {"experts": 60, "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632},
    "qwen3_moe": {"experts": 128, "moe_intermediate_size": 768},
}
# The expert count's key differs between publishers and transformers versions: Qwen's
# configs use num_experts, while transformers 5 saves Qwen-MoE configs with num_local_experts.
_EXPERT_COUNT_KEYS = ("num_local_experts", "num_experts")
_EXPERT_KEYS = (*_EXPERT_COUNT_KEYS, "n_routed_experts")


@dataclass(frozen=True)
class ParameterCount:
    """A model's parameters: `total`, and the part in the embedding and untied output matrices."""

    total: int
    embedding: int

    @property
    def non_embedding(self) -> int:
        return self.total - self.embedding


def count_parameters(config: dict[str, Any]) -> ParameterCount:
    """Count the parameters of a decoder-only language model from its config.json.

    A config of an unknown `model_type` is counted with the Llama layout, which other
    Llama-style dense decoders share. Raises ValueError for a config that lacks a needed
    key, or that describes a mixture-of-experts model of a type not covered here.
    """
    text = text_config_of(config)
    model_type = str(text.get("model_type", config.get("model_type", "")))
    family = _family_of(model_type, text)
    hidden = positive_int(text, "hidden_size")
    layers = positive_int(text, "num_hidden_layers")
    vocab = positive_int(text, "vocab_size")
    heads, kv_heads, head_dim = attention_shape(text, model_type)

    attention = _attention_parameters(text, family, hidden, heads, kv_heads, head_dim)
    norms = family.norms_per_layer * hidden + (2 * head_dim if family.qk_norm else 0)
    mlp = sum(_mlp_parameters(text, family, hidden, layer) for layer in range(layers))

    tied = text.get("tie_word_embeddings", config.get("tie_word_embeddings", family.tied_default))
    embedding = vocab * hidden * (1 if tied else 2)
    final_norm = hidden
    total = embedding + layers * (attention + norms) + mlp + final_norm
    return ParameterCount(total=total, embedding=embedding)


def attention_shape(text: dict[str, Any], model_type: str = "") -> tuple[int, int, int]:
    """Return (attention heads, KV heads, head dim), with the family's defaults for missing keys."""
    heads = positive_int(text, "num_attention_heads")
    kv_heads = text.get("num_key_value_heads") or heads
    family = FAMILIES.get(model_type or str(text.get("model_type", "")), Family())
    head_dim = text.get("head_dim") or family.head_dim_default or positive_int(text, "hidden_size") // heads
    if not isinstance(kv_heads, int) or not isinstance(head_dim, int):
        raise ValueError("config.json has a non-integer num_key_value_heads or head_dim")
    return heads, kv_heads, head_dim


def positive_int(config: dict[str, Any], key: str) -> int:
    """Return `config[key]` as a positive int, or raise ValueError naming the key."""
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(
            f"config.json has no positive integer {key} (found {value!r}); the estimate needs it"
        )
    return value


def _family_of(model_type: str, text: dict[str, Any]) -> Family:
    family = FAMILIES.get(model_type)
    if family is not None:
        return family
    if any(text.get(key) for key in _EXPERT_KEYS):
        raise ValueError(
            f"config.json describes a mixture-of-experts model of type {model_type or 'unknown'!r}, "
            "which config-only counts do not cover (they cover mixtral, qwen2_moe and qwen3_moe); "
            "add the model's safetensors files"
        )
    # NOTE: an unknown dense model type is counted with the Llama layout. A family that
    # differs (extra norms, biases, tied defaults) gets a count that is close but not exact.
    logger.info("Counting parameters of model type %r with the Llama layout", model_type or "unknown")
    return FAMILIES["llama"]


def _attention_parameters(
    text: dict[str, Any], family: Family, hidden: int, heads: int, kv_heads: int, head_dim: int
) -> int:
    q_size, kv_size = heads * head_dim, kv_heads * head_dim
    weights = hidden * q_size * 2 + hidden * kv_size * 2
    qkv_biases = q_size + 2 * kv_size
    if family.bias == "qkv":
        return weights + qkv_biases
    if family.bias == "qkv_flag" and text.get("qkv_bias", True):
        return weights + qkv_biases
    if family.bias == "attention_bias" and text.get("attention_bias", False):
        return weights + qkv_biases + hidden
    return weights


def _mlp_parameters(text: dict[str, Any], family: Family, hidden: int, layer: int) -> int:
    """Count the feed-forward block of one layer: a gated MLP, or experts plus router."""
    settings = {**_MOE_DEFAULTS.get(family.moe, {}), **text}
    experts = _expert_count(settings)
    if family.moe == "dense" or not _is_sparse_layer(settings, family, layer, experts):
        intermediate = positive_int(text, "intermediate_size")
        biases = 2 * intermediate + hidden if family.mlp_bias_flag and text.get("mlp_bias", False) else 0
        return 3 * hidden * intermediate + biases

    if family.moe == "mixtral":
        return experts * 3 * hidden * positive_int(settings, "intermediate_size") + hidden * experts
    routed = experts * 3 * hidden * positive_int(settings, "moe_intermediate_size") + hidden * experts
    if family.moe == "qwen3_moe":
        return routed
    shared = 3 * hidden * positive_int(settings, "shared_expert_intermediate_size")
    shared_gate = hidden
    return routed + shared + shared_gate


def _expert_count(settings: dict[str, Any]) -> int:
    for key in _EXPERT_COUNT_KEYS:
        value = settings.get(key)
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(
                    f"config.json has an invalid {key} ({value!r}); it must be a count of experts"
                )
            return value
    default: int = settings.get("experts", 0)
    return default


def _is_sparse_layer(settings: dict[str, Any], family: Family, layer: int, experts: int) -> bool:
    """Apply the Qwen-MoE rule: a layer is sparse unless it is in `mlp_only_layers` or off the step."""
    if family.moe == "mixtral":
        return True
    if not experts:
        return False
    mlp_only = settings.get("mlp_only_layers") or []
    step = settings.get("decoder_sparse_step") or 1
    return layer not in mlp_only and (layer + 1) % step == 0
