"""Fine-tune the student on a personalized dataset with TRL (`persyn-hf sft`).

# Full fine-tuning (paper Table 9), 4 GPUs with DeepSpeed ZeRO-3
```bash
accelerate launch --config_file recipes/accelerate_configs/zero3.yaml -m persyn_hf.scripts.sft \
    --config recipes/Qwen2.5-1.5B-Instruct/sft/config_math.yaml
```

# LoRA on all linear layers (paper Table 10), for students above 14B
```bash
accelerate launch --config_file recipes/accelerate_configs/zero3.yaml -m persyn_hf.scripts.sft \
    --config recipes/Qwen2.5-32B-Instruct/sft/config_math_lora.yaml
```

# One process, any recipe, with overrides
```bash
persyn-hf sft --config recipes/Qwen2.5-1.5B-Instruct/sft/config_instruct.yaml \
    --model_name_or_path Qwen/Qwen2.5-1.5B-Instruct \
    --dataset_name my-user/magpie-zoo-personalized-Qwen2.5-1.5B-Instruct --dataset_config persyn \
    --student_repo_id my-user/Qwen2.5-1.5B-Instruct-PerSyn \
    --store_root artifacts --output_dir data/Qwen2.5-1.5B-Instruct-PerSyn
```
"""

from persyn_hf.cli import run_script
from persyn_hf.scripts.parser import RecipeParser
from persyn_hf.sft import SFTScriptArguments, run
from persyn_hf.store import ArtifactStore, StoreArguments

HELP_EPILOG = (
    "Every field of TRL's `SFTConfig` (transformers' `TrainingArguments`) is accepted too, e.g. --learning_rate, "
    "--num_train_epochs, --per_device_train_batch_size, --gradient_accumulation_steps, --max_length, --bf16, "
    "--output_dir: `persyn-hf sft --help-all` lists them (importing them takes a few seconds)."
)


def main(script_args: SFTScriptArguments, training_args, model_args, store_args: StoreArguments) -> None:
    run(script_args, training_args, model_args, ArtifactStore.from_args(store_args))


def make_parser():
    from trl import ModelConfig, SFTConfig

    return RecipeParser((SFTScriptArguments, SFTConfig, ModelConfig, StoreArguments))


def make_help_parser():
    """The verb's own fields and TRL's `ModelConfig`, without `SFTConfig` (whose import costs seconds)."""
    from trl import ModelConfig

    return RecipeParser((SFTScriptArguments, ModelConfig, StoreArguments), epilog=HELP_EPILOG)


if __name__ == "__main__":
    run_script("sft")
