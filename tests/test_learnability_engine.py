"""Engine-side learnability: the same spans scored by an OpenAI-compatible server's prompt log-probabilities (the
project's test server answers `/v1/completions` as vLLM does), through the teacher pool's retries."""

import asyncio
import math

import pytest
from transformers import AutoModelForCausalLM

from persyn_hf.learnability import (
    LearnabilityError,
    encode_response,
    engine_endpoint,
    engine_learnability_scores,
    learnability_scores,
)
from persyn_hf.teachers.pool import PoolConfig, TeacherPool
from persyn_hf.testing.server import TeacherServer

FAST = PoolConfig(backoff_base_s=0.005, backoff_max_s=0.05, disable_tqdm=True)
PROMPTS = [
    [{"role": "user", "content": "What is 12 + 7?"}],
    [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Compute 345 - 129."}],
    [{"role": "user", "content": "Tom has 4 apples and buys 9 more. How many apples does he have?"}],
    [{"role": "user", "content": "What is 2 + 2?"}],
]
RESPONSES = ["12 + 7 = 19. The answer is 19.", "345 - 129 = 216. The answer is 216.", "13", "  "]


@pytest.fixture(scope="module")
def server(tiny_qwen2_path):
    with TeacherServer(model_path=tiny_qwen2_path, model_id="tiny-student") as server:
        yield server


@pytest.fixture(scope="module")
def student(tiny_qwen2_path, tiny_tokenizer):
    return AutoModelForCausalLM.from_pretrained(tiny_qwen2_path), tiny_tokenizer


@pytest.mark.parametrize("count_end_of_turn", [True, False])
def test_engine_side_equals_local_scoring(server, student, count_end_of_turn):
    model, tokenizer = student
    options = {"count_end_of_turn": count_end_of_turn, "max_length": 512}
    local = learnability_scores(model, tokenizer, PROMPTS, RESPONSES, show_progress=False, **options)
    endpoint = engine_endpoint(server.url, "tiny-student")
    engine = engine_learnability_scores(endpoint, tokenizer, PROMPTS, RESPONSES, pool_config=FAST, **options)
    assert engine.scores[:3] == pytest.approx(local.scores[:3], abs=1e-4)
    assert math.isnan(engine.scores[3]) and engine.nan_reasons == local.nan_reasons == [None] * 3 + ["empty_response"]


def test_the_actual_tokens_entry_is_read_beside_the_top_ranked_one(server, student):
    _, tokenizer = student
    example = encode_response(tokenizer, PROMPTS[0], RESPONSES[0])

    async def prompt_logprobs():
        async with TeacherPool([engine_endpoint(server.url, "tiny-student")], FAST) as pool:
            return await pool.call("student", lambda backend: backend.prompt_logprobs(example.input_ids))

    entries, attempts = asyncio.run(prompt_logprobs())
    assert entries[0] is None and len(entries) == len(example.input_ids) and attempts == 1
    assert any(len(entry) == 2 for entry in entries[1:])  # a random student rarely ranks the actual token first
    for token, entry in zip(example.input_ids[1:], entries[1:]):
        assert entry[str(token)]["logprob"] <= 0 and entry[str(token)]["rank"] >= 1


def test_overload_is_retried_and_a_refused_request_is_a_counted_nan(server, student):
    model, tokenizer = student
    endpoint = engine_endpoint(server.url, "tiny-student")
    before = server.stats["requests"]
    server.faults.script.extend(["429", "503", "drop"])
    retried = engine_learnability_scores(
        endpoint, tokenizer, PROMPTS[:1], RESPONSES[:1], max_length=512, pool_config=FAST
    )
    local = learnability_scores(model, tokenizer, PROMPTS[:1], RESPONSES[:1], show_progress=False)
    assert retried.scores == pytest.approx(local.scores, abs=1e-4) and server.stats["requests"] - before == 4
    # told a longer context than the server's (512 positions), the request is refused: HTTP 400, not retried
    long = ["19 " * 300]
    refused = engine_learnability_scores(endpoint, tokenizer, PROMPTS[:1], long, max_length=4096, pool_config=FAST)
    assert math.isnan(refused.scores[0]) and refused.nan_counts == {"engine_error": 1}


def test_an_endpoint_that_cannot_return_prompt_logprobs_is_refused(server, student):
    _, tokenizer = student
    endpoint = engine_endpoint(server.url, "tiny-student")
    tgi = type(endpoint)(**{**endpoint.__dict__, "backend": "tgi", "backend_args": {}})
    with pytest.raises(LearnabilityError, match="needs an `openai` endpoint"):
        engine_learnability_scores(tgi, tokenizer, PROMPTS, RESPONSES, max_length=512)
