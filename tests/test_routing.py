"""Routing a prompt set: `route_prompts` and `persyn-hf route`, in one process and split over two."""

import os
import socket
import subprocess
import sys

import pytest
import torch
import yaml
from datasets import Dataset

from persyn_hf.cli import main as cli_main
from persyn_hf.route import route_prompts
from persyn_hf.router import PersynRouterModel
from persyn_hf.store import ArtifactStore

TEACHERS = ["terse", "short-cot", "long-cot"]
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = [
    "What is 12 + 7?",
    "Tom has 4 apples and buys 9 more. How many apples does he have?",
    "Compute 345 - 129.",
    "A train travels 60 km in 2 hours. What is its speed?",
    "Add 1 and 2.",
    "Let us think step by step about 17 + 25 and then about 17 - 25.",
    "What is 9 - 3?",
]


@pytest.fixture(scope="module")
def router_and_tokenizer(tiny_qwen2_path):
    torch.manual_seed(0)
    return PersynRouterModel.from_backbone(tiny_qwen2_path, teachers=TEACHERS)


@pytest.fixture(scope="module")
def prompts():
    return Dataset.from_dict({"prompt_id": [f"q{i}" for i in range(len(PROMPTS))], "prompt": PROMPTS})


def test_route_prompts_keeps_order_and_picks_the_best_teacher(router_and_tokenizer, prompts):
    router, tokenizer = router_and_tokenizer
    assignments = route_prompts(router, tokenizer, prompts, batch_size=3)
    assert assignments.column_names == ["prompt_id", "teacher", "router_scores"]
    assert assignments["prompt_id"] == prompts["prompt_id"]
    _, expected = router.route(PROMPTS, tokenizer, show_progress=False)
    scores = torch.tensor(assignments["router_scores"])
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-4)
    assert assignments["teacher"] == [TEACHERS[i] for i in expected.argmax(dim=-1).tolist()]


def test_route_prompts_reads_the_last_user_message(router_and_tokenizer, prompts):
    router, tokenizer = router_and_tokenizer
    chats = Dataset.from_dict(
        {
            "prompt_id": prompts["prompt_id"],
            "messages": [
                [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}] for text in PROMPTS
            ],
        }
    )
    from_messages = route_prompts(router, tokenizer, chats)
    from_text = route_prompts(router, tokenizer, prompts)
    assert from_messages["teacher"] == from_text["teacher"]
    torch.testing.assert_close(torch.tensor(from_messages["router_scores"]), torch.tensor(from_text["router_scores"]))


def test_route_prompts_rejects_bad_prompts(router_and_tokenizer, prompts):
    router, tokenizer = router_and_tokenizer
    with pytest.raises(ValueError, match="no `prompt_id` column"):
        route_prompts(router, tokenizer, prompts.remove_columns("prompt_id"))
    with pytest.raises(ValueError, match="no `question` column"):
        route_prompts(router, tokenizer, prompts, prompt_column="question")
    numbers = Dataset.from_dict({"prompt_id": ["a"], "prompt": [[1, 2]]})
    with pytest.raises(ValueError, match="`prompt` of row 0 is list, not a string"):
        route_prompts(router, tokenizer, numbers)
    with pytest.raises(ValueError, match="The prompts dataset is empty"):
        route_prompts(router, tokenizer, prompts.select([]))


def test_routing_reads_each_prompt_as_router_training_reads_it():
    from persyn_hf.contracts import prompt_text
    from persyn_hf.route import prompt_texts

    chat = [{"role": "user", "content": "What is 2+2?"}]
    rows = Dataset.from_dict({"prompt_id": ["a", "b", "c"], "prompt": ["hi", "", None], "messages": [chat] * 3})
    assert prompt_texts(rows) == [prompt_text(row) for row in rows] == ["hi", "What is 2+2?", "What is 2+2?"]


def write_inputs(root, router, tokenizer, prompts) -> str:
    """A local store with a router and prompts, and a `persyn-hf route` YAML config reading them."""
    store = ArtifactStore(root / "store")
    store.save_model("test/router", router, tokenizer)
    store.save_dataset("test/prompts", prompts)
    config = {
        "router_repo_id": "test/router",
        "prompts_repo_id": "test/prompts",
        "assignments_repo_id": "test/assignments",
        "assignments_config": "persyn",
        "batch_size": 2,
        "store_root": str(root / "store"),
    }
    (root / "route.yaml").write_text(yaml.safe_dump(config))
    return str(root / "route.yaml")


def load_assignments(root) -> Dataset:
    return ArtifactStore(root / "store").load_dataset("test/assignments", "persyn")


def test_route_verb_writes_the_assignments(tmp_path, router_and_tokenizer, prompts):
    router, tokenizer = router_and_tokenizer
    config = write_inputs(tmp_path, router, tokenizer, prompts)
    cli_main(["route", "--config", config])
    assignments = load_assignments(tmp_path)
    expected = route_prompts(router, tokenizer, prompts)
    assert assignments["prompt_id"] == expected["prompt_id"] and assignments["teacher"] == expected["teacher"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_route_verb_in_two_processes(tmp_path, router_and_tokenizer, prompts):
    router, tokenizer = router_and_tokenizer
    config = write_inputs(tmp_path, router, tokenizer, prompts)
    command = [  # what `accelerate launch --num_processes 2` runs: torchrun, two processes
        *(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())),
        *("-m", "persyn_hf.scripts.route", "--config", config),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.count("Wrote 7 assignments") == 1  # gathered on the main process, written once
    assert "Routing 7 prompts over 2 process(es)" in result.stderr
    assignments = load_assignments(tmp_path)
    expected = route_prompts(router, tokenizer, prompts)
    assert assignments["prompt_id"] == expected["prompt_id"]  # 4 + 3 prompts, gathered back in order
    assert assignments["teacher"] == expected["teacher"]
    torch.testing.assert_close(
        torch.tensor(assignments["router_scores"]), torch.tensor(expected["router_scores"]), atol=1e-5, rtol=1e-4
    )


# Each of two processes on CPUs (`cpu=True`: gloo) runs `persyn-hf select` in a folder of its own, with its own store.
SELECT_IN_RANK_FOLDER = """
import os
from accelerate import PartialState
from persyn_hf.cli import main
os.chdir(f"rank{PartialState(cpu=True).process_index}")
main(["select", "--config", "../select.yaml"])
"""


@pytest.mark.slow
def test_select_on_two_processes_writes_from_the_main_process_only(tmp_path, prompts):
    teachers = [{"name": name, "model_id": f"org/{name}", "family": "Tiny", "size_b": 1} for name in TEACHERS]
    (tmp_path / "teachers.yaml").write_text(yaml.safe_dump({"teachers": teachers}))
    config = {"prompts_repo_id": "test/prompts", "teachers": str(tmp_path / "teachers.yaml"), "strategy": "mix"}
    config.update(assignments_repo_id="test/assignments", store_root="store")  # relative: the process's own store
    (tmp_path / "select.yaml").write_text(yaml.safe_dump(config))
    for rank in (0, 1):
        ArtifactStore(tmp_path / f"rank{rank}" / "store").save_dataset("test/prompts", prompts)
    (tmp_path / "run.py").write_text(SELECT_IN_RANK_FOLDER)
    # torchrun, which `accelerate launch --multi_gpu` runs (`accelerate launch --cpu` starts a single process)
    port = str(free_port())
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}", "run.py"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": REPO_ROOT}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.count("Wrote 7 assignments (mix)") == 1
    assert len(ArtifactStore(tmp_path / "rank0" / "store").load_dataset("test/assignments")) == 7
    assert not (tmp_path / "rank1" / "store" / "test" / "assignments").exists()
