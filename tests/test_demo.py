"""`persyn-hf demo` on the quick world, end to end: once from the command line in a directory outside the repository
(the demo's recipes ship inside the package), once through the Python API inside a running event loop (as in a
notebook); both runs must give the same results."""

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from datasets import load_dataset
from huggingface_hub import DatasetCard, ModelCard
from transformers import AutoModel, AutoTokenizer

from persyn_hf.demo.pipeline import RECIPES_DIR, STRATEGIES, DemoArguments, run_demo
from persyn_hf.router import PersynRouterModel

pytestmark = pytest.mark.slow
QUICK = RECIPES_DIR / "config_quick.yaml"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("demo-cache")


@pytest.fixture(scope="module")
def demo(tmp_path_factory, cache_dir):
    """The quick demo through the console script, run from a directory that holds no recipes."""
    out = tmp_path_factory.mktemp("demo")
    command = [
        str(Path(sys.executable).with_name("persyn-hf")), "demo", "--config", str(QUICK),
        "--output_dir", str(out), "--store_root", str(out / "store"), "--cache_dir", str(cache_dir),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path_factory.mktemp("elsewhere"))
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stdout


@pytest.fixture(scope="module")
def demo_in_event_loop(tmp_path_factory, cache_dir, demo):
    """The same demo through the Python API, called from a coroutine: a running event loop, as in Jupyter."""
    out = tmp_path_factory.mktemp("demo-api")
    args = yaml.safe_load(QUICK.read_text())
    args.update(output_dir=str(out), store_root=str(out / "store"), cache_dir=str(cache_dir))

    async def notebook_cell():
        assert asyncio.get_running_loop().is_running()
        return run_demo(DemoArguments(**args))

    return out, asyncio.run(notebook_cell())


def without_timings(report: dict) -> dict:
    return {key: value for key, value in report.items() if key not in ("wall_time_s", "world")}


def test_prints_the_tables_and_writes_results(demo):
    out, stdout = demo
    report = json.loads((out / "results.json").read_text())
    assert [row["strategy"] for row in report["results"]] == STRATEGIES
    teachers = [t["name"] for t in yaml.safe_load((RECIPES_DIR / "teachers.yaml").read_text())["teachers"]]
    quick = yaml.safe_load(QUICK.read_text())
    N, S, n = quick["num_prompts"], quick["router_prompts"], len(teachers)
    needed = dict.fromkeys(("persyn", "persyn_wo_quality", "persyn_wo_learnability", "car"), S * n + N)
    needed["oracle"] = N * n
    for row in report["results"]:
        accuracy = row["accuracy"]
        assert len(accuracy["seeds"]) == quick["seeds"]
        assert accuracy["mean"] == pytest.approx(sum(accuracy["seeds"]) / quick["seeds"])
        assert list(row["allocation"]) == teachers
        assert sum(row["allocation"].values()) == pytest.approx(1.0)
        assert row["generations"] == needed.get(row["strategy"], N)
        assert f"| {row['strategy']} | {accuracy['mean']:.3f} ± {accuracy['std']:.3f} |" in stdout
    assert [row["strategy"] for row in report["persyn_minus"]] == STRATEGIES[1:]
    for row in report["persyn_minus"]:
        assert row["ci95"][0] <= row["difference"] <= row["ci95"][1]
        assert row["num_problems"] == quick["test_prompts"]
    router = report["router"]
    assert 0.0 <= router["chance_hit_at_1"] <= router["chance_hit_at_3"] <= 1.0
    assert router["majority_teacher"] in teachers
    assert 0.0 <= report["router_vs_oracle"]["agreement"] <= 1.0
    assert report["cost"]["PerSyn-Math"]["generate_then_select"] == 10_000 * 15
    assert report["wall_time_s"]["total"] >= report["wall_time_s"]["world"] > 0


def test_the_python_api_in_a_running_event_loop_gives_the_same_results(demo, demo_in_event_loop):
    cli_report = json.loads((demo[0] / "results.json").read_text())
    api_out, api_report = demo_in_event_loop
    assert json.loads((api_out / "results.json").read_text()) == api_report
    assert without_timings(api_report) == without_timings(cli_report)


def test_allocation_chart_is_a_png(demo):
    out, _ = demo
    assert (out / "allocation_persyn.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_router_loads_with_automodel_and_routes_like_the_assignments(demo):
    out, _ = demo
    router = AutoModel.from_pretrained(out / "store" / "demo" / "router-persyn")
    assert isinstance(router, PersynRouterModel)
    assert router.config.teachers == [
        t["name"] for t in yaml.safe_load((RECIPES_DIR / "teachers.yaml").read_text())["teachers"]
    ]
    assignments = load_dataset("parquet", data_files=str(out / "store/demo/assignments-persyn/data/*.parquet"))[
        "train"
    ]
    prompts = load_dataset("parquet", data_files=str(out / "store/demo/prompts/data/*.parquet"))["train"]
    tokenizer = AutoTokenizer.from_pretrained(out / "store" / "demo" / "router-persyn")
    names, _ = router.route(prompts["prompt"][:8], tokenizer, show_progress=False)
    assert names == assignments["teacher"][:8]


def test_every_artifact_has_its_card(demo):
    out, _ = demo
    store = out / "store" / "demo"
    personalized = DatasetCard.load(store / "personalized" / "README.md")
    assert sorted(c["config_name"] for c in personalized.data.configs) == sorted(STRATEGIES)
    for strategy in STRATEGIES:
        data = load_dataset(str(store / "personalized"), strategy, split="train")
        assert set(data["strategy"]) == {strategy}
        card = ModelCard.load(store / f"student-{strategy}-seed42" / "README.md")
        assert f"with the `{strategy}` strategy" in card.text
        router = f"demo/router-{strategy}" if strategy.startswith("persyn") else "none"
        assert f"| Router | {router}" in card.text or f"| Router | [{router}]" in card.text
        if router != "none":
            assert (store / f"router-{strategy}" / "config.json").is_file()  # the card names a router that exists
    assert "hit" in ModelCard.load(store / "router-persyn" / "README.md").text.lower()
