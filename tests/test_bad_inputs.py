"""Every bad input gets one clear line, and nothing a user had is ever lost.

Each case runs a real `persyn-hf` verb in process on a small world of inputs (built once for the module) and checks
the exit status, the one line it prints (what is wrong, where, and the fix), that no traceback is shown, and that
the world (the artifact store, the inputs, every output location) holds exactly what it held before. Every case
fails before any model is loaded. The last tests run `sft` and `train-router` for real, beside files of the user's
own, and check what they publish.
"""

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from datasets import Dataset
from transformers import PreTrainedModel

from persyn_hf.cli import main
from persyn_hf.errors import DataError
from persyn_hf.router import PersynRouterModel
from persyn_hf.scripts import VERBS
from persyn_hf.store import PICKLE_SUFFIXES, ArtifactStore

PROMPTS = {"prompt_id": ["p0", "p1", "p2"], "prompt": ["1 + 1?", "2 + 2?", "3 + 3?"], "answer": ["2", "4", "6"]}
GENERATIONS = {"prompt_id": PROMPTS["prompt_id"] * 2, "teacher": ["a"] * 3 + ["b"] * 3, "response": list("247256")}
SCORES = {
    "prompt_id": GENERATIONS["prompt_id"],
    "teacher": GENERATIONS["teacher"],
    "quality": [1.0, 1.0, 0.0, 1.0, 0.0, 1.0],
    "learnability": [-1.0, -2.0, -1.0, -2.0, -1.0, -2.0],
    "reward": [0.5, 0.6, 0.2, 0.4, 0.1, 0.9],
}
ASSIGNMENTS = {"prompt_id": PROMPTS["prompt_id"], "teacher": ["a", "b", "a"]}
MAGPIE_REWARD = "Skywork-Reward-Llama-3.1-8B"


def repeated(columns: dict) -> dict:
    """`columns` with their first row again at the end."""
    return {name: values + values[:1] for name, values in columns.items()}


def sft_rows(strategies: list[str]) -> list[dict]:
    """Rows of the sft contract, one per strategy given."""
    return [
        {
            "prompt": [{"role": "user", "content": f"What is {i} + {i}?"}],
            "completion": [{"role": "assistant", "content": f"The answer is {2 * i}."}],
            "prompt_id": f"p{i}",
            "teacher": "a",
            "strategy": strategy,
            "reward": 0.5,
        }
        for i, strategy in enumerate(strategies)
    ]


def write_without_rows(store: ArtifactStore, repo_id: str, columns: dict) -> None:
    """An artifact whose parquet file has the right columns and no rows (the store itself refuses to write one)."""
    store.save_dataset(repo_id, Dataset.from_dict(columns))
    path = Path(store.location(repo_id), "data", "train-00000-of-00001.parquet")
    pq.write_table(pq.read_table(path).slice(0, 0), path)


def write_magpie(path: Path, uuids: list[str]) -> None:
    """A source in Magpie-Zoo's schema: `uuid`, `instruction`, one struct per teacher."""
    columns = {"uuid": uuids, "instruction": [f"Instruction {i}" for i in range(len(uuids))]}
    for teacher in ("a", "b"):
        columns[teacher] = [{"content": f"{teacher} {i}", MAGPIE_REWARD: float(i)} for i in range(len(uuids))]
    pq.write_table(pa.table(columns), path)


def teachers_yaml(names: str, model_path: str) -> str:
    """Teacher specs of `local` teachers named by the letters of `names`, all with the weights at `model_path`."""
    specs = [
        {"name": name, "model_id": f"org/{name}", "family": "Tiny", "size_b": 0.1, "model_path": model_path}
        for name in names
    ]
    return yaml.safe_dump({"teachers": specs})


def write_inputs(root: Path, lm: str) -> None:
    """Teacher specs, builder sources and files of the user's own, beside the store."""
    (root / "store" / "u" / "file").write_text("a file where a folder would go")
    for repo_id, name in (("u/mine", "README.md"), ("u/mine-model", "config.json")):
        (root / "store" / repo_id).mkdir()
        (root / "store" / repo_id / name).write_text("the user's own")
    (root / "teachers.yaml").write_text(teachers_yaml("ab", lm))
    (root / "teachers3.yaml").write_text(teachers_yaml("abc", lm))
    (root / "teachers-latin1.yaml").write_bytes(teachers_yaml("ab", lm).encode().replace(b"org/a", b"org/\xe9"))
    (root / "teachers-no-weights.yaml").write_text(teachers_yaml("ab", str(root / "no-weights")))
    write_magpie(root / "magpie.parquet", ["u0", "u1", "u2"])
    write_magpie(root / "magpie-dup.parquet", ["u0", "u1", "u0"])
    (root / "magpie.jsonl").write_bytes(b'{"uuid": "u0", "instruction": "Caf\xe9?"}\n')
    (root / "empty.jsonl").write_text("")
    openr1 = {"problem": ["1 + 1", "2 + 2", "1 + 1"], "answer": ["2", "4", "2"], "source": ["x"] * 3}
    pq.write_table(pa.table({**openr1, "uuid": ["m0", "m1", "m0"]}), root / "openr1-dup.parquet")
    pq.write_table(pa.table({**openr1, "uuid": ["m0", "m1", "m2"]}), root / "openr1.parquet")
    (root / "not-a-model").mkdir()
    for folder, name, text in (
        ("mine", "notes.txt", "the user's own"),
        ("other-manifest", "manifest.json", '{"my": "notes"}'),
        ("other-results", "results.jsonl", '{"a": 1}\n{"b": 2}'),  # no newline at the end: not a torn record
    ):
        (root / folder).mkdir()
        (root / folder / name).write_text(text)


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_qwen2_path):
    """The inputs every case reads: a store of good, repeated, empty and truncated artifacts, a router, teacher
    specs, sources in the builders' schemas, and files of the user's own where outputs would go."""
    root = tmp_path_factory.mktemp("world")
    with pytest.MonkeyPatch.context() as patch:  # a private `datasets` cache: nothing cached elsewhere stands in
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("datasets-cache")))
        store = ArtifactStore(root / "store")
        for repo_id, columns in {
            "u/prompts": PROMPTS,
            "u/prompts-dup": repeated(PROMPTS),
            "u/prompts-no-answer": {key: PROMPTS[key] for key in ("prompt_id", "prompt")},
            "u/gens": GENERATIONS,
            "u/gens-dup": repeated(GENERATIONS),
            "u/scores": SCORES,
            "u/scores-dup": repeated(SCORES),
            "u/assign": ASSIGNMENTS,
            "u/assign-dup": repeated(ASSIGNMENTS),
            "u/assign-unknown": {"prompt_id": ["p0", "p1"], "teacher": ["a", "zz"]},
            "u/truncated": PROMPTS,
        }.items():
            store.save_dataset(repo_id, Dataset.from_dict(columns))
        store.save_dataset("u/heldout", Dataset.from_dict(PROMPTS), split="test")
        store.save_dataset("u/heldout-dup", Dataset.from_dict(repeated(PROMPTS)), split="test")
        write_without_rows(store, "u/empty", PROMPTS)
        truncated = Path(store.location("u/truncated"), "data", "train-00000-of-00001.parquet")
        truncated.write_bytes(truncated.read_bytes()[:100])
        store.save_dataset("u/sft", Dataset.from_list(sft_rows(["persyn"] * 3)))
        store.save_dataset("u/sft-mixed", Dataset.from_list(sft_rows(["persyn", "persyn", "oracle"])))
        store.save_dataset("u/sft-dup", Dataset.from_list(sft_rows(["persyn"] * 3) * 2))
        router, tokenizer = PersynRouterModel.from_backbone(tiny_qwen2_path, teachers=["a", "b"])
        store.save_model("u/router", router, tokenizer)
        write_inputs(root, tiny_qwen2_path)
        yield {"w": str(root), "lm": tiny_qwen2_path}


# The recipes the cases break, one per verb; `{w}` is the world's folder, `{lm}` a tiny causal LM.
GENERATE = {"prompts_repo_id": "u/prompts", "teachers": "{w}/teachers.yaml", "generations_repo_id": "u/gens-out"}
SCORE = {
    "generations_repo_id": "u/gens",
    "prompts_repo_id": "u/prompts",
    "student": "{lm}",
    "scores_repo_id": "u/scores-out",
    "quality_scorer": "math_verify",
    "dtype": "float32",
}
TRAIN_ROUTER = {
    "scores_repo_id": "u/scores",
    "prompts_repo_id": "u/prompts",
    "teachers": "{w}/teachers.yaml",
    "router_repo_id": "u/router-out",
    "model_name_or_path": "{lm}",
    "output_dir": "{w}/router-training",
    "eval_size": 0,
    "max_steps": 1,
    "use_cpu": True,
    "report_to": "none",
}
ROUTE = {"router_repo_id": "u/router", "prompts_repo_id": "u/prompts", "assignments_repo_id": "u/routed"}
SELECT = {
    "prompts_repo_id": "u/prompts",
    "scores_repo_id": "u/scores",
    "teachers": "{w}/teachers.yaml",
    "assignments_repo_id": "u/selected",
    "strategy": "oracle",
}
MAGPIE_ZOO = {
    "source": "{w}/magpie.parquet",
    "teachers": "{w}/teachers.yaml",
    "output_repo_id": "u/magpie",
    "num_train_prompts": 3,
    "num_router_prompts": 2,
}
PERSYN_MATH = {
    "source": "{w}/openr1.parquet",
    "teachers": "{w}/teachers.yaml",
    "output_repo_id": "u/math",
    "num_problems": 2,
}
PERSONALIZED = {
    "strategy": "oracle",
    "student": "{lm}",
    "assignments_repo_id": "u/assign",
    "generations_repo_id": "u/gens",
    "generations_config": "default",
    "prompts_repo_id": "u/prompts",
    "prompts_config": "default",
    "teachers": "{w}/teachers.yaml",
    "dataset_repo_id": "u/personalized",
}
SFT = {
    "dataset_repo_id": "u/sft",
    "student_repo_id": "u/student",
    "model_name_or_path": "{lm}",
    "output_dir": "{w}/sft-training",
    "max_steps": 1,
    "per_device_train_batch_size": 2,
    "max_length": 32,
    "bf16": False,
    "use_cpu": True,
    "save_strategy": "no",
    "report_to": "none",
}
EVAL = {
    "model_name_or_path": "{lm}",
    "heldout_repo_id": "u/heldout",
    "output_dir": "{w}/eval",
    "device": "cpu",
    "limit": 1,
}
DEMO = {"output_dir": "{w}/demo", "cache_dir": "{w}/demo-cache", "quick": True}
NOT_FOUND = "is neither a local folder nor an artifact in the store at '{w}/store'"
FILE_IN_THE_WAY = "cannot be written: '{w}/store/u/file' is a file, not a folder; move it or choose another"
LATIN1 = b"# a recipe\nstudent: caf\xe9\n"


@dataclass
class Case:
    """`persyn-hf <verb> --config <recipe> --store_root <world's store> <flags>` and what it must print."""

    verb: list[str]
    recipe: dict | str | bytes | None  # a mapping is written as YAML, text and bytes as they are; None: no file
    status: int  # 2: a usage error (the recipe or a flag), 1: a mistake the stage finds
    message: str  # `{recipe}` is the recipe's path, `{w}` the world's folder
    flags: list[str] = field(default_factory=list)


CASES = {
    # The recipe and the command line: read strictly, unknown names first
    "recipe that does not exist": Case(
        ["score"], None, 2, "The recipe '{recipe}' does not exist or is not a file: give the path of a YAML recipe."
    ),
    "recipe not UTF-8": Case(
        ["score"], LATIN1, 2, "The recipe '{recipe}' is not UTF-8 text: byte 0xe9 at line 2, column 13; save it as"
    ),
    "recipe not a mapping": Case(
        ["route"], "- u/router\n- u/prompts\n", 2, "must be a YAML mapping of `field: value` lines, got list"
    ),
    "recipe not YAML": Case(["route"], "router_repo_id: [u/router\n", 2, "is not valid YAML at line 2, column 1"),
    "misspelt key reported before the check it hides": Case(
        ["score"],
        {**SCORE, "quality_scorer": "reward_model", "alpah": 0.5},
        2,
        "unknown key `alpah` in the recipe '{recipe}' (did you mean `alpha`?) (`persyn-hf score --help` lists",
    ),
    "misspelt TrainingArguments key": Case(
        ["train-router"],
        {**TRAIN_ROUTER, "learning_rat": 0.1, "eval_size": 2.5},
        2,
        "unknown key `learning_rat` in the recipe '{recipe}' (did you mean `learning_rate`?)",
    ),
    "misspelt flag": Case(
        ["route"], ROUTE, 2, "unknown flag `--batch_sise` (did you mean `--batch_size`?)", ["--batch_sise", "8"]
    ),
    "a list for an integer": Case(
        ["score"], {**SCORE, "batch_size": [8, 16]}, 2, "`batch_size` in the recipe '{recipe}' must be an integer"
    ),
    "null for a field that needs a value": Case(
        ["score"], {**SCORE, "alpha": None}, 2, "`alpha` in the recipe '{recipe}' is null: give it a value, or drop"
    ),
    "text for a number": Case(
        ["sft"], {**SFT, "learning_rate": "fast"}, 2, "`learning_rate` in the recipe '{recipe}' must be a number"
    ),
    "a value out of range": Case(["score"], {**SCORE, "alpha": 1.5}, 2, "`alpha` must be in [0, 1], got 1.5"),
    "a required field missing": Case(
        ["route"], {"router_repo_id": "u/router"}, 2, "the following arguments are required: --prompts_repo_id"
    ),
    # generate
    "generate: repeated prompt ids": Case(
        ["generate"],
        {**GENERATE, "prompts_repo_id": "u/prompts-dup"},
        1,
        "The prompts dataset ('u/prompts-dup', config 'default', split 'train') repeats 1 prompt_id value(s): 'p0'; "
        "keep one row per prompt_id.",
    ),
    "generate: repeated assignments": Case(
        ["generate"],
        {**GENERATE, "mode": "routed", "assignments_repo_id": "u/assign-dup"},
        1,
        "The assignments dataset ('u/assign-dup', config 'default', split 'train') repeats 1 prompt_id value(s)",
    ),
    "generate: an assignment to an undeclared teacher": Case(
        ["generate"],
        {**GENERATE, "mode": "routed", "assignments_repo_id": "u/assign-unknown"},
        1,
        "Assignments name teachers ['zz'] that are not in the teacher specs ['a', 'b'].",
    ),
    "generate: no teachers file": Case(
        ["generate"],
        {**GENERATE, "teachers": "{w}/nope.yaml"},
        1,
        "The teachers file '{w}/nope.yaml' does not exist",
    ),
    "generate: teachers file not UTF-8": Case(
        ["generate"],
        {**GENERATE, "teachers": "{w}/teachers-latin1.yaml"},
        1,
        "The teachers file '{w}/teachers-latin1.yaml' is not UTF-8 text: byte 0xe9 at line",
    ),
    "generate: a local teacher without weights": Case(
        ["generate"],
        {**GENERATE, "teachers": "{w}/teachers-no-weights.yaml"},
        1,
        "`a.model_path` '{w}/no-weights' " + NOT_FOUND,
    ),
    "generate: prompts without rows": Case(
        ["generate"],
        {**GENERATE, "prompts_repo_id": "u/empty"},
        1,
        "The dataset 'u/empty' config 'default' split 'train' ({w}/store/u/empty/data/train-00000-of-00001.parquet) "
        "has no rows: write it again with the stage that produces it.",
    ),
    "generate: results_dir is a file": Case(
        ["generate"],
        {**GENERATE, "results_dir": "{w}/store/u/file"},
        1,
        "`results_dir` '{w}/store/u/file' cannot be written: '{w}/store/u/file' is a file, not a folder",
    ),
    "generate: results_dir holds the user's own files": Case(
        ["generate"],
        {**GENERATE, "results_dir": "{w}/mine"},
        1,
        "`results_dir` '{w}/mine' is not a results store: it holds ['notes.txt'] and no manifest.json; choose a new "
        "or empty folder as `results_dir`.",
    ),
    "generate: results_dir holds another program's manifest.json": Case(
        ["generate"],
        {**GENERATE, "results_dir": "{w}/other-manifest"},
        1,
        "'{w}/other-manifest/manifest.json' is not a results store's manifest",
    ),
    "generate: results_dir holds another program's results.jsonl": Case(
        ["generate"],
        {**GENERATE, "results_dir": "{w}/other-results"},
        1,
        "'{w}/other-results/results.jsonl' line 1 is not a results record, a JSON object with ['prompt_id', "
        "'teacher', 'sample_index'] (KeyError: 'prompt_id')",
    ),
    "generate: output location is a file": Case(
        ["generate"],
        {**GENERATE, "generations_repo_id": "u/file"},
        1,
        "`generations_repo_id` 'u/file' " + FILE_IN_THE_WAY,
    ),
    # score
    "score: repeated (prompt_id, teacher)": Case(
        ["score"],
        {**SCORE, "generations_repo_id": "u/gens-dup"},
        1,
        "The generations dataset ('u/gens-dup', config 'default', split 'train') repeats 1 (prompt_id, teacher) "
        "value(s): ('p0', 'a'); keep one row per (prompt_id, teacher).",
    ),
    "score: repeated prompt ids (another row's gold answer)": Case(
        ["score"], {**SCORE, "prompts_repo_id": "u/prompts-dup"}, 1, "repeats 1 prompt_id value(s): 'p0'"
    ),
    "score: store_root is a file": Case(
        ["score"], SCORE, 1, "`scores_repo_id` 'u/scores-out' " + FILE_IN_THE_WAY, ["--store_root", "{w}/store/u/file"]
    ),
    "score: malformed repo id": Case(
        ["score"],
        {**SCORE, "scores_repo_id": "u/a/b"},
        1,
        "`scores_repo_id`: `repo_id` must look like 'name' or 'user/name', got 'u/a/b'",
    ),
    "score: the user's own README where the card goes": Case(
        ["score"],
        {**SCORE, "scores_repo_id": "u/mine"},
        1,
        "`scores_repo_id` 'u/mine': '{w}/store/u/mine' holds file(s) ['README.md'] that persyn-hf did not write; "
        "saving would overwrite them: move them away, or choose another repo id or `store_root`.",
    ),
    "score: a student that is no model": Case(
        ["score"],
        {**SCORE, "student": "{w}/not-a-model"},
        1,
        "`student` '{w}/not-a-model' is not a model: '{w}/not-a-model' holds no `config.json`",
    ),
    "score: no reward model": Case(
        ["score"],
        {**SCORE, "quality_scorer": "reward_model", "reward_model": "{w}/no-reward-model"},
        1,
        "`reward_model` '{w}/no-reward-model' " + NOT_FOUND,
    ),
    "score: no such artifact": Case(
        ["score"], {**SCORE, "generations_repo_id": "u/nothing"}, 1, "No dataset 'u/nothing' in the store at"
    ),
    "score: no such config": Case(
        ["score"],
        {**SCORE, "prompts_config": "router"},
        1,
        "No config 'router' in the stored dataset 'u/prompts' at {w}/store/u/prompts; found ['default']",
    ),
    "score: no such split": Case(
        ["score"],
        {**SCORE, "generations_split": "router"},
        1,
        "No split 'router' in 'u/gens' config 'default'; found ['train']",
    ),
    "score: a truncated parquet file": Case(
        ["score"],
        {**SCORE, "prompts_repo_id": "u/truncated"},
        1,
        "Cannot read 'u/truncated' config 'default' split 'train' "
        "({w}/store/u/truncated/data/train-00000-of-00001.parquet): ArrowInvalid",
    ),
    "score: math_verify without gold answers": Case(
        ["score"],
        {**SCORE, "prompts_repo_id": "u/prompts-no-answer"},
        1,
        "The prompts dataset lacks column(s) ['answer']: `quality_scorer: math_verify` compares",
    ),
    # train-router
    "train-router: malformed repo id (before training)": Case(
        ["train-router"], {**TRAIN_ROUTER, "router_repo_id": "u/a/b"}, 1, "`router_repo_id`: `repo_id` must look like"
    ),
    "train-router: output_dir is a file": Case(
        ["train-router"],
        {**TRAIN_ROUTER, "output_dir": "{w}/store/u/file"},
        1,
        "`output_dir` '{w}/store/u/file' cannot be written: '{w}/store/u/file' is a file, not a folder; move it or "
        "choose another `output_dir`.",
    ),
    "train-router: a Hub backbone while offline": Case(
        ["train-router"],
        {**TRAIN_ROUTER, "model_name_or_path": "Qwen/Qwen2.5-1.5B"},
        1,
        "`model_name_or_path` 'Qwen/Qwen2.5-1.5B' " + NOT_FOUND + " (and the Hub is offline: HF_HUB_OFFLINE is set, "
        "and it is not in the local Hugging Face cache); download it while online",
    ),
    "train-router: repeated scores": Case(
        ["train-router"],
        {**TRAIN_ROUTER, "scores_repo_id": "u/scores-dup"},
        1,
        "The scores dataset ('u/scores-dup', config 'default', split 'train') repeats 1 (prompt_id, teacher)",
    ),
    "train-router: scores of other teachers": Case(
        ["train-router"],
        {**TRAIN_ROUTER, "teachers": "{w}/teachers3.yaml"},
        1,
        "The scores' teachers ['a', 'b'] differ from the teachers of {w}/teachers3.yaml ['a', 'b', 'c']",
    ),
    "train-router: the user's own config.json where the router goes": Case(
        ["train-router"],
        {**TRAIN_ROUTER, "router_repo_id": "u/mine-model"},
        1,
        "`router_repo_id` 'u/mine-model': '{w}/store/u/mine-model' holds file(s) ['config.json']",
    ),
    # route
    "route: repeated prompt ids": Case(
        ["route"], {**ROUTE, "prompts_repo_id": "u/prompts-dup"}, 1, "repeats 1 prompt_id value(s): 'p0'"
    ),
    "route: a model that is no router": Case(
        ["route"],
        {**ROUTE, "router_repo_id": "{lm}"},
        1,
        "`router_repo_id` '{lm}' is a 'qwen2' model, not a 'persyn-router' one",
    ),
    "route: no router": Case(["route"], {**ROUTE, "router_repo_id": "u/nothing"}, 1, "`router_repo_id` 'u/nothing' "),
    "route: no such prompt column": Case(
        ["route"],
        {**ROUTE, "prompt_column": "question"},
        1,
        "The prompts dataset has no `question` column (columns: ['prompt_id', 'prompt', 'answer']): set "
        "`prompt_column`",
    ),
    # select
    "select: repeated prompt ids (one assignment each)": Case(
        ["select"], {**SELECT, "prompts_repo_id": "u/prompts-dup"}, 1, "repeats 1 prompt_id value(s): 'p0'"
    ),
    "select: repeated scores": Case(
        ["select"], {**SELECT, "scores_repo_id": "u/scores-dup"}, 1, "repeats 1 (prompt_id, teacher) value(s)"
    ),
    "select: an undeclared strong teacher": Case(
        ["select"],
        {**SELECT, "strategy": "strong", "strong_teacher": "zz"},
        1,
        "`strong_teacher` 'zz' is not a declared teacher; choose one of ['a', 'b']",
    ),
    "select: unknown strategy": Case(["select"], {**SELECT, "strategy": "oracel"}, 2, "Unknown `strategy` 'oracel'"),
    "select: the Hub while it is offline": Case(
        ["select"],
        SELECT,
        1,
        "`assignments_repo_id` 'u/selected' cannot be pushed: `hub: true` but the Hub is offline",
        ["--hub", "true"],
    ),
    "select: persyn with a model that is no router": Case(
        ["select"],
        {**SELECT, "strategy": "persyn", "router_repo_id": "{lm}"},
        1,
        "is a 'qwen2' model, not a 'persyn-router' one",
    ),
    # build
    "build: unknown builder": Case(
        ["build", "magpie"],
        MAGPIE_ZOO,
        2,
        "the first argument must be a builder, one of ['magpie_zoo', 'persyn_math', 'personalized']; got 'magpie'",
    ),
    "build magpie_zoo: repeated uuids": Case(
        ["build", "magpie_zoo"],
        {**MAGPIE_ZOO, "source": "{w}/magpie-dup.parquet"},
        1,
        "The Magpie-Zoo source '{w}/magpie-dup.parquet' repeats 1 uuid value(s): 'u0'; keep one row per uuid.",
    ),
    "build magpie_zoo: source not UTF-8": Case(
        ["build", "magpie_zoo"],
        {**MAGPIE_ZOO, "source": "{w}/magpie.jsonl"},
        1,
        "`source` file '{w}/magpie.jsonl' is not UTF-8 text: byte 0xe9 at line 1, column 35",
    ),
    "build magpie_zoo: empty source": Case(
        ["build", "magpie_zoo"], {**MAGPIE_ZOO, "source": "{w}/empty.jsonl"}, 1, "`source` '{w}/empty.jsonl' is empty"
    ),
    "build magpie_zoo: misspelt key": Case(
        ["build", "magpie_zoo"],
        {**MAGPIE_ZOO, "num_router_prompt": 2, "num_train_prompts": 1},
        2,
        "unknown key `num_router_prompt` in the recipe '{recipe}' (did you mean `num_router_prompts`?)",
    ),
    "build persyn_math: repeated uuids": Case(
        ["build", "persyn_math"],
        {**PERSYN_MATH, "source": "{w}/openr1-dup.parquet"},
        1,
        "The OpenR1-Math source '{w}/openr1-dup.parquet' repeats 1 uuid value(s): 'm0'",
    ),
    "build persyn_math: routed": Case(
        ["build", "persyn_math"], {**PERSYN_MATH, "mode": "routed"}, 1, "set `mode: parallel`, not 'routed'"
    ),
    "build personalized: repeated assignments": Case(
        ["build", "personalized"],
        {**PERSONALIZED, "assignments_repo_id": "u/assign-dup"},
        1,
        "repeats 1 prompt_id value(s): 'p0'",
    ),
    "build personalized: repeated generations": Case(
        ["build", "personalized"],
        {**PERSONALIZED, "generations_repo_id": "u/gens-dup"},
        1,
        "repeats 1 (prompt_id, teacher) value(s): ('p0', 'a')",
    ),
    "build personalized: an undeclared teacher": Case(
        ["build", "personalized"],
        {**PERSONALIZED, "assignments_repo_id": "u/assign-unknown"},
        1,
        "Teacher(s) ['zz'] in the assignments are not in the teacher specs '{w}/teachers.yaml'",
    ),
    "build personalized: the user's own README": Case(
        ["build", "personalized"],
        {**PERSONALIZED, "dataset_repo_id": "u/mine"},
        1,
        "`dataset_repo_id` 'u/mine': '{w}/store/u/mine' holds file(s) ['README.md']",
    ),
    # sft
    "sft: strategies mixed": Case(
        ["sft"], {**SFT, "dataset_repo_id": "u/sft-mixed"}, 1, "mixes strategies ['oracle', 'persyn']"
    ),
    "sft: repeated examples": Case(
        ["sft"],
        {**SFT, "dataset_repo_id": "u/sft-dup"},
        1,
        "repeats 3 (strategy, prompt_id) value(s): ('persyn', 'p0'), ('persyn', 'p1'), ('persyn', 'p2')",
    ),
    "sft: output_dir is a file": Case(
        ["sft"], {**SFT, "output_dir": "{w}/store/u/file"}, 1, "`output_dir` '{w}/store/u/file' cannot be written"
    ),
    "sft: the user's own config.json where the student goes": Case(
        ["sft"],
        {**SFT, "student_repo_id": "u/mine-model"},
        1,
        "`student_repo_id` 'u/mine-model': '{w}/store/u/mine-model' holds file(s) ['config.json']",
    ),
    "sft: no base model": Case(
        ["sft"], {**SFT, "model_name_or_path": "{w}/no-model"}, 1, "`model_name_or_path` '{w}/no-model' " + NOT_FOUND
    ),
    # eval
    "eval: no such held-out split": Case(
        ["eval"],
        {**EVAL, "heldout_split": "validation"},
        1,
        "Cannot load config 'default', split 'validation' of the held-out dataset '{w}/store/u/heldout': Unknown "
        "split \"validation\". Should be one of ['test']. Set `heldout_config` and `heldout_split`",
    ),
    "eval: repeated held-out prompts": Case(
        ["eval"], {**EVAL, "heldout_repo_id": "u/heldout-dup"}, 1, "repeats 1 prompt_id value(s): 'p0'"
    ),
    "eval: output_dir is a file": Case(
        ["eval"], {**EVAL, "output_dir": "{w}/store/u/file"}, 1, "`output_dir` '{w}/store/u/file' cannot be written"
    ),
    "eval: a task name for a task list": Case(
        ["eval"],
        {**EVAL, "tasks": "persyn_heldout"},
        2,
        "`tasks` must be a list of task names, e.g. `tasks: [persyn_heldout]`, got 'persyn_heldout'.",
    ),
    "eval: a task whose data cannot be downloaded": Case(
        ["eval"],
        {**EVAL, "tasks": ["svamp"]},
        1,
        "`tasks` entry 'svamp' cannot get its data: Couldn't reach 'ChilleD/SVAMP' on the Hub (OfflineModeIsEnabled)",
    ),
    "eval: a model that is no model": Case(
        ["eval"], {**EVAL, "model_name_or_path": "{w}/not-a-model"}, 1, "`model_name_or_path` '{w}/not-a-model' is not"
    ),
    # demo
    "demo: router subset larger than the prompt set": Case(
        ["demo"],
        {**DEMO, "num_prompts": 10, "router_prompts": 20},
        2,
        "`router_prompts` must be in [2, num_prompts=10]",
    ),
    "demo: misspelt key": Case(
        ["demo"], {**DEMO, "num_prompt": 10}, 2, "unknown key `num_prompt` in the recipe '{recipe}' (did you mean"
    ),
    "demo: a held-out split the world does not draw": Case(
        ["demo"], {**DEMO, "heldout_split": "val"}, 2, "`heldout_split` must be one of ['test', 'dev'], got 'val'"
    ),
    "demo: no recipes folder": Case(
        ["demo"], {**DEMO, "recipes_dir": "{w}/recipes"}, 2, "`recipes_dir` '{w}/recipes' is not a folder"
    ),
    "demo: output_dir is a file (before the world is trained)": Case(
        ["demo"], {**DEMO, "output_dir": "{w}/store/u/file"}, 1, "`output_dir` '{w}/store/u/file' cannot be written"
    ),
}


def fill(value, world: dict, recipe: str = ""):
    """`value` with `{w}`, `{lm}` and `{recipe}` filled in, through lists and mappings."""
    if isinstance(value, str):
        return value.replace("{w}", world["w"]).replace("{lm}", world["lm"]).replace("{recipe}", recipe)
    if isinstance(value, list):
        return [fill(item, world, recipe) for item in value]
    if isinstance(value, dict):
        return {key: fill(item, world, recipe) for key, item in value.items()}
    return value


def write_recipe(case: Case, world: dict, folder: Path) -> str:
    """The path of the case's recipe, written into `folder` (or not at all, when the case has none)."""
    path = folder / "recipe.yaml"
    if isinstance(case.recipe, dict):
        path.write_text(yaml.safe_dump(fill(case.recipe, world)))
    elif isinstance(case.recipe, str):
        path.write_text(case.recipe)
    elif isinstance(case.recipe, bytes):
        path.write_bytes(case.recipe)
    return str(path)


def cli_args(case: Case, world: dict, recipe: str) -> list[str]:
    return [*case.verb, "--config", recipe, "--store_root", f"{world['w']}/store", *fill(case.flags, world)]


def snapshot(root: str) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under `root`."""
    return {str(path): path.read_bytes() if path.is_file() else None for path in sorted(Path(root).rglob("*"))}


def run_cli(argv: list[str], capsys) -> tuple[int, list[str], str]:
    """(exit status, the lines that say `error:`, everything printed) of `persyn-hf <argv>` run in process.

    A message passed to `sys.exit` is printed by the interpreter, on stderr with status 1: here it is taken from
    the `SystemExit` instead.
    """
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    code = exit_info.value.code
    if isinstance(code, str):
        code, printed = 1, f"{printed}{code}\n"
    return code, [line for line in printed.splitlines() if ": error: " in line], printed


@pytest.fixture(autouse=True)
def without_debug(monkeypatch):
    """One-line errors, whatever the environment says (`PERSYN_HF_DEBUG=1` would show tracebacks)."""
    monkeypatch.delenv("PERSYN_HF_DEBUG", raising=False)


@pytest.fixture
def no_model_loads(monkeypatch):
    """Loading a model fails the test: every bad input is caught before one is loaded."""

    def load(cls, *args, **kwargs):
        raise AssertionError(f"{cls.__name__}.from_pretrained{args} ran before the bad input was caught")

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(load))


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_a_bad_input_is_one_line_and_changes_nothing(case, world, tmp_path, capsys, no_model_loads):
    recipe = write_recipe(case, world, tmp_path)
    before = snapshot(world["w"])

    status, errors, printed = run_cli(cli_args(case, world, recipe), capsys)

    assert (status, len(errors)) == (case.status, 1), printed
    assert fill(case.message, world, recipe) in errors[0]
    assert "Traceback" not in printed
    assert snapshot(world["w"]) == before


@pytest.mark.parametrize("debug", ["--debug", "PERSYN_HF_DEBUG=1"])
def test_debug_shows_the_error_itself(debug, world, tmp_path, monkeypatch):
    case = CASES["route: repeated prompt ids"]
    if debug.startswith("PERSYN_HF_DEBUG"):
        monkeypatch.setenv("PERSYN_HF_DEBUG", "1")
    options = ["--debug"] if debug == "--debug" else []
    with pytest.raises(DataError, match=r"repeats 1 prompt_id value\(s\): 'p0'"):
        main([*options, *cli_args(case, world, write_recipe(case, world, tmp_path))])


@pytest.mark.parametrize("name", ["recipe not UTF-8", "route: repeated prompt ids"])
def test_the_console_script_prints_one_line(name, world, tmp_path):
    case = CASES[name]
    recipe = write_recipe(case, world, tmp_path)
    console_script = str(Path(sys.executable).with_name("persyn-hf"))  # installed beside the interpreter
    result = subprocess.run([console_script, *cli_args(case, world, recipe)], capture_output=True, text=True)
    assert result.returncode == case.status
    (line,) = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert fill(case.message, world, recipe) in line
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "name", ["demo: output_dir is a file (before the world is trained)", "generate: results_dir is a file"]
)
def test_the_module_form_of_a_verb_prints_one_line(name, world, tmp_path):
    """`python -m persyn_hf.scripts.<verb>` (what `accelerate launch -m` runs) is `persyn-hf <verb>`."""
    case = CASES[name]
    argv = cli_args(case, world, write_recipe(case, world, tmp_path))[len(case.verb) :]
    module = VERBS[case.verb[0]][0]
    result = subprocess.run([sys.executable, "-m", module, *argv], capture_output=True, text=True)
    assert result.returncode == case.status
    (line,) = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert fill(case.message, world) in line
    assert "Traceback" not in result.stderr


def published_files(location: Path) -> dict[str, int]:
    """{file: permission bits} of a published artifact."""
    return {path.name: path.stat().st_mode & 0o777 for path in location.iterdir() if path.is_file()}


def test_sft_keeps_the_trained_student_when_its_place_is_taken_then_publishes_beside_the_users_files(
    world, tmp_path, capsys
):
    store = ArtifactStore(tmp_path / "store")
    store.save_dataset("u/sft", Dataset.from_list(sft_rows(["persyn"] * 3)))
    target = Path(store.location("u/student"))
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    (target / "training_args.json").write_text("mine too")  # a name `check_output` cannot foresee: met at saving
    recipe = tmp_path / "sft.yaml"
    recipe.write_text(yaml.safe_dump(fill({**SFT, "output_dir": str(tmp_path / "training")}, world)))
    argv = ["sft", "--config", str(recipe), "--store_root", str(store.root)]

    status, errors, _ = run_cli(argv, capsys)

    assert status == 1 and "holds file(s) ['training_args.json'] that persyn-hf did not write" in errors[0]
    kept = re.search(r"The trained student is kept in '([^']+)'", errors[0]).group(1)
    assert {"model.safetensors", "config.json", "training_args.json"} <= set(os.listdir(kept))
    assert sorted(os.listdir(target)) == ["notes.txt", "training_args.json"]

    (target / "training_args.json").unlink()
    main(argv)
    files = published_files(target)
    assert {"model.safetensors", "config.json", "README.md", "training_args.json", "notes.txt"} <= set(files)
    assert (target / "notes.txt").read_text() == "mine"
    assert not [name for name in files if name.endswith(PICKLE_SUFFIXES)]  # `training_args.bin` went out as JSON
    assert set(files.values()) == {0o644}
    assert "notes.txt" not in json.loads((target / ".persyn-hf-files.json").read_text())


def test_train_router_publishes_beside_the_users_files_without_pickles(world, tmp_path):
    store = ArtifactStore(tmp_path / "store")
    for repo_id, columns in (("u/scores", SCORES), ("u/prompts", PROMPTS)):
        store.save_dataset(repo_id, Dataset.from_dict(columns))
    target = Path(store.location("u/router"))
    target.mkdir(parents=True)
    (target / "notes.txt").write_text("mine")
    recipe = tmp_path / "router.yaml"
    recipe.write_text(
        yaml.safe_dump(fill({**TRAIN_ROUTER, "router_repo_id": "u/router", "output_dir": str(tmp_path / "t")}, world))
    )

    main(["train-router", "--config", str(recipe), "--store_root", str(store.root)])

    files = published_files(target)
    assert {"model.safetensors", "config.json", "README.md", "notes.txt"} <= set(files)
    assert (target / "notes.txt").read_text() == "mine"
    assert not [name for name in files if name.endswith(PICKLE_SUFFIXES)]
    assert set(files.values()) == {0o644}
