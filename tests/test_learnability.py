"""Learnability (Eq. 1) on tiny real students: hand computations, the batched and padding-free scorers against a
per-example loop, the end-of-turn option, and the responses that get NaN (with their reason) instead of a score."""

import math
import time

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from persyn_hf.errors import ConfigError
from persyn_hf.learnability import (
    LearnabilityError,
    context_length,
    encode_response,
    learnability_scores,
)
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


def naive_learnability(model, tokenizer, messages, response, assistant_only_loss=False):
    """One example at a time: full forward, log-softmax, mean over the completion tokens (after the prompt with its
    generation prompt, which the fixture template renders as a prefix) or over the template's assistant tokens."""
    conversation = [*messages, {"role": "assistant", "content": response}]
    encoded = tokenizer.apply_chat_template(conversation, return_dict=True, return_assistant_tokens_mask=True)
    prompt_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]
    ids = torch.tensor([encoded["input_ids"]])
    assert encoded["input_ids"][: len(prompt_ids)] == prompt_ids
    if assistant_only_loss:
        mask = torch.tensor(encoded["assistant_masks"][1:], dtype=torch.bool)
    else:
        mask = torch.arange(1, ids.shape[1]) >= len(prompt_ids)
    with torch.no_grad():
        logps = model(ids).logits[0, :-1].log_softmax(-1).gather(-1, ids[0, 1:, None])[:, 0]
    return logps[mask].mean().item()


@pytest.fixture(scope="module", params=["tiny_qwen2_path", "tiny_llama_path"])
def student(request, tiny_tokenizer):
    return AutoModelForCausalLM.from_pretrained(request.getfixturevalue(request.param)), tiny_tokenizer


def scores(model, tokenizer, prompts, responses, **options):
    return learnability_scores(model, tokenizer, prompts, responses, show_progress=False, **options)


def test_the_span_is_what_sft_trains_on_with_or_without_the_end_of_turn(tiny_tokenizer):
    full = encode_response(tiny_tokenizer, PROMPTS[0], RESPONSES[0])
    prompt_ids = tiny_tokenizer.apply_chat_template(PROMPTS[0], add_generation_prompt=True)["input_ids"]
    assert full.start == len(prompt_ids) and full.input_ids[: full.start] == prompt_ids
    # SFT trains on the whole completion, the "\n" after <|im_end|> included
    assert tiny_tokenizer.decode(full.input_ids[full.start : full.end]) == RESPONSES[0] + IM_END + "\n"
    bare = encode_response(tiny_tokenizer, PROMPTS[0], RESPONSES[0], count_end_of_turn=False)
    assert tiny_tokenizer.decode(bare.input_ids[bare.start : bare.end]) == RESPONSES[0]


@pytest.mark.parametrize("count_end_of_turn", [True, False])
def test_learnability_matches_a_hand_computation(student, count_end_of_turn):
    model, tokenizer = student
    prompt_ids = tokenizer.apply_chat_template(PROMPTS[2], add_generation_prompt=True)["input_ids"]
    completion = RESPONSES[2] + (IM_END + "\n" if count_end_of_turn else "")
    response_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]  # "1", "3" (, <|im_end|>, "\n")
    assert len(response_ids) == (4 if count_end_of_turn else 2)
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        logits = model(ids).logits[0]
    total = 0.0
    for t, token in enumerate(response_ids):  # token t is predicted at the position just before it
        total += torch.log_softmax(logits[len(prompt_ids) + t - 1], -1)[token].item()
    result = scores(model, tokenizer, [PROMPTS[2]], [RESPONSES[2]], count_end_of_turn=count_end_of_turn)
    assert result.scores == [pytest.approx(total / len(response_ids), abs=1e-5)]
    assert result.nan_counts == {}


@pytest.mark.parametrize("padding_free", [False, True])
@pytest.mark.parametrize(("batch_size", "max_tokens_per_batch"), [(16, 16384), (2, 16384), (16, 120)])
def test_batched_learnability_equals_the_naive_loop(student, padding_free, batch_size, max_tokens_per_batch):
    model, tokenizer = student
    prompts, responses = PROMPTS * 2, RESPONSES + RESPONSES[::-1]  # mixed lengths in every batch
    result = scores(
        model,
        tokenizer,
        prompts,
        responses,
        padding_free=padding_free,
        batch_size=batch_size,
        max_tokens_per_batch=max_tokens_per_batch,
    )
    expected = [naive_learnability(model, tokenizer, m, r) for m, r in zip(prompts, responses)]
    assert result.scores == pytest.approx(expected, abs=1e-4)


def test_padding_free_is_exact_with_eager_attention_too(tiny_qwen2_path, tiny_tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_path, attn_implementation="eager")
    result = scores(model, tiny_tokenizer, PROMPTS, RESPONSES, padding_free=True)
    expected = [naive_learnability(model, tiny_tokenizer, m, r) for m, r in zip(PROMPTS, RESPONSES)]
    assert result.scores == pytest.approx(expected, abs=1e-4)


def test_assistant_only_loss_scores_the_templates_generation_block(student):
    model, tokenizer = student  # the fixture template's {% generation %} block ends at <|im_end|>, before "\n"
    result = scores(model, tokenizer, PROMPTS, RESPONSES, assistant_only_loss=True)
    expected = [
        naive_learnability(model, tokenizer, m, r, assistant_only_loss=True) for m, r in zip(PROMPTS, RESPONSES)
    ]
    assert result.scores == pytest.approx(expected, abs=1e-4)


def test_bfloat16_student_is_close_to_float32(student):
    model, tokenizer = student
    full = scores(model, tokenizer, PROMPTS, RESPONSES).scores
    half = scores(model.to(torch.bfloat16), tokenizer, PROMPTS, RESPONSES).scores
    model.to(torch.float32)
    assert half == pytest.approx(full, abs=0.1)


def test_unscorable_responses_get_nan_and_a_counted_reason(student):
    model, tokenizer = student
    prompts = [PROMPTS[0]] * 6 + [[{"role": "user", "content": "12 + 7\ud800?"}]]
    responses = [RESPONSES[0], "", " \n\t ", None, "19\udfff", RESPONSES[0] + " 19" * 40, RESPONSES[0]]
    result = scores(model, tokenizer, prompts, responses, max_length=64)
    assert math.isfinite(result.scores[0]) and all(math.isnan(s) for s in result.scores[1:])
    assert result.nan_reasons == [None, *["empty_response"] * 3, "invalid_utf8", "too_long", "invalid_utf8"]
    assert result.nan_counts == {"empty_response": 3, "invalid_utf8": 2, "too_long": 1}
    assert "1 of 7 responses scored; NaN: 3 empty_response" in result.summary()


def test_max_length_counts_prompt_and_response_exactly(student):
    model, tokenizer = student
    length = len(encode_response(tokenizer, PROMPTS[1], RESPONSES[1]).input_ids)
    fits = scores(model, tokenizer, [PROMPTS[1]], [RESPONSES[1]], max_length=length)
    over = scores(model, tokenizer, [PROMPTS[1]], [RESPONSES[1]], max_length=length - 1)
    assert math.isfinite(fits.scores[0]) and over.nan_reasons == ["too_long"]
    assert context_length(model.config, "max_length") == 512  # the default bound: the student's context
    long = scores(model, tokenizer, [PROMPTS[0]], [" 19" * 600])  # 1,200+ tokens on a 512-position student
    assert long.nan_reasons == ["too_long"]


def test_a_megabyte_response_or_prompt_is_refused_without_tokenising_it_whole(student, monkeypatch):
    model, tokenizer = student
    seen = []
    call = type(tokenizer).__call__

    def recording_call(self, text=None, *args, **kwargs):
        seen.append(len(text) if isinstance(text, str) else 0)
        return call(self, text, *args, **kwargs)

    monkeypatch.setattr(type(tokenizer), "__call__", recording_call)
    megabyte = "The answer is 19. " * 60_000
    start = time.perf_counter()
    result = scores(model, tokenizer, [PROMPTS[0], [{"role": "user", "content": megabyte}]], [megabyte, "19"])
    assert result.nan_reasons == ["too_long", "too_long"]
    assert time.perf_counter() - start < 30  # generous: it takes well under a second
    assert max(seen) <= 4 * 512  # the probe's first prefix decides: 4 characters per allowed token


def test_a_gpt2_student_gets_nan_past_its_positions_not_an_index_error(tiny_tokenizer):
    config = AutoConfig.for_model(
        "gpt2", vocab_size=len(tiny_tokenizer), n_positions=48, n_embd=32, n_layer=1, n_head=2
    )
    model = AutoModelForCausalLM.from_config(config)
    result = scores(model, tiny_tokenizer, PROMPTS[:2], RESPONSES[:2])
    assert math.isfinite(result.scores[0]) and result.nan_reasons == [None, "too_long"]


def test_a_student_without_a_context_length_or_a_chat_template_is_refused(tiny_tokenizer):
    config = AutoConfig.for_model(
        "mamba", vocab_size=len(tiny_tokenizer), hidden_size=16, state_size=4, num_hidden_layers=1
    )
    mamba = AutoModelForCausalLM.from_config(config)
    with pytest.raises(
        ConfigError, match=r"student's config \(MambaConfig\) gives no context length .*set `max_length`"
    ):
        scores(mamba, tiny_tokenizer, PROMPTS[:1], RESPONSES[:1])
    assert scores(mamba, tiny_tokenizer, PROMPTS[:1], RESPONSES[:1], max_length=256).nan_counts == {}
    bare = build_tokenizer()
    bare.chat_template = None
    with pytest.raises(LearnabilityError, match="has no chat template.*set `tokenizer.chat_template`"):
        scores(mamba, bare, PROMPTS[:1], RESPONSES[:1], max_length=256)
