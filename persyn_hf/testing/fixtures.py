"""Small local models built from scratch: a BPE tokenizer with a chat template, tiny causal LMs and a tiny reward
model.

Nothing here downloads anything. The tests use these as real `transformers` models, and the demo
world builds its teachers and student with the same functions.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

PAD_TOKEN = "<|pad|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [PAD_TOKEN, IM_START, IM_END]

# ChatML with the assistant turn wrapped in {% generation %}, so that TRL's `assistant_only_loss`
# (and `return_assistant_tokens_mask`) can find the span the student learns from.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{%- else -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)

# Architectures a tiny LM can be built with; any `AutoConfig` model type with these fields works.
TINY_LM_DEFAULTS = {
    "qwen2": {"num_key_value_heads": 2, "tie_word_embeddings": True},
    "llama": {"num_key_value_heads": 2, "tie_word_embeddings": False},
}

DEFAULT_CORPUS = [
    "What is 12 + 7? 12 + 7 = 19. The answer is 19.",
    "Compute 345 - 129. 345 - 129 = 216. The answer is 216.",
    "Tom has 4 apples and buys 9 more. How many apples does he have? 4 + 9 = 13. The answer is 13.",
    "A train travels 60 km in 2 hours. Its speed is 60 / 2 = 30 km per hour.",
    "Let us think step by step. First add the tens, then the ones, then combine.",
    "You are a helpful assistant. Answer the question and give the final answer.",
]


def build_tokenizer(
    corpus: Iterable[str] = DEFAULT_CORPUS,
    vocab_size: int = 384,
    save_dir: str | Path | None = None,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer (digits split one by one) and wrap it with the chat template."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(list(corpus), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        chat_template=CHAT_TEMPLATE,
        padding_side="right",
    )
    if save_dir is not None:
        tokenizer.save_pretrained(save_dir)
    return tokenizer


def build_causal_lm(
    tokenizer: PreTrainedTokenizerFast,
    arch: str = "qwen2",
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 512,
    seed: int = 0,
    save_dir: str | Path | None = None,
) -> PreTrainedModel:
    """A randomly initialised causal LM of architecture `arch`, seeded, sized to `tokenizer`."""
    if arch not in TINY_LM_DEFAULTS:
        raise ValueError(f"`arch` must be one of {sorted(TINY_LM_DEFAULTS)}, got {arch!r}")
    config = AutoConfig.for_model(
        arch,
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size or 4 * hidden_size,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        **TINY_LM_DEFAULTS[arch],
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    if save_dir is not None:
        model.save_pretrained(save_dir)
        tokenizer.save_pretrained(save_dir)
    return model


def build_reward_model(
    tokenizer: PreTrainedTokenizerFast,
    max_position_embeddings: int = 32768,
    seed: int = 0,
    save_dir: str | Path | None = None,
) -> PreTrainedModel:
    """A randomly initialised tiny Qwen2 reward model (sequence classification, `num_labels=1`) on `tokenizer`."""
    config = AutoConfig.for_model(
        "qwen2",
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=64,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        max_position_embeddings=max_position_embeddings,
    )
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    if save_dir is not None:
        model.save_pretrained(save_dir)
        tokenizer.save_pretrained(save_dir)
    return model
