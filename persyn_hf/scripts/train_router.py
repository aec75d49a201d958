"""Train the PerSyn router on a student's teacher rewards (`persyn-hf train-router`, paper §2.3, Eq. 3-4).

Reads the scores (`persyn-hf score`) and their prompts from the artifact store, turns them into one row per prompt
with its teachers' rewards in the order of the teachers YAML (`persyn_hf.pairs.router_rows`), holds out
`eval_size` prompts, and trains a router from a pretrained backbone with the Bradley-Terry loss and the transformers
`Trainer`. The router is saved with its tokenizer, its code and its card (teachers, backbone, student, α, Hit@k),
and loads with `AutoModel.from_pretrained`.

# Math reasoning, one GPU
```bash
persyn-hf train-router --config recipes/Qwen2.5-1.5B-Instruct/router/config_math.yaml
```

# Instruction tuning, data parallel over 4 GPUs
```bash
accelerate launch --config_file recipes/accelerate_configs/ddp.yaml --num_processes 4 -m persyn_hf.scripts.train_router \
    --config recipes/Qwen2.5-1.5B-Instruct/router/config_instruct.yaml
```

# Any recipe, with overrides (here: a smaller backbone, no held-out prompts, a local store)
```bash
persyn-hf train-router --config recipes/Qwen2.5-1.5B-Instruct/router/config_math.yaml \
    --model_name_or_path Qwen/Qwen2.5-0.5B --eval_size 0 --router_repo_id my-user/router-small --store_root artifacts
```
"""

from persyn_hf.cli import run_script
from persyn_hf.scripts.parser import RecipeParser
from persyn_hf.store import ArtifactStore, StoreArguments
from persyn_hf.train_router import RouterModelArguments, TrainRouterArguments, run

HELP_EPILOG = (
    "Every field of `persyn_hf.router_trainer.RouterConfig` (transformers' `TrainingArguments`) is accepted too, "
    "e.g. --learning_rate, --num_train_epochs, --per_device_train_batch_size, --bf16, --seed, --output_dir: "
    "`persyn-hf train-router --help-all` lists them (importing them takes a few seconds)."
)


def main(args: TrainRouterArguments, model_args: RouterModelArguments, training_args, store_args: StoreArguments):
    result = run(args, model_args, training_args, ArtifactStore.from_args(store_args))
    if training_args.process_index == 0:
        metrics = result.summary["metrics"]
        shown = {key: round(value, 4) for key, value in metrics.items() if "hit" in key or "regret" in key}
        print(f"Saved the router to {result.location} {shown}")


def make_parser():
    from persyn_hf.router_trainer import RouterConfig

    return RecipeParser((TrainRouterArguments, RouterModelArguments, RouterConfig, StoreArguments))


def make_help_parser():
    """The verb's own fields, without `RouterConfig` (whose `TrainingArguments` import costs seconds)."""
    return RecipeParser((TrainRouterArguments, RouterModelArguments, StoreArguments), epilog=HELP_EPILOG)


if __name__ == "__main__":
    run_script("train-router")
