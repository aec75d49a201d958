import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from persyn_hf.testing.fixtures import IM_END, build_causal_lm, build_tokenizer

MESSAGES = [
    {"role": "user", "content": "What is 12 + 30?"},
    {"role": "assistant", "content": "12 + 30 = 42. The answer is 42."},
]


def test_tokenizer_splits_digits_and_round_trips(tiny_tokenizer):
    assert tiny_tokenizer.tokenize("2024") == ["2", "0", "2", "4"]
    text = "Tom has 4 apples and buys 19 more."
    assert tiny_tokenizer.decode(tiny_tokenizer(text)["input_ids"]) == text


def test_chat_template_marks_exactly_the_assistant_turn(tiny_tokenizer):
    out = tiny_tokenizer.apply_chat_template(MESSAGES, return_dict=True, return_assistant_tokens_mask=True)
    marked = [t for t, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert tiny_tokenizer.decode(marked) == MESSAGES[1]["content"] + IM_END
    prompt = tiny_tokenizer.apply_chat_template(MESSAGES[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n"
    full = tiny_tokenizer.apply_chat_template(MESSAGES, tokenize=False)
    assert full.startswith(prompt)


@pytest.mark.parametrize("fixture", ["tiny_qwen2_path", "tiny_llama_path"])
def test_tiny_models_load_back_and_generate(fixture, request):
    path = request.getfixturevalue(fixture)
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert model.config.model_type == fixture.split("_")[1]
    inputs = tokenizer.apply_chat_template(
        MESSAGES[:1], add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    output = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert output.shape[1] > inputs["input_ids"].shape[1]
    assert torch.equal(output[0, : inputs["input_ids"].shape[1]], inputs["input_ids"][0])


def test_builds_are_seeded_and_deterministic(tiny_tokenizer):
    first = build_tokenizer()
    a = build_causal_lm(first, arch="llama", seed=3)
    b = build_causal_lm(build_tokenizer(), arch="llama", seed=3)
    c = build_causal_lm(first, arch="llama", seed=4)
    assert first.get_vocab() == tiny_tokenizer.get_vocab()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)


def test_unknown_architecture_is_named(tiny_tokenizer):
    with pytest.raises(ValueError, match=r"`arch` must be one of \['llama', 'qwen2'\], got 'gpt9'"):
        build_causal_lm(tiny_tokenizer, arch="gpt9")
