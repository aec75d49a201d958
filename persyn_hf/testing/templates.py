"""The chat templates of real students, teachers and reward models, as TRL ships them (`trl/chat_templates`), on
the fixture BPE tokenizer with the special tokens of each template's model."""

from __future__ import annotations

from pathlib import Path

from tokenizers import processors

from persyn_hf.testing.fixtures import build_tokenizer

QWEN = {"eos": "<|im_end|>", "specials": ["<|im_start|>", "<|im_end|>", "<think>", "</think>"]}
LLAMA3 = {
    "eos": "<|eot_id|>",
    "bos": "<|begin_of_text|>",
    "specials": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>", "<|python_tag|>"],
}
GEMMA = {"eos": "<eos>", "bos": "<bos>", "specials": ["<start_of_turn>", "<end_of_turn>"]}
# template file -> the special tokens its model's tokenizer has
TEMPLATES = {
    "qwen2_5": QWEN,
    "qwen3": QWEN,
    "qwen3_5_think": QWEN,
    "llama3_1": LLAMA3,
    "llama3_2": LLAMA3,
    "gemma": GEMMA,
    "gemma3": GEMMA,
    "deepseek_r1_distill": {
        "eos": "<｜end▁of▁sentence｜>",
        "bos": "<｜begin▁of▁sentence｜>",
        "specials": ["<｜User｜>", "<｜Assistant｜>", "<think>", "</think>"],
    },
    "phi3": {"eos": "<|endoftext|>", "specials": ["<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]},
}


def template_tokenizer(name: str):
    """The fixture BPE tokenizer with the template `name` (a file of `trl/chat_templates`) and the special tokens of
    its model; where the model has a BOS token, encoding text adds it first, as Llama's and Gemma's tokenizers do."""
    import trl

    tokens = TEMPLATES[name]
    tokenizer = build_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": [*tokens["specials"], tokens["eos"]]})
    tokenizer.eos_token = tokens["eos"]
    if "bos" in tokens:
        bos = tokens["bos"]
        tokenizer.add_special_tokens({"bos_token": bos})
        tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.bos_token_id)]
        )
    tokenizer.chat_template = (Path(trl.__file__).parent / "chat_templates" / f"{name}.jinja").read_text()
    return tokenizer
