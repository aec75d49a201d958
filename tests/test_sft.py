"""The SFT stage: `persyn-hf sft` from the real recipes on tiny local models, completion-only loss, LoRA."""

import math
from pathlib import Path

import pytest
import torch
import yaml
from datasets import Dataset
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
from trl import ModelConfig, SFTConfig

from persyn_hf import cli
from persyn_hf.scripts.sft import make_parser
from persyn_hf.sft import SFTScriptArguments, make_trainer, student_card
from persyn_hf.store import ArtifactStore

RECIPES = Path(__file__).parent.parent / "recipes"
FULL_RECIPE = RECIPES / "Qwen2.5-1.5B-Instruct" / "sft" / "config_math.yaml"
LORA_RECIPE = RECIPES / "Qwen2.5-32B-Instruct" / "sft" / "config_math_lora.yaml"

EXAMPLES = [  # (prompt, response, teacher)
    ("What is 12 + 7?", "12 + 7 = 19. The answer is 19.", "long_cot"),
    ("What is 3 + 4?", "The answer is 7.", "terse"),
    ("Tom has 4 apples and buys 9 more. How many apples does he have?", "4 + 9 = 13. The answer is 13.", "long_cot"),
    ("What is 1 + 2?", "The answer is 3.", "short_cot"),
]


def sft_rows(strategy="persyn"):
    return [
        {
            "prompt": [{"role": "user", "content": prompt}],
            "completion": [{"role": "assistant", "content": response}],
            "prompt_id": f"p{i}",
            "teacher": teacher,
            "strategy": strategy,
            "reward": 0.25 * i,
        }
        for i, (prompt, response, teacher) in enumerate(EXAMPLES)
    ]


@pytest.fixture
def store(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    store.save_dataset("me/math-personalized", Dataset.from_list(sft_rows()), config_name="persyn")
    return store


def tiny_overrides(model_path, store, tmp_path):
    """CLI flags that point a real recipe at a tiny local model and store, for a few CPU steps."""
    return [
        "--model_name_or_path", model_path,
        "--dataset_repo_id", "me/math-personalized",
        "--router_repo_id", "me/router",
        "--student_repo_id", "me/student",
        "--store_root", str(store.root),
        "--output_dir", str(tmp_path / "out"),
        "--dtype", "float32", "--bf16", "false", "--activation_checkpointing", "false",
        "--max_steps", "3", "--warmup_steps", "0", "--learning_rate", "1e-2",
        "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1", "--max_length", "64",
        "--report_to", "none", "--save_strategy", "no", "--logging_steps", "1",
    ]  # fmt: skip


def test_sft_full_recipe_trains_and_saves_student_with_card(tiny_qwen2_path, store, tmp_path):
    stale = tmp_path / "out" / "student" / "adapter_config.json"  # left by an earlier run in the same output_dir
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")

    cli.main(["sft", "--config", str(FULL_RECIPE), *tiny_overrides(tiny_qwen2_path, store, tmp_path)])

    location = Path(store.location("me/student"))
    assert not (location / "adapter_config.json").exists()
    before = load_file(Path(tiny_qwen2_path) / "model.safetensors")
    after = load_file(location / "model.safetensors")
    assert before.keys() == after.keys()
    assert all(not torch.equal(before[name], after[name]) for name in before)
    student = AutoModelForCausalLM.from_pretrained(location)
    assert student.config.model_type == "qwen2"

    card = ModelCard.load(location / "README.md")
    assert card.data.datasets == ["me/math-personalized"]
    assert card.data.library_name == "transformers"
    assert "strategy:persyn" in card.data.tags
    assert "| Strategy | `persyn` |" in card.text
    assert "[me/router](https://huggingface.co/me/router)" in card.text
    assert "| `long_cot` | 2 | 50.0% |" in card.text and "| `terse` | 1 | 25.0% |" in card.text
    assert "| Mean reward of the kept responses | 0.3750 |" in card.text  # (0 + .25 + .5 + .75) / 4
    assert "| Learning rate | 0.01 |" in card.text and "| Max sequence length | 64 |" in card.text


@pytest.mark.parametrize(
    ("rewards", "shown"), [([math.nan] * 4, "not scored"), ([0.5, math.nan, 0.25, math.nan], "0.3750 (the 2 scored)")]
)
def test_the_card_gives_the_mean_of_the_scored_rewards(tmp_path, rewards, shown):
    dataset = Dataset.from_list([dict(row, reward=reward) for row, reward in zip(sft_rows(), rewards)])
    card = student_card(
        dataset,
        SFTScriptArguments(dataset_repo_id="me/math-personalized", student_repo_id="me/student"),
        SFTConfig(output_dir=str(tmp_path), report_to="none", bf16=False),
        ModelConfig(model_name_or_path="Qwen/Qwen2.5-1.5B-Instruct"),
    )
    assert f"| Mean reward of the kept responses | {shown} |" in card.text  # (0.5 + 0.25) / 2


def test_sft_lora_recipe_saves_loadable_adapter(tiny_llama_path, store, tmp_path):
    from peft import AutoPeftModelForCausalLM, PeftConfig

    cli.main(["sft", "--config", str(LORA_RECIPE), *tiny_overrides(tiny_llama_path, store, tmp_path), "--lora_r", "4"])

    location = store.location("me/student")
    config = PeftConfig.from_pretrained(location)
    assert config.r == 4 and config.lora_alpha == 32
    linear_layers = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert {name.split(".")[-1] for name in config.target_modules} == linear_layers  # every linear layer
    adapter = load_file(Path(location) / "adapter_model.safetensors")
    lora_b = [tensor for name, tensor in adapter.items() if "lora_B" in name]
    assert len(lora_b) == 2 * 7 and all(tensor.abs().sum() > 0 for tensor in lora_b)  # B starts at zero: trained
    model = AutoPeftModelForCausalLM.from_pretrained(location)
    assert model.peft_config["default"].r == 4
    card = ModelCard.load(Path(location) / "README.md")
    assert card.data.library_name == "peft"
    assert "LoRA (r=4, alpha=32, target modules: all-linear)" in card.text


def test_prompt_tokens_are_masked(tiny_qwen2_path, tiny_tokenizer, tmp_path):
    training_args = SFTConfig(output_dir=str(tmp_path), report_to="none", max_length=128, bf16=False)
    trainer = make_trainer(
        Dataset.from_list(sft_rows()), training_args, ModelConfig(model_name_or_path=tiny_qwen2_path)
    )
    batch = trainer.data_collator([trainer.train_dataset[0]])
    input_ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()

    prompt = tiny_tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 12 + 7?"}], add_generation_prompt=True, tokenize=False
    )
    prompt_length = len(tiny_tokenizer(prompt)["input_ids"])
    assert labels[:prompt_length] == [-100] * prompt_length
    assert labels[prompt_length:] == input_ids[prompt_length:]
    assert tiny_tokenizer.decode(labels[prompt_length:]).startswith("12 + 7 = 19. The answer is 19.<|im_end|>")


def test_sft_recipes_carry_the_paper_settings():
    for recipe, learning_rate, max_length, peft in [
        (RECIPES / "Qwen2.5-1.5B-Instruct/sft/config_instruct.yaml", 2e-5, 4096, False),
        (FULL_RECIPE, 2e-5, 16384, False),
        (RECIPES / "Qwen2.5-32B-Instruct/sft/config_instruct_lora.yaml", 1e-4, 4096, True),
        (LORA_RECIPE, 1e-4, 16384, True),
    ]:
        assert recipe.read_text().startswith("# 1 node of 4 x A100 80GB")
        assert yaml.safe_load(recipe.read_text())["bf16"] is True
        argv = ["--config", str(recipe), "--bf16", "false"]  # this CPU-only machine cannot check bf16
        _, training_args, model_args, _ = make_parser().parse_args_and_config(argv)
        assert training_args.learning_rate == learning_rate and training_args.max_length == max_length
        assert training_args.num_train_epochs == 2 and training_args.warmup_steps == 100
        assert training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps * 4 == 32
        assert training_args.lr_scheduler_type == "cosine"
        assert model_args.use_peft is peft
        if peft:
            assert model_args.lora_target_modules == "all-linear"


def test_sft_rejects_bad_datasets_before_training(tiny_qwen2_path, store, tmp_path):
    rows = [{k: v for k, v in row.items() if k != "strategy"} for row in sft_rows()]
    store.save_dataset("me/no-strategy", Dataset.from_list(rows))
    store.save_dataset("me/mixed", Dataset.from_list(sft_rows("persyn") + sft_rows("strong")))
    args = tiny_overrides(tiny_qwen2_path, store, tmp_path)
    with pytest.raises(SystemExit, match=r"persyn-hf sft: error: The sft dataset lacks column\(s\) \['strategy'\]"):
        cli.main(
            [
                "sft",
                "--config",
                str(FULL_RECIPE),
                *args,
                "--dataset_repo_id",
                "me/no-strategy",
                "--dataset_config",
                "default",
            ]
        )
    with pytest.raises(SystemExit, match=r"mixes strategies \['persyn', 'strong'\].*dataset_config"):
        cli.main(
            [
                "sft",
                "--config",
                str(FULL_RECIPE),
                *args,
                "--dataset_repo_id",
                "me/mixed",
                "--dataset_config",
                "default",
            ]
        )
    assert not Path(store.location("me/student")).exists()
