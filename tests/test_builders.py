"""The dataset builders on local fixtures written in the sources' real schemas, run from the recipes."""

import math

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from trl.data_utils import is_conversational

from persyn_hf.builders import load_source, sample_indices
from persyn_hf.builders.magpie_zoo import MAGPIE_ZOO_REWARDS
from persyn_hf.builders.persyn_math import OPENR1_MATH_COLUMNS
from persyn_hf.scripts.build import main, make_parser
from persyn_hf.store import ArtifactStore
from persyn_hf.teachers import load_teachers

MAGPIE_TEACHERS = [spec.name for spec in load_teachers("recipes/magpie_zoo/teachers.yaml")]
NUM_MAGPIE_ROWS = 12


@pytest.fixture(scope="module", autouse=True)
def fresh_datasets_cache(tmp_path_factory):
    """A private `datasets` cache: its key for a local folder ignores the folder's location, so two stores with
    the same repo id would share (stale) cached tables."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("datasets-cache")))
        yield


def build(builder: str, recipe: str, **overrides):
    """Run `persyn-hf build <builder> --config <recipe> --key value ...` in process."""
    argv = [builder, "--config", recipe]
    for key, value in overrides.items():
        argv += [f"--{key}", str(value)]
    main(*make_parser().parse_args_and_config(argv))


def magpie_reward(row: int, teacher: int, field_index: int) -> float:
    return row + teacher / 100 + field_index / 1000


def write_magpie_source(path, teachers=MAGPIE_TEACHERS):
    """Magpie-100K-Generator-Zoo's schema: `uuid`, `instruction`, one struct per teacher (content + rewards)."""
    columns = {
        "uuid": [f"uuid-{i}" for i in range(NUM_MAGPIE_ROWS)],
        "instruction": [f"Instruction {i}?" for i in range(NUM_MAGPIE_ROWS)],
    }
    for t, teacher in enumerate(teachers):
        columns[teacher] = [
            {"content": f"uuid-{i} answered by {teacher}"}
            | {name: magpie_reward(i, t, f) for f, name in enumerate(MAGPIE_ZOO_REWARDS)}
            for i in range(NUM_MAGPIE_ROWS)
        ]
    pq.write_table(pa.table(columns), path)
    return str(path)


@pytest.fixture(scope="module")
def magpie_store(tmp_path_factory):
    """Magpie-Zoo built once from its recipe into a local store: 8 training prompts, 3 in the router subset."""
    root = tmp_path_factory.mktemp("store")
    source = write_magpie_source(tmp_path_factory.mktemp("magpie") / "magpie.parquet")
    build(
        "magpie_zoo",
        "recipes/magpie_zoo/build/config_magpie_zoo.yaml",
        source=source,
        store_root=root,
        output_repo_id="user/magpie",
        num_train_prompts=8,
        num_router_prompts=3,
    )
    return ArtifactStore(root)


def read_card(path) -> tuple[dict, str]:
    _, header, body = path.read_text().split("---", 2)
    return yaml.safe_load(header), body


# Magpie-Zoo -------------------------------------------------------------------------------------------------------


def test_magpie_zoo_samples_prompts_and_generations(magpie_store):
    prompts = magpie_store.load_dataset("user/magpie", "prompts")
    router = magpie_store.load_dataset("user/magpie", "prompts", split="router")
    generations = magpie_store.load_dataset("user/magpie", "generations")
    router_generations = magpie_store.load_dataset("user/magpie", "generations", split="router")

    assert len(prompts) == 8 and len(set(prompts["prompt_id"])) == 8
    assert router["prompt_id"] == prompts["prompt_id"][:3]  # the router subset is drawn from the training prompts
    assert len(generations) == 8 * 19 and len(router_generations) == 3 * 19
    assert set(router_generations["prompt_id"]) == set(router["prompt_id"])
    assert prompts.column_names == ["prompt_id", "prompt", "source"]
    assert set(prompts["source"]) == {"Magpie-Align/Magpie-100K-Generator-Zoo"}

    row = generations[19 + 13]  # second prompt, 14th teacher of the specs (gemma-2-2b-it)
    i = int(row["prompt_id"].removeprefix("uuid-"))
    assert row["teacher"] == "gemma-2-2b-it"
    assert row["response"] == f"uuid-{i} answered by gemma-2-2b-it"
    assert prompts[1]["prompt"] == f"Instruction {i}?"
    # `quality` is the Skywork-Reward-Llama-3.1-8B field (second reward) of the teacher's struct.
    assert row["quality"] == pytest.approx(i + 13 / 100 + 1 / 1000)
    assert (row["num_samples"], row["correct"], row["completion_tokens"]) == (1, None, None)


def test_magpie_zoo_sample_follows_the_seed(tmp_path, magpie_store):
    source = write_magpie_source(tmp_path / "magpie.parquet")
    recipe = "recipes/magpie_zoo/build/config_magpie_zoo.yaml"
    sizes = {"num_train_prompts": 8, "num_router_prompts": 3, "store_root": tmp_path / "store"}
    build("magpie_zoo", recipe, source=source, output_repo_id="user/same", **sizes)
    build("magpie_zoo", recipe, source=source, output_repo_id="user/other", sample_seed=7, **sizes)
    store = ArtifactStore(tmp_path / "store")
    same = store.load_dataset("user/same", "prompts")["prompt_id"]
    assert same == magpie_store.load_dataset("user/magpie", "prompts")["prompt_id"]
    assert store.load_dataset("user/other", "prompts")["prompt_id"] != same


def test_magpie_zoo_card(magpie_store):
    metadata, body = read_card(magpie_store.root / "user/magpie/README.md")
    assert metadata["pretty_name"] == "Magpie-Zoo for PerSyn"
    assert metadata["source_datasets"] == ["Magpie-Align/Magpie-100K-Generator-Zoo"]
    assert metadata["persyn"]["seed"] == 42 and metadata["persyn"]["num_router_prompts"] == 3
    assert len(metadata["persyn"]["teachers"]) == 19
    configs = {c["config_name"]: sorted(f["split"] for f in c["data_files"]) for c in metadata["configs"]}
    assert configs == {"prompts": ["router", "train"], "generations": ["router", "train"]}
    assert (
        "| gemma-2-2b-it | [google/gemma-2-2b-it](https://huggingface.co/google/gemma-2-2b-it) | Gemma 2 | 2 | no | 8 | 8 | n/a |"
        in body
    )
    assert "8 drawn from [Magpie-Align/Magpie-100K-Generator-Zoo]" in body and "seed `42`" in body


def test_magpie_zoo_rejects_a_different_schema(tmp_path):
    teachers = [t for t in MAGPIE_TEACHERS if t != "gemma-2-2b-it"] + ["Mistral-7B-Instruct-v0.3"]
    source = write_magpie_source(tmp_path / "magpie.parquet", teachers=teachers)
    with pytest.raises(
        ValueError,
        match=r"missing column\(s\) \['gemma-2-2b-it'\], unexpected column\(s\) \['Mistral-7B-Instruct-v0.3'\]",
    ):
        build(
            "magpie_zoo", "recipes/magpie_zoo/build/config_magpie_zoo.yaml", source=source, store_root=tmp_path / "s"
        )
    assert not (tmp_path / "s").exists()


def test_magpie_zoo_rejects_a_missing_reward_field(tmp_path):
    source = write_magpie_source(tmp_path / "magpie.parquet")
    with pytest.raises(ValueError, match=r"'Qwen2-1.5B-Instruct' lacks \['ArmoRM-Llama3-8B-v1'\]"):
        build(
            "magpie_zoo",
            "recipes/magpie_zoo/build/config_magpie_zoo.yaml",
            source=source,
            store_root=tmp_path / "s",
            reward_field="ArmoRM-Llama3-8B-v1",
        )


def test_magpie_zoo_rejects_an_impossible_selection(tmp_path):
    source = write_magpie_source(tmp_path / "magpie.parquet")
    recipe = "recipes/magpie_zoo/build/config_magpie_zoo.yaml"
    sizes = {"store_root": tmp_path / "s", "num_router_prompts": 2}
    with pytest.raises(ValueError, match=r"`num_train_prompts` must be in \[1, 12\] \(the source's size\), got 13"):
        build("magpie_zoo", recipe, source=source, num_train_prompts=13, **sizes)
    with pytest.raises(ValueError, match=r"`num_router_prompts` must be in \[1, num_train_prompts=4\], got 0"):
        build("magpie_zoo", recipe, source=source, num_train_prompts=4, num_router_prompts=0)
    assert not (tmp_path / "s").exists()
    with pytest.raises(ValueError, match="The source dataset is empty"):
        sample_indices(0, 4, seed=42, field_name="num_train_prompts")


def test_missing_source_names_the_field(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"`source` '.*nowhere.parquet' does not exist"):
        load_source(str(tmp_path / "nowhere.parquet"))


# Personalized -----------------------------------------------------------------------------------------------------


def save_assignments(store, repo_id, prompt_ids, teachers):
    from datasets import Dataset

    store.save_dataset(repo_id, Dataset.from_dict({"prompt_id": prompt_ids, "teacher": teachers}))


def build_personalized(store, strategy, assignments, **overrides):
    inputs = {"generations_repo_id": "user/magpie", "prompts_repo_id": "user/magpie", "dataset_repo_id": "user/sft"}
    build(
        "personalized",
        "recipes/magpie_zoo/build/config_personalized.yaml",
        strategy=strategy,
        student="Qwen/Qwen2.5-1.5B-Instruct",
        assignments_repo_id=assignments,
        store_root=store.root,
        **(inputs | overrides),
    )


@pytest.fixture(scope="module")
def personalized_store(magpie_store):
    """Two strategies built into one repo: `persyn` (5 x Qwen2.5-72B, 3 x gemma-2-2b-it, with scores) and `strong`."""
    from datasets import Dataset

    ids = magpie_store.load_dataset("user/magpie", "prompts")["prompt_id"]
    persyn = ["Qwen2.5-72B-Instruct"] * 5 + ["gemma-2-2b-it"] * 3
    save_assignments(magpie_store, "user/assign-persyn", ids, persyn)
    scores = {"prompt_id": ids[:2], "teacher": persyn[:2], "reward": [0.25, 0.75]}
    magpie_store.save_dataset("user/scores", Dataset.from_dict(scores))
    build_personalized(magpie_store, "persyn", "user/assign-persyn", scores_repo_id="user/scores")
    save_assignments(magpie_store, "user/assign-strong", ids, ["Qwen2.5-72B-Instruct"] * 8)
    build_personalized(magpie_store, "strong", "user/assign-strong")
    return magpie_store


def test_personalized_is_trl_prompt_completion_with_provenance(personalized_store):
    sft = personalized_store.load_dataset("user/sft", "persyn")
    prompts = personalized_store.load_dataset("user/magpie", "prompts")
    assert sft.column_names == ["prompt", "completion", "prompt_id", "teacher", "strategy", "reward"]
    assert len(sft) == 8 and is_conversational(sft[0])
    assert sft[0]["prompt"] == [{"role": "user", "content": prompts[0]["prompt"]}]
    assert sft[7]["completion"] == [
        {"role": "assistant", "content": f"{prompts[7]['prompt_id']} answered by gemma-2-2b-it"}
    ]
    assert sft["teacher"] == ["Qwen2.5-72B-Instruct"] * 5 + ["gemma-2-2b-it"] * 3
    assert set(sft["strategy"]) == {"persyn"}
    assert sft["reward"][:2] == [0.25, 0.75] and all(math.isnan(r) for r in sft["reward"][2:])
    assert personalized_store.load_dataset("user/sft", "strong")["teacher"] == ["Qwen2.5-72B-Instruct"] * 8


def test_personalized_card_describes_every_strategy(personalized_store):
    folder = personalized_store.root / "user/sft"
    metadata, body = read_card(folder / "README.md")
    assert {c["config_name"] for c in metadata["configs"]} == {"persyn", "strong"}
    assert list(metadata["persyn"]["strategies"]) == ["persyn", "strong"]
    assert metadata["persyn"]["strategies"]["persyn"]["allocation"]["Qwen2.5-72B-Instruct"] == 5
    assert "## Strategy `persyn`" in body and "## Strategy `strong`" in body
    assert "| Qwen2.5-72B-Instruct | Qwen2.5 | 72 | no | 5 | 62.5% |" in body
    assert "| gemma-2-2b-it | Gemma 2 | 2 | no | 3 | 37.5% |" in body
    assert "| Qwen2.5-72B-Instruct | Qwen2.5 | 72 | no | 8 | 100.0% |" in body
    assert "asked for 8 responses where\nGenerate-then-Select needs 152" in body  # 8 prompts x 19 teachers
    assert "5.3% of the responses" in body  # 8 / 152
    for strategy in ("persyn", "strong"):
        assert f"![Share of prompts per teacher, strategy {strategy}](allocation_{strategy}.png)" in body
        assert (folder / f"allocation_{strategy}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_personalized_rejects_a_teacher_missing_from_the_specs(magpie_store, tmp_path):
    ids = magpie_store.load_dataset("user/magpie", "prompts")["prompt_id"]
    save_assignments(magpie_store, "user/assign-bad", ids, ["Mistral-7B-Instruct-v0.3"] * 8)
    with pytest.raises(ValueError, match=r"Teacher\(s\) \['Mistral-7B-Instruct-v0.3'\] in the assignments are not in"):
        build_personalized(magpie_store, "bad", "user/assign-bad", dataset_repo_id="user/bad")
    assert not (magpie_store.root / "user/bad").exists()


def test_personalized_rejects_assignments_without_responses(magpie_store):
    save_assignments(magpie_store, "user/assign-unknown", ["uuid-100", "uuid-101"], ["gemma-2-2b-it"] * 2)
    with pytest.raises(ValueError, match=r"2 assigned \(prompt_id, teacher\) pairs have no response in 'user/magpie'"):
        build_personalized(magpie_store, "unknown", "user/assign-unknown", dataset_repo_id="user/unknown")
    assert not (magpie_store.root / "user/unknown").exists()


# PerSyn-Math ------------------------------------------------------------------------------------------------------


def openr1_rows(n: int) -> dict:
    """OpenR1-Math-220k's schema (config `default`), with n small arithmetic problems."""
    return {
        "problem": [f"What is {i} + {i}?" for i in range(n)],
        "solution": [f"{i} + {i} = {2 * i}" for i in range(n)],
        "answer": [str(2 * i) for i in range(n)],
        "problem_type": ["Algebra"] * n,
        "question_type": ["math-word-problem"] * n,
        "source": ["olympiads"] * n,
        "uuid": [f"0000-{i}" for i in range(n)],
        "is_reasoning_complete": [[True, False]] * n,
        "generations": [[f"<think>add</think> \\boxed{{{2 * i}}}", "no"] for i in range(n)],
        "correctness_math_verify": [[True, False]] * n,
        "correctness_llama": [None] * n,
        "finish_reasons": [None] * n,
        "correctness_count": [1] * n,
        "messages": [[{"role": "user", "content": f"What is {i} + {i}?"}] for i in range(n)],
    }


@pytest.fixture
def math_teachers(tmp_path, tiny_llama_path):
    # Both on the Llama fixture: the local backend loads teachers in concurrent threads, where loading a model
    # with tied embeddings (the Qwen2 fixture) is not thread-safe in transformers.
    teachers = [
        {"name": "small", "model_id": "local/small", "family": "Tiny", "size_b": 7, "model_path": tiny_llama_path},
        {"name": "thinker", "model_id": "local/thinker", "family": "Tiny", "size_b": 8, "long_cot": True,
         "model_path": tiny_llama_path},
    ]  # fmt: skip
    for teacher in teachers:
        teacher["generation"] = {"max_new_tokens": 6}
    path = tmp_path / "teachers.yaml"
    path.write_text(yaml.safe_dump({"teachers": teachers}))
    return str(path)


def test_persyn_math_end_to_end_with_local_teachers(tmp_path, math_teachers):
    assert set(openr1_rows(1)) == set(OPENR1_MATH_COLUMNS)
    pq.write_table(pa.table(openr1_rows(10)), tmp_path / "openr1.parquet")
    build(
        "persyn_math",
        "recipes/persyn_math/build/config_persyn_math.yaml",
        source=tmp_path / "openr1.parquet",
        teachers=math_teachers,
        num_problems=3,
        samples_small=3,
        samples_large=2,
        results_dir=tmp_path / "results",
        store_root=tmp_path / "store",
        output_repo_id="user/persyn-math",
    )
    store = ArtifactStore(tmp_path / "store")
    parallel = store.load_dataset("user/persyn-math", "default")
    generations = store.load_dataset("user/persyn-math", "generations")
    prompts = store.load_dataset("user/persyn-math", "prompts")

    assert parallel.column_names == ["prompt_id", "problem", "answer", "source", "small", "thinker"]
    assert len(parallel) == 3 and len(prompts) == 3 and len(generations) == 6
    for row in parallel:
        i = int(row["prompt_id"].removeprefix("0000-"))
        assert (row["problem"], row["answer"]) == (f"What is {i} + {i}?", str(2 * i))
        # Rejection sampling: 3 samples under 72B, 2 for the long-CoT teacher, unless one was correct first.
        assert 1 <= row["small"]["num_samples"] <= 3 and 1 <= row["thinker"]["num_samples"] <= 2
        assert isinstance(row["small"]["correct"], bool) and isinstance(row["small"]["content"], str)
    assert prompts.column_names == ["prompt_id", "prompt", "answer", "source"]

    metadata, body = read_card(tmp_path / "store/user/persyn-math/README.md")
    assert metadata["pretty_name"] == "PerSyn-Math"
    assert metadata["persyn"]["num_prompts"] == 3
    attempts = {t: sum(r[t]["num_samples"] for r in parallel) for t in ("small", "thinker")}
    assert metadata["persyn"]["teachers"]["small"]["attempts"] == attempts["small"]
    assert metadata["persyn"]["cost"]["gts_generations"] == 3 * 3 + 3 * 2
    assert {c["config_name"] for c in metadata["configs"]} == {"default", "prompts", "generations"}
    assert "## Rejection sampling" in body and "3 from teachers under 72B, 2 from larger and long-CoT" in body
    assert '| small | {"max_new_tokens": 6} |' in body


def test_persyn_math_rejects_a_different_schema(tmp_path, math_teachers):
    rows = openr1_rows(4)
    rows["question"] = rows.pop("problem")
    pq.write_table(pa.table(rows), tmp_path / "openr1.parquet")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['problem'\], unexpected column\(s\) \['question'\]"):
        build(
            "persyn_math",
            "recipes/persyn_math/build/config_persyn_math.yaml",
            source=tmp_path / "openr1.parquet",
            teachers=math_teachers,
            store_root=tmp_path / "store",
        )
    assert not (tmp_path / "store").exists()
