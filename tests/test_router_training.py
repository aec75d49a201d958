"""Training the PerSyn router: collator, metrics, `train_router` with the Trainer, the card, `persyn-hf train-router`."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from datasets import Dataset
from huggingface_hub import DatasetCard, DatasetCardData
from transformers import AutoModel

import persyn_hf  # noqa: F401  (registers the router with AutoModel)
from persyn_hf.cli import main as cli_main
from persyn_hf.errors import ConfigError
from persyn_hf.router import PersynRouterModel
from persyn_hf.router_trainer import RouterCollator, RouterConfig, router_card, router_metrics, train_router
from persyn_hf.store import ArtifactStore
from persyn_hf.teachers import load_teachers
from persyn_hf.train_router import split_rows

NAN = float("nan")
TEACHERS = ["terse", "short-cot", "long-cot"]
RECIPE = "recipes/Qwen2.5-1.5B-Instruct/router/config_math.yaml"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def router_rows(n: int = 8) -> Dataset:
    """Prompts about apples prefer the terse teacher, sums prefer the long chain of thought."""
    prompts, rewards = [], []
    for i in range(n):
        if i % 2:
            prompts.append(f"Tom has {i} apples and buys {i + 2} more apples.")
            rewards.append([0.9, 0.5, 0.1])
        else:
            prompts.append(f"Compute {100 + i} - {i + 7} step by step.")
            rewards.append([0.1, NAN, 0.8])
    return Dataset.from_dict({"prompt_id": [f"p{i}" for i in range(n)], "prompt": prompts, "teacher_rewards": rewards})


def training_args(tmp_path, **overrides) -> RouterConfig:
    values = {
        "output_dir": str(tmp_path / "trainer"),
        "per_device_train_batch_size": 8,
        "learning_rate": 1e-3,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "seed": 0,
        "disable_tqdm": True,
    }
    return RouterConfig(**{**values, **overrides})


@pytest.fixture
def fresh_router(tiny_qwen2_path):
    torch.manual_seed(0)
    return PersynRouterModel.from_backbone(tiny_qwen2_path, teachers=TEACHERS)


def test_collator_pads_prompts_and_stacks_rewards():
    batch = RouterCollator(pad_token_id=0, pad_to_multiple_of=4)(
        [{"input_ids": [5, 6, 7], "teacher_rewards": [1.0, NAN]}, {"input_ids": [8], "teacher_rewards": [0.0, 2.0]}]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [8, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    assert batch["teacher_rewards"].shape == (2, 2)
    assert torch.isnan(batch["teacher_rewards"][0, 1]) and batch["teacher_rewards"][1, 1].item() == 2.0


def test_router_metrics_on_constructed_cases():
    scores = np.array([[3, 2, 1], [0, 1, 5], [1, 9, 0], [2, 0, 1], [7, 7, 7]], dtype=float)
    rewards = np.array(
        [[1.0, 0.5, 0.0], [0.2, 0.9, 0.1], [0.5, NAN, 0.7], [0.3, 0.3, 0.8], [NAN, NAN, NAN]], dtype=float
    )
    metrics = router_metrics(scores, rewards, top_k=(1, 2, 3))
    # choices (among known teachers): 0 (best), 2 (third), 0 (second of two: teacher 1 is unknown), 0 (second)
    assert metrics["hit_at_1"] == pytest.approx(1 / 4)
    assert metrics["hit_at_2"] == pytest.approx(3 / 4)
    assert metrics["hit_at_3"] == pytest.approx(1.0)
    assert metrics["oracle_regret"] == pytest.approx((0.0 + 0.8 + 0.2 + 0.5) / 4)
    # comparable pairs ordered like the rewards: 3 of 3, 1 of 3, 0 of 1, 1 of 2 (the tie is skipped)
    assert metrics["pairwise_accuracy"] == pytest.approx(5 / 9)
    with pytest.raises(ValueError, match="No prompt has a known reward"):
        router_metrics(scores[-1:], rewards[-1:])


def test_two_training_steps_change_parameters_and_lower_the_loss(tmp_path, fresh_router):
    router, tokenizer = fresh_router
    rows = router_rows()
    batch = RouterCollator(tokenizer.pad_token_id)(
        [{**tokenizer(row["prompt"]), "teacher_rewards": row["teacher_rewards"]} for row in rows]
    )
    before = {name: param.detach().clone() for name, param in router.named_parameters()}
    loss_before = router(**batch).loss.item()

    all_missing = {"prompt_id": "bad", "prompt": "Nothing to learn.", "teacher_rewards": [NAN, NAN, 0.5]}
    with pytest.warns(UserWarning, match="Dropped 1 of 9 rows of `train_dataset`"):
        trainer = train_router(
            router, tokenizer, rows.add_item(all_missing), args=training_args(tmp_path, max_steps=2)
        )

    assert trainer.state.global_step == 2
    changed = [name for name, param in trainer.model.named_parameters() if not torch.equal(param, before[name])]
    assert "score.out_proj.weight" in changed and any(name.startswith("backbone.") for name in changed)
    with torch.no_grad():
        assert trainer.model(**batch).loss.item() < loss_before


def test_train_router_evaluates_hit_at_k(tmp_path, fresh_router):
    router, tokenizer = fresh_router
    args = training_args(tmp_path, num_train_epochs=4, per_device_eval_batch_size=4)
    trainer = train_router(router, tokenizer, router_rows(), router_rows(6), args=args)
    metrics = trainer.evaluate()
    assert {"eval_loss", "eval_hit_at_1", "eval_hit_at_3", "eval_pairwise_accuracy", "eval_oracle_regret"} <= set(
        metrics
    )
    assert metrics["eval_hit_at_1"] == 1.0 and metrics["eval_oracle_regret"] == 0.0


def test_train_router_rejects_bad_rows(tmp_path, fresh_router):
    router, tokenizer = fresh_router
    args = training_args(tmp_path, max_steps=1)
    with pytest.raises(ValueError, match=r"rows' teachers \['a', 'b', 'c'\] differ from the router's teachers"):
        train_router(router, tokenizer, router_rows(), args=args, teachers=["a", "b", "c"])
    short = Dataset.from_dict({"prompt": ["x"], "teacher_rewards": [[1.0, 0.0]]})
    with pytest.raises(ValueError, match="row 0 has 2 rewards but the router scores 3 teachers"):
        train_router(router, tokenizer, short, args=args)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['teacher_rewards'\]"):
        train_router(router, tokenizer, Dataset.from_dict({"prompt": ["x"]}), args=args)
    ties = Dataset.from_dict({"prompt": ["x"], "teacher_rewards": [[1.0, 1.0, NAN]]})
    with (
        pytest.raises(ValueError, match="no row with two finite, different teacher rewards"),
        pytest.warns(UserWarning),
    ):
        train_router(router, tokenizer, ties, args=args)


def test_router_config_checks_alpha(tmp_path):
    with pytest.raises(ValueError, match=r"`alpha` must be in \[0, 1\], got 1.5"):
        training_args(tmp_path, alpha=1.5)


def test_router_card_renders(tmp_path, fresh_router, tiny_qwen2_path):
    router, _ = fresh_router
    specs = load_teachers(
        [
            {"name": "terse", "model_id": "org/terse-1B", "family": "Tiny", "size_b": 1},
            {"name": "short-cot", "model_id": "org/short-7B", "family": "Tiny", "size_b": 7},
            {"name": "long-cot", "model_id": "org/long-32B", "family": "Other", "size_b": 32, "long_cot": True},
        ]
    )
    args = training_args(tmp_path)
    metrics = {"eval_hit_at_1": 0.5, "eval_hit_at_3": 0.875, "eval_pairwise_accuracy": 0.75, "eval_oracle_regret": 0.1}
    card = router_card(
        router,
        specs,
        "me/router",
        args,
        router_rows(),
        metrics,
        num_eval_prompts=8,
        student="org/student-1.5B",
        alpha=0.4,
    )
    card = str(card)
    assert "| 2 | `long-cot` | org/long-32B | Other | 32 | yes |" in card
    assert "| Hit@3 | 0.8750 |" in card and "| Oracle regret | 0.1000 |" in card
    assert "[org/student-1.5B](https://huggingface.co/org/student-1.5B)" in card and "α = 0.4" in card
    assert f"`{tiny_qwen2_path}`" in card  # a local backbone is shown as a path
    assert "8 (16 comparable teacher pairs)" in card  # 4 prompts with 3 pairs, 4 with 1 (a teacher is missing)
    assert 'AutoModel.from_pretrained("me/router")' in card
    with pytest.raises(ValueError, match="differ from the router's teachers"):
        router_card(router, specs[:2], "me/router", args, router_rows())


# `persyn-hf train-router` end to end ------------------------------------------------------------------------------


def write_inputs(root) -> dict[str, str]:
    """A local store with scores and prompts for the three teachers, and the teachers YAML."""
    rows = router_rows(24)
    store = ArtifactStore(root / "store")
    store.save_dataset("test/prompts", rows.select_columns(["prompt_id", "prompt"]))
    scores = {"prompt_id": [], "teacher": [], "quality": [], "learnability": [], "reward": []}
    for row in rows:
        for teacher, reward in zip(TEACHERS, row["teacher_rewards"]):
            if not np.isnan(reward):
                for key, value in zip(scores, (row["prompt_id"], teacher, reward, -1.0, reward)):
                    scores[key].append(value)
    recorded = DatasetCardData(persyn={"student": "Qwen/Qwen2.5-1.5B-Instruct", "alpha": 0.4})  # as `score` writes
    card = DatasetCard.from_template(recorded, template_str="---\n{{ card_data }}\n---\n# Scores")
    store.save_dataset("test/scores", Dataset.from_dict(scores), card=card)
    teachers = [
        {"name": name, "model_id": f"org/{name}", "family": "Tiny", "size_b": size}
        for name, size in zip(TEACHERS, (1, 3, 7))
    ]
    (root / "teachers.yaml").write_text(yaml.safe_dump({"teachers": teachers}))
    return {
        "teachers": str(root / "teachers.yaml"),
        "scores_repo_id": "test/scores",
        "prompts_repo_id": "test/prompts",
        "prompts_config": "default",
        "router_repo_id": "test/router",
        "store_root": str(root / "store"),
        "output_dir": str(root / "trainer"),
    }


def overrides(inputs: dict[str, str], backbone: str) -> list[str]:
    values = {
        **inputs,
        "model_name_or_path": backbone,
        "eval_size": "6",
        "bf16": "false",
        "use_cpu": "true",
        "num_train_epochs": "3",
        "per_device_train_batch_size": "6",
        "learning_rate": "1e-3",
        "disable_tqdm": "true",
    }
    return [arg for key, value in values.items() for arg in (f"--{key}", value)]


def test_train_router_verb_from_recipe(tmp_path, tiny_qwen2_path):
    inputs = write_inputs(tmp_path)
    recipe = os.path.join(REPO_ROOT, RECIPE)
    cli_main(
        ["train-router", "--config", recipe, *overrides(inputs, tiny_qwen2_path), "--pairs_repo_id", "test/pairs"]
    )
    location = ArtifactStore(inputs["store_root"]).location("test/router")
    router = AutoModel.from_pretrained(location)
    assert type(router) is PersynRouterModel and router.config.teachers == TEACHERS
    card = Path(location, "README.md").read_text()
    assert "| Hit@1 |" in card and "| Hit@3 |" in card and "On 6 held-out prompts" in card
    assert "Qwen/Qwen2.5-1.5B-Instruct" in card and "α = 0.4" in card  # student and alpha from the scores' card
    train = router_rows(24).train_test_split(test_size=6, seed=42)["train"]  # the recipe's seed
    pairs = sum(3 if np.isfinite(rewards).all() else 1 for rewards in train["teacher_rewards"])
    assert f"18 ({pairs} comparable teacher pairs)" in card
    # the pairwise export: 12 prompts with 3 rewarded teachers (C(3,2) = 3 pairs), 12 with 2 (1 pair, label 1)
    exported = ArtifactStore(inputs["store_root"]).load_dataset("test/pairs")
    assert len(exported) == 12 * 3 + 12 * 1
    assert sum(exported["label"]) == 12


def test_train_router_verb_rejects_teacher_mismatch(tmp_path, tiny_qwen2_path):
    inputs = write_inputs(tmp_path)
    two = load_teachers(inputs["teachers"])[:2]
    (tmp_path / "two.yaml").write_text(
        yaml.safe_dump([{"name": t.name, "model_id": t.model_id, "family": t.family, "size_b": t.size_b} for t in two])
    )
    args = overrides({**inputs, "teachers": str(tmp_path / "two.yaml")}, tiny_qwen2_path)
    with pytest.raises(
        SystemExit, match=r"scores' teachers \['long-cot', 'short-cot', 'terse'\] differ from the teachers"
    ):
        cli_main(["train-router", "--config", os.path.join(REPO_ROOT, RECIPE), *args])
    assert not os.path.exists(ArtifactStore(inputs["store_root"]).location("test/router"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_train_router_in_two_processes(tmp_path, tiny_qwen2_path):
    inputs = write_inputs(tmp_path)
    command = [  # what `accelerate launch --num_processes 2` runs: torchrun, two processes
        *(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())),
        *("-m", "persyn_hf.scripts.train_router"),
        *("--config", RECIPE, *overrides(inputs, tiny_qwen2_path), "--per_device_train_batch_size", "3"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.count("Saved the router to") == 1  # the main process saves, once
    location = ArtifactStore(inputs["store_root"]).location("test/router")
    assert type(AutoModel.from_pretrained(location)) is PersynRouterModel
    card = Path(location, "README.md").read_text()
    # 3 prompts a process x 2 accumulation steps (the recipe) x 2 processes
    assert "| Hit@3 |" in card and "| Effective batch size | 12 prompts |" in card


def test_an_eval_split_without_comparable_pairs_trains_without_evaluation(tmp_path, fresh_router):
    router, tokenizer = fresh_router
    ties = Dataset.from_dict({"prompt": ["x", "y"], "teacher_rewards": [[1.0, 1.0, 1.0], [NAN, 0.5, NAN]]})
    with pytest.warns(UserWarning, match="`eval_dataset` has no comparable teacher pair: training without evaluation"):
        trainer = train_router(router, tokenizer, router_rows(), ties, args=training_args(tmp_path, max_steps=1))
    assert trainer.eval_dataset is None
    assert trainer.state.global_step == 1


def test_max_train_prompts_trains_on_fewer_prompts_and_keeps_the_held_out_ones(tmp_path, tiny_qwen2_path):
    inputs = write_inputs(tmp_path)
    argv = ["train-router", "--config", os.path.join(REPO_ROOT, RECIPE), *overrides(inputs, tiny_qwen2_path)]
    cli_main([*argv, "--max_train_prompts", "5", "--router_repo_id", "test/router-5"])
    card = Path(ArtifactStore(inputs["store_root"]).location("test/router-5"), "README.md").read_text()
    assert "On 6 held-out prompts" in card  # the same held-out split as with every training prompt
    assert "| Training prompts | 5 (" in card


def test_an_eval_size_that_leaves_no_training_prompt_is_a_config_error():
    rows = router_rows(3)
    train, held_out = split_rows(rows, 0.6, seed=0)  # a fraction is rounded up, as `datasets` does: ceil(1.8) = 2
    assert (len(train), len(held_out)) == (1, 2)
    with pytest.raises(ConfigError, match=r"`eval_size: 0.8` holds out 3 of the 3 prompts \(a fraction is rounded"):
        split_rows(rows, 0.8, seed=0)  # ceil(2.4) = 3
    with pytest.raises(ConfigError, match=r"`eval_size: 3` holds out 3 of the 3 prompts.*set it to 0"):
        split_rows(rows, 3, seed=0)


def test_max_train_prompts_are_drawn_with_the_seed_even_without_held_out_prompts():
    rows = router_rows(24)
    drawn = {seed: list(split_rows(rows, 0, seed, max_train_prompts=5)[0]["prompt_id"]) for seed in (0, 1)}
    assert drawn[0] != drawn[1] and list(rows["prompt_id"][:5]) not in drawn.values()
    assert all(len(set(ids)) == 5 and set(ids) <= set(rows["prompt_id"]) for ids in drawn.values())
    assert (
        list(split_rows(rows, 0, 0, max_train_prompts=5)[0]["prompt_id"]) == drawn[0]
    )  # the same seed, the same draw
    train, held_out = split_rows(rows, 6, 42, max_train_prompts=5)
    assert len(train) == 5 and len(held_out) == 6 and not set(train["prompt_id"]) & set(held_out["prompt_id"])
