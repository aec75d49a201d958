import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import yaml
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from persyn_hf.cli import main as cli
from persyn_hf.learnability import learnability_scores
from persyn_hf.store import ArtifactStore

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes" / "Qwen2.5-1.5B-Instruct"
PROMPTS = {
    "prompt_id": ["p0", "p1", "p2"],
    "prompt": ["What is 12 + 7?", "Compute 345 - 129.", "What is 2 + 2?"],
    "answer": ["19", "216", "4"],
}
RESPONSES = {
    "terse": ["19", "216", "5"],  # correct, correct, wrong
    "verbose": [
        "12 + 7 = 19. The answer is 19.",
        "345 - 129 = 226. The answer is 226.",
        "2 + 2 = 4. The answer is 4.",
    ],
}
GENERATIONS = {
    "prompt_id": PROMPTS["prompt_id"] * 2,
    "teacher": ["terse"] * 3 + ["verbose"] * 3,
    "response": RESPONSES["terse"] + RESPONSES["verbose"],
    "finish_reason": ["stop"] * 6,
}
TEACHERS = [
    {"name": "terse", "model_id": "org/terse", "family": "Tiny", "size_b": 0.1},
    {"name": "verbose", "model_id": "org/verbose", "family": "Tiny", "size_b": 0.5},
]


@pytest.fixture
def store(tmp_path, monkeypatch):
    # A datasets cache of its own (also for the accelerate subprocess), so that no cached artifact of another
    # test or run can stand in for the one a test just wrote.
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")
    store = ArtifactStore(tmp_path / "store")
    store.save_dataset("local/prompts", Dataset.from_dict(PROMPTS))
    store.save_dataset("local/generations", Dataset.from_dict(GENERATIONS))
    return store


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def score_argv(store, student, **overrides):
    options = {
        "generations_repo_id": "local/generations",
        "generations_config": "default",
        "prompts_repo_id": "local/prompts",
        "prompts_config": "default",
        "scores_repo_id": "local/scores",
        "student": student,
        "store_root": str(store.root),
        "dtype": "float32",
        **overrides,
    }
    return ["--config", str(RECIPES / "score" / "config_math.yaml")] + [f"--{k}={v}" for k, v in options.items()]


def test_score_then_select_from_the_recipes(store, tiny_qwen2_path, tmp_path):
    cli(["score", *score_argv(store, tiny_qwen2_path)])
    scores = store.load_dataset("local/scores")
    assert scores.column_names == ["prompt_id", "teacher", "quality", "learnability", "reward"]
    assert scores["quality"] == [1.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_path)
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen2_path)
    messages = [[{"role": "user", "content": p}] for p in PROMPTS["prompt"]] * 2
    expected = learnability_scores(model, tokenizer, messages, GENERATIONS["response"], show_progress=False).scores
    assert scores["learnability"] == pytest.approx(expected, abs=1e-5)
    # reward = .6 minmax(quality) + .4 minmax(learnability) across the two teachers of each prompt; a tie -> .5 each
    for i in range(3):
        terse, verbose = scores["quality"][i], scores["quality"][i + 3]
        quality = (0.5, 0.5) if terse == verbose else (terse, verbose)
        learns = (1.0, 0.0) if expected[i] > expected[i + 3] else (0.0, 1.0)
        assert scores["reward"][i] == pytest.approx(0.6 * quality[0] + 0.4 * learns[0])
        assert scores["reward"][i + 3] == pytest.approx(0.6 * quality[1] + 0.4 * learns[1])

    teachers = tmp_path / "teachers.yaml"
    teachers.write_text(yaml.safe_dump({"teachers": TEACHERS}))
    common = [
        "--config", str(RECIPES / "select" / "config_baselines_math.yaml"),
        "--prompts_repo_id=local/prompts", "--prompts_config=default", "--scores_repo_id=local/scores",
        f"--teachers={teachers}",
        f"--store_root={store.root}", "--student_family=Tiny",
    ]  # fmt: skip
    cli(["select", *common, "--assignments_repo_id=local/oracle"])
    oracle = store.load_dataset("local/oracle")
    assert oracle["prompt_id"] == ["p0", "p1", "p2"]
    # p1 and p2: the only correct teacher wins on quality (.6 > .4); p0: both correct, the more learnable wins
    assert oracle["teacher"] == ["terse" if expected[0] > expected[3] else "verbose", "terse", "verbose"]
    assert oracle["router_scores"] == [[], [], []]
    cli(
        [
            "select",
            *common,
            "--strategy=family_strong",
            "--family_strong_teacher=verbose",
            "--assignments_repo_id=local/family",
        ]
    )
    assert store.load_dataset("local/family")["teacher"] == ["verbose"] * 3


def test_bad_input_names_the_column_and_stage_and_writes_nothing(store, tiny_qwen2_path, capsys):
    store.save_dataset("local/no-response", Dataset.from_dict(GENERATIONS).remove_columns("response"))
    with pytest.raises(
        SystemExit, match=r"generations dataset lacks column\(s\) \['response'\].*`persyn-hf generate`"
    ):
        cli(["score", *score_argv(store, tiny_qwen2_path, generations_repo_id="local/no-response")])
    for option, message in [
        ({"alpha": 2.0}, "`alpha` must be in [0, 1], got 2.0"),
        ({"quality_scorer": "bleu"}, "Unknown `quality_scorer` 'bleu'; choose one of ['reward_model', 'math_verify'"),
    ]:
        with pytest.raises(SystemExit):  # config errors are usage errors: the message, no traceback
            cli(["score", *score_argv(store, tiny_qwen2_path, **option)])
        assert message in capsys.readouterr().err
    assert not os.path.exists(store.location("local/scores"))


def test_a_teacher_missing_for_some_prompts_gives_nan_not_a_crash(store, tiny_qwen2_path):
    store.save_dataset("local/partial", Dataset.from_dict(GENERATIONS).select([0, 1, 2, 3]))  # verbose: p0 only
    cli(["score", *score_argv(store, tiny_qwen2_path, generations_repo_id="local/partial")])
    scores = store.load_dataset("local/scores")
    assert len(scores) == 4
    # p1, p2 have one teacher each: constant rows normalise to 0.5 -> reward .6 * .5 + .4 * .5
    assert scores["reward"][1] == pytest.approx(0.5) and scores["reward"][2] == pytest.approx(0.5)
    assert not any(math.isnan(r) for r in scores["reward"])


@pytest.mark.slow
@pytest.mark.parametrize("quality_scorer", ["math_verify", "reward_model"])
def test_score_in_two_processes_matches_one(store, tiny_qwen2_path, tiny_reward_model_path, quality_scorer):
    options = {"quality_scorer": quality_scorer, "reward_model": tiny_reward_model_path}
    cli(["score", *score_argv(store, tiny_qwen2_path, **options)])
    # what `accelerate launch --num_processes 2` runs: torchrun, two processes
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    launch += ["-m", "persyn_hf.scripts.score"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    argv = score_argv(store, tiny_qwen2_path, scores_repo_id="local/scores-2proc", **options)
    result = subprocess.run(launch + argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = store.load_dataset("local/scores"), store.load_dataset("local/scores-2proc")
    assert two["prompt_id"] == one["prompt_id"] and two["teacher"] == one["teacher"]
    assert two["quality"] == pytest.approx(one["quality"], abs=1e-5)
    assert len(set(one["quality"])) == (2 if quality_scorer == "math_verify" else 6)  # correct/not, or six logits
    assert two["learnability"] == pytest.approx(one["learnability"], abs=1e-5)
    assert result.stdout.count("Wrote 6 scores") == 1  # written once, by the main process
    assert "Scoring 6 responses over 2 process(es)" in result.stderr


def test_learnability_on_an_openai_server_equals_local_and_nan_reasons_are_printed(store, tiny_qwen2_path, capsys):
    from persyn_hf.testing.server import TeacherServer

    generations = dict(GENERATIONS, response=[*GENERATIONS["response"][:5], "  "])  # the last one is blank
    store.save_dataset("local/blank", Dataset.from_dict(generations))
    cli(["score", *score_argv(store, tiny_qwen2_path, generations_repo_id="local/blank")])
    local = store.load_dataset("local/scores")["learnability"]
    assert "learnability: 5 of 6 responses scored; NaN: 1 empty_response" in capsys.readouterr().out
    with TeacherServer(model_path=tiny_qwen2_path) as server:
        options = {"generations_repo_id": "local/blank", "scores_repo_id": "local/scores-engine"}
        engine_options = {"learnability_backend": "openai", "learnability_base_url": server.url}
        cli(["score", *score_argv(store, tiny_qwen2_path, **options, **engine_options)])
    engine = store.load_dataset("local/scores-engine")["learnability"]
    assert engine[:5] == pytest.approx(local[:5], abs=1e-4) and math.isnan(engine[5]) and math.isnan(local[5])


def test_learnability_a_server_failed_is_computed_again_on_the_next_run(store, tiny_qwen2_path, capsys):
    from persyn_hf.testing.server import TeacherServer

    with TeacherServer() as down:  # answers the probe, but without a model fails every request (HTTP 400)
        port = down.port
        engine_options = {"learnability_backend": "openai", "learnability_base_url": down.url}
        cli(["score", *score_argv(store, tiny_qwen2_path, **engine_options)])
    assert "learnability: 0 of 6 responses scored; NaN: 6 engine_error" in capsys.readouterr().out
    assert all(math.isnan(value) for value in store.load_dataset("local/scores")["learnability"])
    with TeacherServer(model_path=tiny_qwen2_path, port=port) as server:  # the same URL, now serving the student
        cli(["score", *score_argv(store, tiny_qwen2_path, scores_repo_id="local/scores-again", **engine_options)])
        assert server.stats["requests_completions"] == 6
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_path)
    messages = [[{"role": "user", "content": p}] for p in PROMPTS["prompt"]] * 2
    local = learnability_scores(
        model, AutoTokenizer.from_pretrained(tiny_qwen2_path), messages, GENERATIONS["response"]
    )
    assert store.load_dataset("local/scores-again")["learnability"] == pytest.approx(local.scores, abs=1e-4)


def test_scores_are_kept_so_another_alpha_only_remixes_them(store, tiny_qwen2_path, caplog):
    cli(["score", *score_argv(store, tiny_qwen2_path)])
    caplog.clear()
    with caplog.at_level("INFO", logger="persyn_hf"):
        cli(["score", *score_argv(store, tiny_qwen2_path, alpha=1.0, scores_repo_id="local/scores-alpha-1")])
    assert "Reusing the quality scores" in caplog.text and "Reusing the learnability scores" in caplog.text
    store.save_dataset("local/prompts", Dataset.from_dict(dict(PROMPTS, answer=["19", "216", "5"])))
    caplog.clear()
    with caplog.at_level("INFO", logger="persyn_hf"):  # a corrected gold answer: quality again, learnability kept
        cli(["score", *score_argv(store, tiny_qwen2_path, scores_repo_id="local/scores-new-gold")])
    assert "Reusing the quality scores" not in caplog.text and "Reusing the learnability scores" in caplog.text
    assert store.load_dataset("local/scores-new-gold")["quality"] == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    first, again = store.load_dataset("local/scores"), store.load_dataset("local/scores-alpha-1")
    assert again["learnability"] == first["learnability"] and again["quality"] == first["quality"]
    # α = 1: the reward is learnability alone, min-max normalised across the two teachers of each prompt
    for i in range(3):
        terse, verbose = first["learnability"][i], first["learnability"][i + 3]
        assert again["reward"][i] == float(terse > verbose) and again["reward"][i + 3] == float(verbose > terse)


def test_a_damaged_score_cache_is_computed_again(store, tiny_qwen2_path, caplog):
    cli(["score", *score_argv(store, tiny_qwen2_path)])
    kept = sorted(Path(store.root, ".persyn-results", "scores").glob("*.json"))
    assert [path.name.split("-")[0] for path in kept] == ["learnability", "quality"]
    for path in kept:  # cut short, as a full disk or a killed run leaves a file
        path.write_text(path.read_text()[: len(path.read_text()) // 2])
    caplog.clear()
    with caplog.at_level("INFO", logger="persyn_hf"):
        cli(["score", *score_argv(store, tiny_qwen2_path, scores_repo_id="local/scores-again")])
    assert caplog.text.count("cannot be read") == 2 and "Reusing" not in caplog.text
    first, again = store.load_dataset("local/scores"), store.load_dataset("local/scores-again")
    assert again["quality"] == first["quality"] == [1.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    assert again["learnability"] == pytest.approx(first["learnability"], abs=1e-6)
    assert all(json.loads(path.read_text()) for path in kept)  # written whole again
