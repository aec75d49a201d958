"""Synthesis: rejection sampling, parallel and routed modes, the cost report, durable resume, and the CLI."""

import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import datasets
import pytest
import yaml
from datasets import Dataset

from persyn_hf import cli
from persyn_hf.errors import ConfigError, DataError, OutputError
from persyn_hf.generate import GenerateArguments, SynthesisConfig, SynthesisError, run, synthesize
from persyn_hf.scripts import generate as generate_script
from persyn_hf.scripts.parser import parse_args
from persyn_hf.store import ArtifactStore
from persyn_hf.teachers import TeacherSpec
from persyn_hf.teachers.results import MANIFEST_FILE, RESULTS_FILE, ResultStore
from persyn_hf.testing.server import TeacherServer

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "Qwen2.5-1.5B-Instruct" / "generate"
QUIET = {"disable_tqdm": True, "backoff_base_s": 0.005}
GIVE_UP_FAST = {"teacher_down_timeout_s": 0.5, "probe_interval_s": 0.1}


def remote(name: str, url: str, size_b: float = 7, **overrides) -> TeacherSpec:
    return TeacherSpec(
        name=name, model_id=f"org/{name}", family="F", size_b=size_b, backend="openai", base_url=url, **overrides
    )


def scripted(answers: dict[str, list[str]]):
    """A teacher whose n-th answer to a question is `answers[question][n]`: its correctness is ours to set."""
    calls = Counter()

    def respond(messages):
        question = messages[-1]["content"]
        n = calls[question]
        calls[question] += 1
        return f"Attempt {n}: the answer is \\boxed{{{answers[question][n]}}}."

    return respond


MATH = Dataset.from_dict(
    {
        "prompt_id": ["q1", "q2", "q3"],
        "prompt": ["What is 2 + 2?", "What is 3 + 4?", "Say hi."],
        "answer": ["4", "7", None],
    }
)


def test_rejection_sampling_keeps_a_correct_sample_else_an_incorrect_one():
    small = scripted({"What is 2 + 2?": [5, 4, 6, 4], "What is 3 + 4?": [1, 2, 3, 5], "Say hi.": ["hi"]})
    large = scripted({"What is 2 + 2?": [3, 4], "What is 3 + 4?": [8, 9], "Say hi.": ["hi"]})
    long_cot = scripted({"What is 2 + 2?": [4, 1], "What is 3 + 4?": [0, 0], "Say hi.": ["hi"]})
    with TeacherServer(respond=small) as s, TeacherServer(respond=large) as big, TeacherServer(respond=long_cot) as c:
        teachers = [remote("small", s.url), remote("large", big.url, size_b=72), remote("cot", c.url, long_cot=True)]
        generations, report = synthesize(MATH, teachers, SynthesisConfig(**QUIET))
    rows = {(row["prompt_id"], row["teacher"]): row for row in generations}
    assert list(rows) == [(q, t) for q in ("q1", "q2", "q3") for t in ("small", "large", "cot")]
    assert rows["q1", "small"]["response"] in {
        "Attempt 1: the answer is \\boxed{4}.",
        "Attempt 3: the answer is \\boxed{4}.",
    }
    assert rows["q1", "large"]["response"] == "Attempt 1: the answer is \\boxed{4}."
    assert rows["q1", "cot"]["response"] == "Attempt 0: the answer is \\boxed{4}."
    assert rows["q2", "small"]["response"].startswith(("Attempt 0", "Attempt 1", "Attempt 2", "Attempt 3"))
    assert rows["q2", "large"]["response"].startswith(("Attempt 0", "Attempt 1"))
    expected = {  # (num_samples, correct)
        ("q1", "small"): (4, True), ("q1", "large"): (2, True), ("q1", "cot"): (2, True),
        ("q2", "small"): (4, False), ("q2", "large"): (2, False), ("q2", "cot"): (2, False),
        ("q3", "small"): (1, None), ("q3", "large"): (1, None), ("q3", "cot"): (1, None),
    }  # fmt: skip
    assert {key: (row["num_samples"], row["correct"]) for key, row in rows.items()} == expected
    assert {row["finish_reason"] for row in generations} == {"stop"}

    # Cost, by hand: the server counts words. Prompts: "What is 2 + 2?" 5, "What is 3 + 4?" 5, "Say hi." 2;
    # each answer "Attempt n: the answer is \boxed{x}." is 6 words + the end-of-turn token = 7.
    costs = {cost["teacher"]: cost for cost in report.to_dict()["teachers"]}
    assert costs["small"] == {
        "teacher": "small",
        "rows": 3,
        "rows_needed": 3,
        "generations": 9,  # 4 + 4 + 1
        "prompt_tokens": 42,  # 4*5 + 4*5 + 2
        "completion_tokens": 63,  # 9*7
        "gts_generations": 9,
        "gts_completion_tokens": 63,
    }
    assert (costs["large"]["generations"], costs["large"]["prompt_tokens"], costs["large"]["completion_tokens"]) == (
        5,
        22,
        35,
    )
    assert report.to_dict()["generations"] == report.to_dict()["gts_generations"] == 19


def test_stop_at_first_correct_draws_fewer_samples():
    small = scripted({"What is 2 + 2?": [5, 4, 6, 4], "What is 3 + 4?": [1, 2, 3, 5], "Say hi.": ["hi"]})
    with TeacherServer(respond=small) as server:
        generations, report = synthesize(
            MATH, [remote("small", server.url)], SynthesisConfig(stop_at_first_correct=True, **QUIET)
        )
        assert server.stats["completions"] == 2 + 4 + 1
    assert generations["num_samples"] == [2, 4, 1]
    assert generations["response"][0] == "Attempt 1: the answer is \\boxed{4}."
    assert (report.generations, report.gts_generations) == (7, 9)


def test_the_kept_incorrect_sample_is_random_and_seeded(tmp_path):
    questions = [f"What is {i} + {i}?" for i in range(20)]
    prompts = Dataset.from_dict({"prompt_id": list(range(20)), "prompt": questions, "answer": ["-1"] * 20})

    def kept(seed):
        with TeacherServer(respond=scripted({q: [1, 2, 3, 4] for q in questions})) as server:
            generations, _ = synthesize(prompts, [remote("t", server.url)], SynthesisConfig(seed=seed, **QUIET))
        assert generations["correct"] == [False] * 20
        return [response.split(":")[0] for response in generations["response"]]

    first = kept(seed=1)
    assert kept(seed=1) == first
    assert len(set(first)) > 1
    assert kept(seed=2) != first


def test_routed_mode_asks_each_teacher_only_its_prompts():
    prompts = Dataset.from_dict(
        {
            "prompt_id": [f"p{i}" for i in range(6)],
            "prompt": [f"Question {i}" for i in range(6)],
            "answer": ["1", "2", None, None, None, None],
        }
    )
    assignments = Dataset.from_dict(
        {
            "prompt_id": ["p0", "p1", "p2", "p3", "p4", "p5"],
            "teacher": ["a", "b", "a", "a", "b", "c"],
            "router_scores": [[0.0, 0.0, 0.0]] * 6,
        }
    )
    with TeacherServer() as a, TeacherServer() as b, TeacherServer() as c:
        teachers = [remote("a", a.url), remote("b", b.url, size_b=72), remote("c", c.url, long_cot=True)]
        generations, report = synthesize(prompts, teachers, SynthesisConfig(mode="routed", **QUIET), assignments)
        assert (a.stats["completions"], b.stats["completions"], c.stats["completions"]) == (6, 3, 1)
    assert list(zip(generations["prompt_id"], generations["teacher"])) == list(
        zip(assignments["prompt_id"], assignments["teacher"])
    )
    assert generations["num_samples"] == [4, 2, 1, 1, 1, 1]
    assert generations["correct"] == [False, False, None, None, None, None]
    # Generate-then-Select: 6 prompts x 3 teachers, the 2 math prompts drawn 4 (a) or 2 (b, c) times.
    costs = {cost.teacher: cost for cost in report.teachers}
    assert [(costs[t].generations, costs[t].gts_generations) for t in "abc"] == [(6, 12), (3, 8), (1, 8)]
    # every answer is "ok": 1 word + the end-of-turn token
    assert [costs[t].gts_completion_tokens for t in "abc"] == [24, 16, 16]
    assert (
        "routed: 10 generations for 6 prompts; Generate-then-Select (6 prompts x 3 teachers) needs 28 (2.80x)."
        in str(report)
    )


def test_chat_messages_are_sent_as_they_are():
    prompts = Dataset.from_dict(
        {
            "prompt_id": [0],
            "messages": [[{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}]],
        }
    )
    with TeacherServer(respond=lambda messages: "|".join(m["role"] for m in messages)) as server:
        generations, _ = synthesize(prompts, [remote("t", server.url)], SynthesisConfig(**QUIET))
    assert generations["response"] == ["system|user"]


@pytest.mark.parametrize(
    ("prompts", "config", "assignments", "match"),
    [
        ({"prompt_id": [1, 1], "prompt": ["a", "b"]}, {}, None, r"The prompts dataset repeats 1 prompt_id value\(s\): 1; keep one row per prompt_id"),
        ({"prompt_id": [1], "text": ["a"]}, {}, None, r"needs one of the columns \['prompt', 'messages'\]"),
        ({"prompt": ["a"]}, {}, None, r"lacks column\(s\) \['prompt_id'\]"),
        ({"prompt_id": [1], "prompt": [""]}, {}, None, "Prompt 1 has neither a non-empty `prompt` nor `messages`"),
        ({"prompt_id": [1], "prompt": ["a"]}, {"mode": "routed"}, None, "mode='routed' needs `assignments`"),
        ({"prompt_id": [1], "prompt": ["a"]}, {}, {"prompt_id": [1], "teacher": ["t"]}, "are for mode='routed'"),
        ({"prompt_id": [1], "prompt": ["a"]}, {"mode": "routed"}, {"prompt_id": [1], "teacher": ["x"]},
         r"name teachers \['x'\] that are not in the teacher specs \['t'\]"),
        ({"prompt_id": [1], "prompt": ["a"]}, {"mode": "routed"}, {"prompt_id": [2], "teacher": ["t"]},
         r"1 assigned prompt ids are not in the prompts dataset, e.g. \[2\]"),
        ({"prompt_id": [1], "prompt": ["a"]}, {"mode": "routed"}, {"prompt_id": [1, 1], "teacher": ["t", "t"]},
         r"The assignments dataset repeats 1 prompt_id value\(s\): 1"),
    ],
)  # fmt: skip
def test_bad_inputs_are_named(prompts, config, assignments, match, tmp_path):
    assignments = Dataset.from_dict(assignments) if assignments else None
    teachers = [remote("t", "http://127.0.0.1:9")]
    with pytest.raises(ValueError, match=match):
        synthesize(
            Dataset.from_dict(prompts), teachers, SynthesisConfig(results_dir=str(tmp_path), **config), assignments
        )
    assert not (tmp_path / RESULTS_FILE).exists()


def test_a_rerun_generates_only_what_is_missing(tmp_path):
    prompts = Dataset.from_dict({"prompt_id": list(range(10)), "prompt": [f"q{i}" for i in range(10)]})
    config = SynthesisConfig(results_dir=str(tmp_path), **QUIET)
    with TeacherServer(respond=lambda _: "first run") as server:
        synthesize(prompts.select(range(4)), [remote("t", server.url)], config)
    with TeacherServer(respond=lambda _: "second run") as server:
        generations, report = synthesize(prompts, [remote("t", server.url)], config)
        assert server.stats["completions"] == 6
    assert generations["response"] == ["first run"] * 4 + ["second run"] * 6
    assert report.generations == 10

    changed = remote("t", "http://127.0.0.1:9", generation={"temperature": 0.7})
    with pytest.raises(ConfigError, match=r"Teachers \['t'\] changed `model_id`, `model_path` or `generation`"):
        synthesize(prompts, [changed], config)


def test_a_run_that_stored_nothing_resumes_with_its_teacher_fixed(tmp_path):
    """A fingerprint is recorded with a teacher's first sample: settings that stored nothing may change."""
    prompts = Dataset.from_dict({"prompt_id": [0, 1], "prompt": ["q0", "q1"]})
    config = SynthesisConfig(results_dir=str(tmp_path), **QUIET)
    with TeacherServer(max_total_tokens=16) as server:
        with pytest.raises(SynthesisError, match=r"2 x .*HTTP 422: `max_new_tokens` must be <= 16"):
            synthesize(prompts, [remote("t", server.url, generation={"max_new_tokens": 100})], config)
        generations, _ = synthesize(prompts, [remote("t", server.url, generation={"max_new_tokens": 8})], config)
    assert generations["prompt_id"] == [0, 1]
    with pytest.raises(ConfigError, match=r"Teachers \['t'\] changed `model_id`, `model_path` or `generation`"):
        synthesize(prompts, [remote("t", "http://127.0.0.1:9", generation={"max_new_tokens": 4})], config)


@pytest.mark.parametrize(
    ("change", "column"),
    [({"prompt": ["other question"]}, None), ({"answer": ["8"]}, None), ({}, "seed")],
    ids=["prompt", "gold answer", "seed"],
)
def test_a_store_whose_ids_now_name_other_requests_is_refused(tmp_path, change, column):
    prompts = Dataset.from_dict({"prompt_id": ["p0"], "prompt": ["What is 3+4?"], "answer": ["7"]})
    config = SynthesisConfig(results_dir=str(tmp_path), samples_small=1, **QUIET)
    with TeacherServer(respond=lambda _: "The answer is 7.") as server:
        teachers = [remote("t", server.url)]
        synthesize(prompts, teachers, config)
        stored = (tmp_path / RESULTS_FILE).read_bytes()
        changed = Dataset.from_dict({**prompts.to_dict(), **change})
        again = SynthesisConfig(results_dir=str(tmp_path), samples_small=1, **QUIET, **({"seed": 7} if column else {}))
        with pytest.raises(
            DataError,
            match=r"1 samples stored in results_dir .* answer other prompts, gold answers or "
            r"`seed` .* \(e.g. prompt 'p0', teacher 't'\): use another `results_dir`",
        ):
            synthesize(changed, teachers, again)
        assert server.stats["completions"] == 1  # nothing generated the second time
    assert (tmp_path / RESULTS_FILE).read_bytes() == stored


def test_a_local_teacher_with_other_weights_is_refused(tmp_path, tiny_qwen2_path, tiny_llama_path):
    prompts = Dataset.from_dict({"prompt_id": [1], "prompt": ["q"]})
    config = SynthesisConfig(results_dir=str(tmp_path), **QUIET)
    spec = TeacherSpec(name="t", model_id="org/t", family="F", size_b=1, model_path=tiny_qwen2_path,
                       generation={"max_new_tokens": 2})  # fmt: skip
    synthesize(prompts, [spec], config)
    with pytest.raises(ConfigError, match=r"Teachers \['t'\] changed `model_id`, `model_path` or `generation`"):
        synthesize(prompts, [replace(spec, model_path=tiny_llama_path)], config)


def test_one_store_has_one_writer(tmp_path):
    prompts = Dataset.from_dict({"prompt_id": [1], "prompt": ["q"]})
    teachers = [remote("t", "http://127.0.0.1:9")]
    with ResultStore(tmp_path, teachers), pytest.raises(OutputError, match="Another run is writing"):
        synthesize(prompts, teachers, SynthesisConfig(results_dir=str(tmp_path), **QUIET))


RECORD = json.dumps({"prompt_id": 1, "teacher": "t", "sample_index": 0, "text": "x"}) + "\n"


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        (RESULTS_FILE, RECORD + '{"prompt_id": 2,\n', r"results.jsonl' line 2 is not a results record, a JSON object "
         r"with \['prompt_id', 'teacher', 'sample_index'\] \(JSONDecodeError: .*\): choose another `results_dir`"),
        (RESULTS_FILE, '{"a": 1}\n', r"line 1 is not a results record, .* \(KeyError: 'prompt_id'\)"),
        (RESULTS_FILE, "[1]\n", r"line 1 is not a results record, .* \(TypeError: "),
        (MANIFEST_FILE, "{\n", r"manifest.json' is not a results store's manifest \(a JSON object of teacher "
         r"fingerprints\): choose another `results_dir`, or delete '.*' if it is a damaged results store"),
    ],
    ids=["line not JSON", "record without its key", "record not an object", "manifest not JSON"],
)  # fmt: skip
def test_a_damaged_store_is_refused_with_its_fix(tmp_path, name, text, match):
    (tmp_path / name).write_text(text)
    with pytest.raises(OutputError, match=match), ResultStore(tmp_path, [remote("t", "http://127.0.0.1:9")]):
        pass


def test_the_manifest_is_readable_by_others(tmp_path):
    with ResultStore(tmp_path, [remote("t", "http://127.0.0.1:9")]) as store:
        store.append(json.loads(RECORD))
    assert (tmp_path / MANIFEST_FILE).stat().st_mode & 0o777 == 0o644


def test_a_torn_last_record_is_cut_off(tmp_path):
    record = {"prompt_id": 1, "teacher": "t", "sample_index": 0, "text": "x"}
    (tmp_path / RESULTS_FILE).write_text(json.dumps(record) + "\n" + '{"prompt_id": 2, "tea')
    with ResultStore(tmp_path, []) as store:
        assert list(store.records) == [(1, "t", 0)]
        store.append({**record, "prompt_id": 3})
    lines = (tmp_path / RESULTS_FILE).read_text().splitlines()
    assert [json.loads(line)["prompt_id"] for line in lines] == [1, 3]


def test_inside_an_event_loop_records_reach_the_file_when_the_loop_iteration_ends(tmp_path):
    records = [{"prompt_id": i, "teacher": "t", "sample_index": 0, "text": f"r{i}"} for i in range(3)]

    async def append_all(store: ResultStore) -> list[int]:
        store.append(records[0])
        store.append(records[1])
        written = [(tmp_path / RESULTS_FILE).read_bytes().count(b"\n")]
        await asyncio.sleep(0)  # the iteration ends: one write for both
        store.append(records[2])
        await asyncio.sleep(0)
        return [*written, (tmp_path / RESULTS_FILE).read_bytes().count(b"\n")]

    with ResultStore(tmp_path, []) as store:
        assert asyncio.run(append_all(store)) == [0, 3]
    assert [json.loads(line) for line in (tmp_path / RESULTS_FILE).read_text().splitlines()] == records


@pytest.fixture
def datasets_cache(tmp_path, monkeypatch):
    """A datasets cache of the test's own (here and in its subprocesses): `load_dataset` caches local folders
    by their name, so another test's folder of the same name could otherwise be read back instead."""
    cache = tmp_path / "datasets-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))


def run_generate(argv: list[str]) -> None:
    generate_script.main(*parse_args(generate_script.make_parser(), argv))


def test_parallel_and_routed_recipes_run_on_local_models(tmp_path, datasets_cache, tiny_qwen2_path, tiny_llama_path):
    store = ArtifactStore(tmp_path / "store")
    prompts = Dataset.from_dict(
        {"prompt_id": [0, 1, 2], "prompt": ["What is 2 + 2?", "What is 3 + 3?", "Say hi."], "answer": ["4", "6", None]}
    )
    store.save_dataset("persyn/persyn-math", prompts, config_name="prompts")
    teachers = tmp_path / "teachers.yaml"
    teachers.write_text(
        yaml.safe_dump(
            [
                {"name": "qwen", "model_id": "tiny/qwen", "family": "Qwen", "size_b": 7, "model_path": tiny_qwen2_path,
                 "generation": {"max_new_tokens": 6}},
                {"name": "llama", "model_id": "tiny/llama", "family": "Llama", "size_b": 72, "model_path": tiny_llama_path,
                 "generation": {"max_new_tokens": 6}},
            ]
        )
    )  # fmt: skip
    overrides = ["--teachers", str(teachers), "--store_root", str(store.root), "--disable_tqdm", "true"]

    run_generate(["--config", str(RECIPES / "config_parallel.yaml"), *overrides])
    parallel = store.load_dataset("persyn/persyn-math-router-subset", "generations")
    assert sorted(zip(parallel["prompt_id"], parallel["teacher"])) == sorted(
        (p, t) for p in range(3) for t in ("qwen", "llama")
    )
    assert sorted(zip(parallel["prompt_id"], parallel["teacher"], parallel["num_samples"])) == [
        (0, "llama", 2), (0, "qwen", 4), (1, "llama", 2), (1, "qwen", 4), (2, "llama", 1), (2, "qwen", 1)
    ]  # fmt: skip
    cost = json.loads(
        Path(store.location("persyn/persyn-math-router-subset"), "cost_report-generations.json").read_text()
    )
    assert (cost["mode"], cost["generations"], cost["gts_generations"]) == ("parallel", 14, 14)

    assignments = Dataset.from_dict(
        {"prompt_id": [0, 1, 2], "teacher": ["llama", "qwen", "qwen"], "router_scores": [[]] * 3}
    )
    store.save_dataset("persyn/persyn-math-assignments-Qwen2.5-1.5B-Instruct-persyn", assignments)
    run_generate(["--config", str(RECIPES / "config_routed.yaml"), *overrides])
    routed = store.load_dataset("persyn/persyn-math-routed-Qwen2.5-1.5B-Instruct")
    assert list(zip(routed["prompt_id"], routed["teacher"], routed["num_samples"])) == [
        (0, "llama", 2),
        (1, "qwen", 4),
        (2, "qwen", 1),
    ]
    assert set(routed["correct"][:2]) <= {True, False} and routed["correct"][2] is None
    # the parallel run stored these very samples: the routed run's results are the same ones
    assert (
        routed["response"][0]
        == parallel.filter(lambda r: (r["prompt_id"], r["teacher"]) == (0, "llama"))["response"][0]
    )


def test_a_killed_run_resumes_without_losing_or_redoing_anything(tmp_path, datasets_cache):
    """SIGKILL a real `persyn-hf generate` process mid-run, run it again: every row, each generated once."""
    store = ArtifactStore(tmp_path / "store")
    store.save_dataset(
        "me/prompts", Dataset.from_dict({"prompt_id": list(range(60)), "prompt": [f"q{i}" for i in range(60)]})
    )
    results = tmp_path / "results"
    with TeacherServer(latency_s=0.1, respond=lambda messages: f"answer to {messages[-1]['content']}") as server:
        teachers = tmp_path / "teachers.yaml"
        teachers.write_text(yaml.safe_dump([{**remote("t", server.url, max_concurrency=2).__dict__}]))
        command = [
            sys.executable, "-m", "persyn_hf.scripts.generate", "--prompts_repo_id", "me/prompts",
            "--teachers", str(teachers), "--generations_repo_id", "me/generations", "--store_root", str(store.root),
            "--results_dir", str(results), "--disable_tqdm", "true",
        ]  # fmt: skip
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        results_file = results / RESULTS_FILE
        deadline = time.monotonic() + 120
        while not (results_file.exists() and results_file.read_bytes().count(b"\n") >= 10):
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        time.sleep(0.5)  # requests in flight when it died finish on the server
        stored = results_file.read_bytes().count(b"\n")
        assert 10 <= stored < 60
        served = server.stats["completions"]

        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
        assert server.stats["completions"] - served == 60 - stored  # only the missing rows were generated

    generations = store.load_dataset("me/generations")
    assert sorted(generations["prompt_id"]) == list(range(60))
    assert generations["response"] == [f"answer to q{i}" for i in generations["prompt_id"]]
    records = [json.loads(line) for line in results_file.read_text().splitlines()]
    assert sorted(r["prompt_id"] for r in records) == list(range(60))


def write_teachers(path: Path, *teachers: TeacherSpec) -> str:
    path.write_text(yaml.safe_dump([dict(vars(spec)) for spec in teachers]))
    return str(path)


def test_a_partial_run_states_done_and_needed_plainly():
    prompts = Dataset.from_dict({"prompt_id": list(range(4)), "prompt": [f"q{i}" for i in range(4)]})
    with TeacherServer() as good, TeacherServer() as dead:
        dead.faults.set_rates({"503": 1.0})
        config = SynthesisConfig(allow_incomplete=True, **GIVE_UP_FAST, **QUIET)
        generations, report = synthesize(prompts, [remote("good", good.url), remote("dead", dead.url)], config)
    assert generations["teacher"] == ["good"] * 4
    table = str(report)
    assert (
        re.search(r"\ngood +4/4 ", table) and re.search(r"\ndead +0/4 ", table) and re.search(r"\ntotal +4/8 ", table)
    )
    assert table.endswith(
        "parallel: INCOMPLETE: 4 of 8 rows done (4 undone), 4 generations so far; Generate-then-Select (4 prompts x 2 "
        "teachers) needs 8. No ratio until the run is complete."
    )
    assert report.to_dict()["teachers"][1] == {
        "teacher": "dead",
        "rows": 0,
        "rows_needed": 4,
        "generations": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "gts_generations": 4,
        "gts_completion_tokens": None,
    }
    assert [failure.prompt_id for failure in report.failures] == [0, 1, 2, 3]


def test_allow_incomplete_with_no_row_writes_nothing_and_reports_the_failures(tmp_path, datasets_cache):
    store = ArtifactStore(tmp_path / "store")
    store.save_dataset("me/prompts", Dataset.from_dict({"prompt_id": [0, 1, 2], "prompt": ["a", "b", "c"]}))
    with TeacherServer() as dead:
        dead.faults.set_rates({"503": 1.0})
        args = GenerateArguments(
            "me/prompts", write_teachers(tmp_path / "t.yaml", remote("dead", dead.url)), "me/gens"
        )
        with pytest.raises(SynthesisError) as error:
            run(args, SynthesisConfig(allow_incomplete=True, **GIVE_UP_FAST, **QUIET), store)
    assert re.fullmatch(
        r"3 of 3 \(prompt, teacher\) pairs were left undone:\n.*\n      3 x teacher given up: .*first error: "
        r"TeacherHTTPError: HTTP 503: Service unavailable: injected; .*\nNo row was done, so nothing was written\.\n"
        r"Resume with:\n  persyn-hf generate --prompts_repo_id me/prompts .* --allow_incomplete true .*",
        str(error.value),
        flags=re.DOTALL,
    )
    assert len(error.value.failures) == 3
    assert not Path(store.location("me/gens")).exists()


def test_an_incomplete_run_ends_with_the_summary_and_a_resume_command_that_works(tmp_path, datasets_cache):
    store = ArtifactStore(tmp_path / "store")
    store.save_dataset(
        "me/prompts", Dataset.from_dict({"prompt_id": list(range(6)), "prompt": [f"q{i}" for i in range(6)]})
    )
    with TeacherServer() as good, TeacherServer() as flaky:
        flaky.faults.set_rates({"503": 1.0})
        teachers = write_teachers(tmp_path / "t.yaml", remote("good", good.url), remote("flaky", flaky.url))
        argv = [
            "generate", "--prompts_repo_id", "me/prompts", "--teachers", teachers, "--generations_repo_id", "me/gens",
            "--store_root", str(store.root), "--disable_tqdm", "true", "--backoff_base_s", "0.005",
            "--teacher_down_timeout_s", "0.5", "--probe_interval_s", "0.1",
        ]  # fmt: skip
        with pytest.raises(SystemExit) as exit:
            cli.main(argv)
        message = exit.value.code
        assert message.startswith(
            "persyn-hf generate: error: 6 of 12 (prompt, teacher) pairs were left undone:\n"
            f"  - flaky (openai at {flaky.url}): 6 of 6 undone\n"
            "      6 x teacher given up: not answering for "
        )
        assert "first error: TeacherHTTPError: HTTP 503: Service unavailable: injected" in message
        assert message.endswith("\n(`persyn-hf --debug generate ...` shows the traceback)")
        assert "Traceback" not in message
        resume = re.search(r"\nResume with:\n  (persyn-hf generate .*)\n", message).group(1)
        assert not Path(store.location("me/gens")).exists()

        flaky.faults.set_rates({})  # fixed
        served = good.stats["completions"]
        cli.main(shlex.split(resume)[1:])
        assert (good.stats["completions"], flaky.stats["completions"]) == (served, 6)  # only what was missing
    generations = store.load_dataset("me/gens")
    assert sorted(zip(generations["prompt_id"], generations["teacher"])) == sorted(
        (i, teacher) for i in range(6) for teacher in ("good", "flaky")
    )


def test_the_api_key_comes_from_the_environment_and_is_written_nowhere(tmp_path, datasets_cache, monkeypatch):
    monkeypatch.setenv("TEACHER_KEY", "sk-secret-123")
    store = ArtifactStore(tmp_path / "store")
    store.save_dataset("me/prompts", Dataset.from_dict({"prompt_id": [0, 1], "prompt": ["a", "b"]}))
    with TeacherServer(api_key="sk-secret-123") as server:
        teacher = remote("t", server.url, backend_args={"api_key_env": "TEACHER_KEY"})
        args = GenerateArguments("me/prompts", write_teachers(tmp_path / "t.yaml", teacher), "me/gens")
        result = run(args, SynthesisConfig(**QUIET), store)
        assert server.authorizations == {"Bearer sk-secret-123": 2}
    assert len(result.artifact) == 2
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert len(written) > 5 and not [path for path in written if b"sk-secret-123" in path.read_bytes()]
