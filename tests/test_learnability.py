import pytest
import torch
from transformers import AutoModelForCausalLM

from persyn_hf.learnability import encode_response, learnability_scores
from persyn_hf.testing.fixtures import IM_END, build_tokenizer

PROMPTS = [
    [{"role": "user", "content": "What is 12 + 7?"}],
    [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Compute 345 - 129."}],
    [{"role": "user", "content": "Tom has 4 apples and buys 9 more. How many apples does he have?"}],
    [{"role": "user", "content": "A train travels 60 km in 2 hours. What is its speed?"}],
]
RESPONSES = [
    "12 + 7 = 19. The answer is 19.",
    "Let us think step by step. First the ones, then the tens. 345 - 129 = 216. The answer is 216.",
    "13",
    "Its speed is 60 / 2 = 30 km per hour. The answer is 30.",
]


def naive_learnability(model, tokenizer, messages, response):
    """One example at a time: full forward, log-softmax, mean over the template's assistant tokens."""
    conversation = [*messages, {"role": "assistant", "content": response}]
    encoded = tokenizer.apply_chat_template(conversation, return_dict=True, return_assistant_tokens_mask=True)
    ids = torch.tensor([encoded["input_ids"]])
    mask = torch.tensor(encoded["assistant_masks"][1:], dtype=torch.bool)
    with torch.no_grad():
        logps = model(ids).logits[0, :-1].log_softmax(-1).gather(-1, ids[0, 1:, None])[:, 0]
    return logps[mask].mean().item()


@pytest.fixture(scope="module", params=["tiny_qwen2_path", "tiny_llama_path"])
def student(request, tiny_tokenizer):
    return AutoModelForCausalLM.from_pretrained(request.getfixturevalue(request.param)), tiny_tokenizer


def test_response_span_is_the_assistant_turn_and_excludes_the_prompt(tiny_tokenizer):
    ids, first = encode_response(tiny_tokenizer, PROMPTS[0], RESPONSES[0])
    prompt_ids = tiny_tokenizer.apply_chat_template(PROMPTS[0], add_generation_prompt=True)["input_ids"]
    assert first == len(prompt_ids) and ids[:first] == prompt_ids
    assert tiny_tokenizer.decode(ids[first:]) == RESPONSES[0] + IM_END  # the template's trailing "\n" is not in


def test_learnability_matches_a_hand_computation(student):
    model, tokenizer = student
    prompt_ids = tokenizer.apply_chat_template(PROMPTS[2], add_generation_prompt=True)["input_ids"]
    response_ids = tokenizer(RESPONSES[2] + IM_END, add_special_tokens=False)["input_ids"]  # "1", "3", <|im_end|>
    assert len(response_ids) == 3
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        logits = model(ids).logits[0]
    total = 0.0
    for t, token in enumerate(response_ids):  # token t is predicted at the position just before it
        total += torch.log_softmax(logits[len(prompt_ids) + t - 1], -1)[token].item()
    (score,) = learnability_scores(model, tokenizer, [PROMPTS[2]], [RESPONSES[2]], show_progress=False)
    assert score == pytest.approx(total / 3, abs=1e-5)


@pytest.mark.parametrize(("batch_size", "max_tokens_per_batch"), [(16, 16384), (2, 16384), (16, 120)])
def test_batched_learnability_equals_the_naive_loop(student, batch_size, max_tokens_per_batch):
    model, tokenizer = student
    prompts, responses = PROMPTS * 2, RESPONSES + RESPONSES[::-1]  # mixed lengths in every batch
    scores = learnability_scores(model, tokenizer, prompts, responses, batch_size, max_tokens_per_batch, False)
    expected = [naive_learnability(model, tokenizer, m, r) for m, r in zip(prompts, responses)]
    assert scores == pytest.approx(expected, abs=1e-4)


def test_bfloat16_student_is_close_to_float32(student):
    model, tokenizer = student
    full = learnability_scores(model, tokenizer, PROMPTS, RESPONSES, show_progress=False)
    half = learnability_scores(model.to(torch.bfloat16), tokenizer, PROMPTS, RESPONSES, show_progress=False)
    model.to(torch.float32)
    assert half == pytest.approx(full, abs=0.1)


def test_template_that_does_not_prefix_the_prompt_is_refused():
    tokenizer = build_tokenizer()
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['content'] }}|{% endfor %}{% if add_generation_prompt %}>>{% endif %}"
    )
    with pytest.raises(ValueError, match="does not render the prompt"):
        encode_response(tokenizer, PROMPTS[0], RESPONSES[0])
