import math
import threading
import time

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from persyn_hf.errors import ConfigError, DataError
from persyn_hf.rewards import QUALITY_SCORERS, check_scorer_inputs, encode_conversations, reward_model_quality
from persyn_hf.score import ScoringConfig
from persyn_hf.testing.fixtures import build_reward_model
from persyn_hf.testing.templates import template_tokenizer
from persyn_hf.verify import WORKER_START_TIMEOUT_S, _MathVerifyWorkers, check_answer, verify_answer

# sympy evaluates this exactly, in C, for longer than anyone would wait: only killing the process stops it.
PATHOLOGICAL = r"The answer is \boxed{9^{9^{9^{9}}} + 1}"


@pytest.mark.parametrize(
    ("gold", "response", "expected"),
    [
        ("42", "12 + 30 = 42. The answer is 42.", True),
        ("42", "The answer is \\boxed{41}.", False),
        ("\\frac{1}{2}", "So we get \\boxed{0.5}", True),
        ("42", "I do not know.", False),
        ("no number here", "The answer is 42.", None),
        ("", "42", None),
    ],
)
def test_verify_answer(gold, response, expected):
    assert verify_answer(gold, response) is expected


def test_pathological_answer_times_out_as_not_correct_and_the_next_check_still_works():
    assert check_answer("1", PATHOLOGICAL, timeout_s=0.5) == "timeout"
    assert verify_answer("1", PATHOLOGICAL, timeout_s=0.5) is False
    assert verify_answer("7", "The answer is 7.") is True


def test_verify_answer_from_worker_threads():
    results = {}

    def check(i):
        results[i] = verify_answer(str(i), f"The answer is {i}.") and not verify_answer(
            str(i), f"The answer is {i + 1}."
        )

    threads = [threading.Thread(target=check, args=(i,)) for i in range(3)]
    threads.append(
        threading.Thread(target=lambda: results.update(slow=verify_answer("1", PATHOLOGICAL, timeout_s=0.5)))
    )
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {0: True, 1: True, 2: True, "slow": False}


ROWS = Dataset.from_dict(
    {
        "prompt_id": ["p0", "p0", "p1"],
        "teacher": ["a", "b", "a"],
        "messages": [[{"role": "user", "content": "What is 12 + 7?"}]] * 2 + [[{"role": "user", "content": "Hi"}]],
        "response": ["12 + 7 = 19. The answer is 19.", "19", "Hello! How can I help you today?"],
        "answer": ["19", "19", None],
        "rm_score": [0.5, None, 2.0],
    }
)


def test_reward_model_scores_are_its_logit_on_the_rendered_conversation(tiny_reward_model_path):
    config = ScoringConfig(quality_scorer="reward_model", reward_model=tiny_reward_model_path, batch_size=2)
    scores = QUALITY_SCORERS["reward_model"](ROWS, config, show_progress=False)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_reward_model_path)
    tokenizer = AutoTokenizer.from_pretrained(tiny_reward_model_path)
    for score, messages, response in zip(scores, ROWS["messages"], ROWS["response"]):
        conversation = [*messages, {"role": "assistant", "content": response}]
        ids = tokenizer.apply_chat_template(conversation, return_tensors="pt", return_dict=True)["input_ids"]
        with torch.no_grad():
            assert score == pytest.approx(model(ids).logits[0, 0].item(), abs=1e-5)
    assert len(set(scores)) == 3


# The templates of common reward models: Skywork-Reward-Llama-3.1, Skywork-Reward-V2-Qwen2.5/Qwen3, Skywork-Reward-Gemma-2
@pytest.mark.parametrize("name", ["llama3_1", "qwen2_5", "qwen3", "gemma"])
def test_reward_model_reads_each_conversation_as_its_template_writes_it(name):
    tokenizer = template_tokenizer(name)
    tokenizer.pad_token = "<|pad|>"
    model = build_reward_model(tokenizer)
    messages, responses = ROWS["messages"], ROWS["response"]
    encoded = encode_conversations(tokenizer, messages, responses, max_length=512)
    for ids, prompt, response in zip(encoded, messages, responses):
        rendered = tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": response}], tokenize=False)
        assert tokenizer.decode(ids) == rendered
        if tokenizer.bos_token_id is not None:  # the template writes the BOS token; the tokenizer adds no second
            assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id
    scores = reward_model_quality(model, tokenizer, messages, responses, batch_size=3, show_progress=False)
    with torch.no_grad():
        alone = [model(torch.tensor([ids])).logits[0, 0].item() for ids in encoded]
    assert scores == pytest.approx(alone, abs=1e-5)


def test_a_reward_model_without_a_pad_token_id_pools_with_its_tokenizers(tiny_tokenizer):
    model = build_reward_model(tiny_tokenizer)
    model.config.pad_token_id = None
    messages, responses = ROWS["messages"], ROWS["response"]
    scores = reward_model_quality(model, tiny_tokenizer, messages, responses, batch_size=3, show_progress=False)
    assert model.config.pad_token_id == tiny_tokenizer.pad_token_id
    encoded = encode_conversations(tiny_tokenizer, messages, responses, max_length=512)
    with torch.no_grad():
        alone = [model(torch.tensor([ids])).logits[0, 0].item() for ids in encoded]
    assert len(set(map(len, encoded))) == 3 and scores == pytest.approx(alone, abs=1e-5)  # padded to the longest


def test_a_reward_model_whose_pad_token_id_differs_from_its_tokenizers_is_refused(tiny_tokenizer):
    model = build_reward_model(tiny_tokenizer)
    model.config.pad_token_id = tiny_tokenizer.eos_token_id
    with pytest.raises(
        ConfigError,
        match=rf"config has `pad_token_id` {tiny_tokenizer.eos_token_id} but its tokenizer's pad token '<\|pad\|>' "
        rf"has id {tiny_tokenizer.pad_token_id}.*set `pad_token_id` to {tiny_tokenizer.pad_token_id}",
    ):
        reward_model_quality(model, tiny_tokenizer, ROWS["messages"], ROWS["response"], show_progress=False)


def test_a_pad_token_the_template_writes_is_refused():
    tokenizer = template_tokenizer("llama3_1")
    tokenizer.pad_token = "<|eot_id|>"  # pad = eos, which ends every turn: the head would score the token before
    model = build_reward_model(tokenizer)
    with pytest.raises(
        ConfigError,
        match=r"pad token '<\|eot_id\|>' \(id \d+\) appears in 3 conversations \(first: row 0\).*"
        r"a pad token its chat template never writes",
    ):
        reward_model_quality(model, tokenizer, ROWS["messages"], ROWS["response"], show_progress=False)
    tokenizer.pad_token = None
    with pytest.raises(ConfigError, match="tokenizer has no `pad_token`, needed to batch: give the reward model's"):
        reward_model_quality(model, tokenizer, ROWS["messages"], ROWS["response"], show_progress=False)


def test_a_conversation_longer_than_the_reward_models_context_gets_nan(tiny_tokenizer, caplog):
    model = build_reward_model(tiny_tokenizer, max_position_embeddings=64)
    fits = len(encode_conversations(tiny_tokenizer, ROWS["messages"][:1], ROWS["response"][:1], 64)[0])
    megabyte = "The answer is 19. " * 60_000
    messages = [*ROWS["messages"], [{"role": "user", "content": megabyte}]]
    responses = [*ROWS["response"][:2], " 19" * 40, "19"]  # 40 more tokens than the first: over 64
    start = time.perf_counter()
    with caplog.at_level("WARNING", logger="persyn_hf"):
        scores = reward_model_quality(model, tiny_tokenizer, messages, responses, show_progress=False)
    assert time.perf_counter() - start < 30  # generous: the megabyte prompt is refused from its first 256 characters
    assert fits <= 64 and all(math.isfinite(score) for score in scores[:2]) and math.isnan(scores[2] + scores[3])
    assert "reward model: 2 of 4 conversations are longer than 64 tokens (`reward_model_max_length`)" in caplog.text
    bounded = reward_model_quality(model, tiny_tokenizer, messages[:1], responses[:1], max_length=fits - 1)
    assert math.isnan(bounded[0])
    with pytest.raises(ValueError, match="`reward_model_max_length` must be at least 1, got 0"):
        ScoringConfig(reward_model="rm", reward_model_max_length=0)


def test_math_verify_and_precomputed_scorers(caplog):
    math_config = ScoringConfig(quality_scorer="math_verify")
    assert QUALITY_SCORERS["math_verify"](ROWS, math_config, show_progress=False)[:2] == [1.0, 1.0]
    assert math.isnan(QUALITY_SCORERS["math_verify"](ROWS, math_config, show_progress=False)[2])
    assert "1 responses have a missing or unparseable gold answer (no score)" in caplog.text
    precomputed = QUALITY_SCORERS["precomputed"](
        ROWS, ScoringConfig(quality_scorer="precomputed", quality_column="rm_score")
    )
    assert precomputed[0] == 0.5 and math.isnan(precomputed[1]) and precomputed[2] == 2.0
    with pytest.raises(DataError, match=r"`quality_column` 'reward' is not a column of the generations"):
        check_scorer_inputs(ROWS, ScoringConfig(quality_scorer="precomputed", quality_column="reward"))
    with pytest.raises(DataError, match=r"lacks column\(s\) \['answer'\].*gold answers"):
        check_scorer_inputs(ROWS.remove_columns("answer"), math_config)


def test_scoring_config_errors_list_the_choices():
    with pytest.raises(
        ValueError,
        match=r"Unknown `quality_scorer` 'bleu'; choose one of \['reward_model', 'math_verify', 'precomputed'\]",
    ):
        ScoringConfig(quality_scorer="bleu")
    with pytest.raises(ValueError, match=r"`alpha` must be in \[0, 1\], got -0.1"):
        ScoringConfig(quality_scorer="math_verify", alpha=-0.1)
    with pytest.raises(ValueError, match="`quality_scorer: reward_model` needs `reward_model`"):
        ScoringConfig()
    with pytest.raises(ValueError, match="`quality_scorer: precomputed` needs `quality_column`"):
        ScoringConfig(quality_scorer="precomputed")


def test_a_math_verify_worker_that_exits_at_start_says_so_at_once(tmp_path, monkeypatch):
    broken = tmp_path / "math_verify"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('a broken install')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the worker, a fresh interpreter, imports this math_verify
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"worker exited at start with code 1: .*`pip install math-verify`"):
        _MathVerifyWorkers().check("1", "The answer is 1.", timeout_s=5.0)
    assert time.perf_counter() - start < WORKER_START_TIMEOUT_S / 4
