"""A tiny Llama-architecture model with random weights, for tests and examples.

The model is far too small to say anything sensible, but it loads through
AutoModelForCausalLM and AutoTokenizer like any Hugging Face folder and generates
text in milliseconds on a CPU. Building it needs the `engine` extra (torch,
transformers, tokenizers).
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

__all__ = ["TINY_CHAT_TEMPLATE", "create_tiny_model"]

logger = logging.getLogger(__name__)

BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
UNK_TOKEN = "<unk>"
PAD_TOKEN = "<pad>"
SPECIAL_TOKENS = (BOS_TOKEN, EOS_TOKEN, UNK_TOKEN, PAD_TOKEN)

VOCAB_SIZE = 512
MAX_POSITION_EMBEDDINGS = 512

# Each turn is `<|role|>` on its own line, then the content and EOS.
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_CORPUS = """\
The local platform keeps a list of models and starts one worker process for each replica.
A worker loads the model once, then answers chat and completion requests one at a time.
Every request names a model, a list of messages, and the maximum number of tokens to generate.
The tokenizer splits text into pieces, and the model predicts the next piece from the ones before it.
When the temperature is zero, the model always picks the most likely token.
A higher temperature spreads the choice over more tokens and makes the output less predictable.
The context length is the largest number of tokens that the prompt and the answer may use together.
Memory is spent on the weights, on the key and value cache, and on the runtime itself.
If a deployment does not fit in memory, the platform reports the estimate and the free memory.
The river runs past the old mill, and the children walk to school along the bank every morning.
In spring the fields turn green, the days grow longer, and the farmers plant corn and beans.
She opened the window, listened to the rain, and wrote a short letter to her brother in the city.
The library opens at nine, closes at six, and lends books, maps, and records to anyone who asks.
A good test starts a real server, sends a real request, and checks every field of the response.
Numbers such as 1, 2, 3, 10, 42, 100, and 2048 appear in logs, limits, and configuration files.
Questions end with a question mark? Lists use commas; clauses use semicolons: and so on.
"""


def create_tiny_model(path: Path, *, seed: int = 0) -> Path:
    """Build a tiny random-weight Llama model with a trained BPE tokenizer in `path`.

    The folder gets config.json, generation_config.json, model.safetensors and the
    tokenizer files with a chat template. The same `seed` gives the same weights.
    Returns `path`. Raises ImportError without the `engine` extra.
    """
    torch: Any = importlib.import_module("torch")
    transformers: Any = importlib.import_module("transformers")

    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer()
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=MAX_POSITION_EMBEDDINGS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.LlamaForCausalLM(config)
    _silence_special_tokens(torch, model, tokenizer)

    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    if not (path / "model.safetensors").is_file():
        raise RuntimeError(f"save_pretrained wrote no model.safetensors in {path}; upgrade transformers")
    logger.info("Created a tiny model in %s (vocabulary of %d tokens)", path, len(tokenizer))
    return path


def _train_tokenizer() -> Any:
    """Train a byte-level BPE tokenizer on the built-in corpus and wrap it for transformers."""
    transformers: Any = importlib.import_module("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    # The alphabet is printable ASCII plus space, tab and newline, not all 256 bytes, so
    # random weights emit readable fragments instead of control bytes. Other bytes map to <unk>.
    backend = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=_printable_alphabet(pre_tokenizers.ByteLevel.alphabet()),
        show_progress=False,
    )
    backend.train_from_iterator(_CORPUS.splitlines(), trainer=trainer)

    bos_id = backend.token_to_id(BOS_TOKEN)
    # Plain prompts get a BOS token in front, as Llama tokenizers do.
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B", special_tokens=[(BOS_TOKEN, bos_id)]
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=MAX_POSITION_EMBEDDINGS,
        chat_template=TINY_CHAT_TEMPLATE,
    )


def _printable_alphabet(byte_level_alphabet: list[str]) -> list[str]:
    """Select the byte-level symbols of printable ASCII, space, tab and newline.

    The byte-level pre-tokenizer maps each byte to one visible symbol, keeping the
    printable ASCII characters as they are, so the other symbols are the remapped
    whitespace and control bytes.
    """
    printable = {chr(code) for code in range(33, 127)}
    remapped = {"\u0120", "\u010a", "\u0109"}  # space, newline and tab in byte-level form
    return sorted(symbol for symbol in byte_level_alphabet if symbol in printable | remapped)


def _silence_special_tokens(torch: Any, model: Any, tokenizer: Any) -> None:
    """Zero the output rows of the special tokens.

    Random weights give EOS the top logit at some step, which would end a completion
    at once, and the other special tokens decode to nothing. A zero row gives a logit
    of 0, below the maximum of the ~500 random logits of the ordinary tokens, so
    greedy decoding never picks a special token (sampling still can, rarely).
    """
    special_ids = [tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS]
    with torch.no_grad():
        model.lm_head.weight[special_ids] = 0.0
