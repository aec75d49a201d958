"""The evaluation stage: `persyn-hf eval` with lm-eval on a constructed model, the math-verify metric, recipes."""

import json
from pathlib import Path

import evaluate
import pytest
import torch
import yaml
from datasets import Dataset

from persyn_hf import cli
from persyn_hf.eval_tasks import METRIC_PATH
from persyn_hf.evaluation import check_task_names, make_task_manager, parse_task_spec
from persyn_hf.scripts.eval import make_parser
from persyn_hf.store import ArtifactStore
from persyn_hf.testing.fixtures import build_causal_lm
from persyn_hf.verify import CORRECT, check_answer

EVAL_RECIPES = Path(__file__).parent.parent / "recipes" / "Qwen2.5-1.5B-Instruct" / "eval"
HELDOUT_RECIPE = EVAL_RECIPES / "config_heldout.yaml"
ANSWER = "The answer is 42."


@pytest.fixture(scope="module", autouse=True)
def warm_math_verify():
    """The first check in a fresh math-verify worker loads its parsers; on a busy machine that can pass the
    5 s per-check limit and count a right answer wrong, so it runs once here, with time to spare."""
    assert check_answer("1", "1", timeout_s=120) == CORRECT


def chain_head(tokenizer, embeddings, answer):
    """LM-head weights under which the generation prompt's last token predicts `answer`'s first, each token of
    `answer` the next, and its last the end-of-turn token (in a model whose hidden state is the token's embedding)."""
    generation_prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 3 + 4?"}], add_generation_prompt=True, tokenize=False
    )
    chain = [tokenizer(generation_prompt)["input_ids"][-1], *tokenizer(answer)["input_ids"], tokenizer.eos_token_id]
    assert len(set(chain)) == len(chain)  # a bigram chain needs distinct tokens
    head = torch.zeros_like(embeddings)
    for token, next_token in zip(chain, chain[1:]):
        head[next_token] += 10 * embeddings[token] / embeddings[token].norm()
    return head


@pytest.fixture(scope="module")
def answers_42_path(tmp_path_factory, tiny_tokenizer):
    """A real Llama whose greedy answer to any chat prompt is `ANSWER`: with attention and MLP outputs zeroed,
    the residual stream is the current token's embedding, so the model is a bigram model, and its head chains
    the tokens of `ANSWER`."""
    model = build_causal_lm(tiny_tokenizer, arch="llama", seed=0)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.copy_(chain_head(tiny_tokenizer, model.model.embed_tokens.weight, ANSWER))
    path = tmp_path_factory.mktemp("answers-42")
    model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return str(path)


def save_heldout(store):
    """Five problems whose gold answers math-verify finds equal to 42 for three of them: 42, 42.0 and 84/2."""
    golds = ["42", "41", "42.0", "7", "84/2"]
    heldout = Dataset.from_list(
        [{"prompt_id": f"t{i}", "prompt": f"What is {gold} + 0?", "answer": gold} for i, gold in enumerate(golds)]
    )
    store.save_dataset("me/heldout", heldout, split="test")


def run_heldout_eval(model, store, output_dir, *extra):
    cli.main(
        ["eval", "--config", str(HELDOUT_RECIPE), "--model_name_or_path", model,
         "--heldout_repo_id", "me/heldout", "--store_root", str(store.root), "--dtype", "float32",
         "--max_gen_toks", "16", "--batch_size", "5", "--output_dir", str(output_dir), *extra]
    )  # fmt: skip
    return json.loads((output_dir / "results.json").read_text())


def test_constructed_model_answers_42(answers_42_path, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(answers_42_path)
    prompt = tiny_tokenizer.apply_chat_template(
        [{"role": "user", "content": "Ana has 40 coins and gets 2 more. How many coins does Ana have?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    output = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    assert tiny_tokenizer.decode(output[0, prompt["input_ids"].shape[1] :]) == ANSWER + "<|im_end|>"


def test_eval_heldout_recipe_reports_math_verify_accuracy(answers_42_path, tmp_path):
    store = ArtifactStore(tmp_path / "store")
    save_heldout(store)

    results = run_heldout_eval(answers_42_path, store, tmp_path / "eval")

    assert results["tasks"]["persyn_heldout"] == {"accuracy": pytest.approx(3 / 5), "num_fewshot": 0, "num_samples": 5}
    assert results["lm_eval"]["results"]["persyn_heldout"]["accuracy,none"] == pytest.approx(3 / 5)
    assert "problems" not in results


def test_eval_reports_each_problems_verdict_when_asked(answers_42_path, tmp_path):
    store = ArtifactStore(tmp_path / "store")
    save_heldout(store)

    results = run_heldout_eval(answers_42_path, store, tmp_path / "eval", "--log_samples", "true")

    # the model answers 42 to every problem: right where the gold is 42, 42.0 or 84/2 (t0, t2, t4)
    assert results["problems"]["persyn_heldout"] == {"t0": True, "t1": False, "t2": True, "t3": False, "t4": True}


def test_eval_applies_a_lora_adapter_from_the_store(answers_42_path, tiny_tokenizer, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(answers_42_path)
    model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"], modules_to_save=["lm_head"]))
    with torch.no_grad():  # the adapter's own head answers 41 instead of 42
        head = chain_head(tiny_tokenizer, base.model.embed_tokens.weight, "The answer is 41.")
        model.base_model.model.lm_head.modules_to_save["default"].weight.copy_(head)
    store = ArtifactStore(tmp_path / "store")
    store.save_model("me/student-lora", model)
    save_heldout(store)

    results = run_heldout_eval("me/student-lora", store, tmp_path / "eval")

    assert results["tasks"]["persyn_heldout"]["accuracy"] == pytest.approx(1 / 5)  # only the gold 41


def test_math_verify_metric_matches_a_hand_count():
    metric = evaluate.load(METRIC_PATH, keep_in_memory=True)
    cases = [  # (response, gold, correct?)
        ("12 + 7 = 19. The answer is 19.", "19", True),
        ("12 + 7 = 19. The answer is 20.", "19", False),  # the final answer counts, not the first number
        ("So the result is $\\boxed{\\frac{1}{2}}$.", "0.5", True),
        ("The answer is 1,000.", "1000", True),
        ("I do not know.", "3", False),
        ("The answer is 7.", "", False),  # a gold answer that does not parse is never a free point
    ]
    result = metric.compute(predictions=[c[0] for c in cases], references=[c[1] for c in cases])
    assert result == {"accuracy": pytest.approx(3 / 6), "timeouts": 0, "unparseable_gold": 1}


def test_heldout_dataset_missing_a_column_is_named(answers_42_path, tmp_path):
    store = ArtifactStore(tmp_path / "store")
    store.save_dataset(
        "me/heldout", Dataset.from_list([{"prompt_id": "t0", "prompt": "What is 1 + 1?"}]), split="test"
    )
    argv = ["eval", "--config", str(HELDOUT_RECIPE), "--model_name_or_path", answers_42_path,
            "--heldout_repo_id", "me/heldout", "--store_root", str(store.root), "--output_dir", str(tmp_path / "eval")]  # fmt: skip
    with pytest.raises(SystemExit, match=r"persyn-hf eval: error: The heldout dataset lacks column\(s\) \['answer'\]"):
        cli.main(argv)
    assert not (tmp_path / "eval" / "results.json").exists()


def test_eval_arguments_errors(answers_42_path, tmp_path, capsys):
    base = ["eval", "--config", str(HELDOUT_RECIPE), "--store_root", str(tmp_path / "store")]
    with pytest.raises(
        SystemExit, match=r"`model_name_or_path` 'me/missing' is neither a local folder nor an artifact"
    ):
        cli.main([*base, "--model_name_or_path", "me/missing"])
    with pytest.raises(SystemExit, match=r"`heldout_repo_id` 'me/missing' is neither a local folder"):
        cli.main([*base, "--model_name_or_path", answers_42_path, "--heldout_repo_id", "me/missing"])
    with pytest.raises(SystemExit, match="2"):  # a config value: a usage error
        cli.main([*base, "--model_name_or_path", answers_42_path, "--tasks", "persyn_heldout|x"])
    assert "'persyn_heldout|x': the few-shot count after '|' must be an integer" in capsys.readouterr().err


def test_unknown_task_names_a_close_match():
    task_manager = make_task_manager(["persyn_heldout"])  # persyn-hf's tasks only: no registry scan
    check_task_names(["persyn_heldout", "svamp"], task_manager)
    with pytest.raises(ValueError, match=r"'persyn_heldot' is not an lm-eval task \(did you mean \['persyn_heldout'"):
        check_task_names(["persyn_heldot"], task_manager)


def test_benchmark_recipes_name_registered_tasks():
    """The paper's benchmarks resolve in lm-eval's registry (plus persyn-hf's `svamp`); nothing runs."""
    recipes = {path.name: path for path in EVAL_RECIPES.glob("config_*.yaml")}
    assert set(recipes) == {"config_heldout.yaml", "config_instruct.yaml", "config_math.yaml"}
    specs = {}
    for name, path in recipes.items():
        assert path.read_text().startswith("# 1 x A100 80GB")
        eval_args, _ = make_parser().parse_args_and_config(["--config", str(path)])
        specs[name] = [parse_task_spec(spec) for spec in eval_args.tasks]
    assert specs["config_instruct.yaml"] == [("ifeval", 0), ("truthfulqa_mc2", 0)]
    assert specs["config_math.yaml"] == [("gsm8k", 5), ("minerva_math500", 0), ("svamp", 0)]
    names = [task for tasks in specs.values() for task, _ in tasks]
    check_task_names(names, make_task_manager(names))
    assert yaml.safe_load(recipes["config_math.yaml"].read_text())["apply_chat_template"] is True
