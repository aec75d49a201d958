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

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from datasets import Dataset

from persyn_hf.cli import parse_args
from persyn_hf.store import ArtifactStore, StoreArguments


@dataclass
class TrainRouterScriptArguments:
    """What `persyn-hf train-router` reads and writes.

    Parameters:
        scores_repo_id (`str`):
            Artifact of the scores (`persyn-hf score`): `prompt_id`, `teacher`, `reward`.
        prompts_repo_id (`str`):
            Artifact of the prompts the scores are for (`prompt_id`, `prompt` or `messages`).
        teachers (`str`):
            YAML file of the teacher specs; their order is the router's output order.
        router_repo_id (`str`):
            Artifact the router is saved (or pushed) to, with its tokenizer, code and card.
        scores_config (`str`, *optional*, defaults to `"default"`):
            Dataset config of the scores artifact.
        prompts_config (`str`, *optional*, defaults to `"default"`):
            Dataset config of the prompts artifact.
        prompts_split (`str`, *optional*, defaults to `"train"`):
            Split of the prompts artifact holding the scored prompts (e.g. `"router"` for the router subset).
        eval_size (`float`, *optional*, defaults to `0.1`):
            Prompts held out for evaluation: a fraction of the prompts if below 1, else a number of prompts; 0 keeps
            none. The split is drawn with the training `seed`.
        pairs_repo_id (`str`, *optional*):
            Artifact to also write the explicit pairwise dataset to (`prompt_id`, `teacher_a`, `teacher_b`, `label`;
            C(n, 2) rows per prompt), for inspection or publication. Training never reads it.
    """

    scores_repo_id: str = field(metadata={"help": "Artifact of the scores (persyn-hf score)."})
    prompts_repo_id: str = field(metadata={"help": "Artifact of the prompts the scores are for."})
    teachers: str = field(metadata={"help": "YAML file of the teacher specs; their order is the router's."})
    router_repo_id: str = field(metadata={"help": "Artifact the router is saved (or pushed) to."})
    scores_config: str = field(default="default", metadata={"help": "Dataset config of the scores."})
    prompts_config: str = field(default="default", metadata={"help": "Dataset config of the prompts."})
    prompts_split: str = field(default="train", metadata={"help": "Split of the prompts holding the scored ones."})
    eval_size: float = field(
        default=0.1,
        metadata={"help": "Held-out prompts: a fraction if below 1, else a count; 0 keeps none."},
    )
    pairs_repo_id: str | None = field(
        default=None, metadata={"help": "Artifact to also write the explicit pairwise dataset to (inspection)."}
    )

    def __post_init__(self):
        if self.eval_size < 0 or (self.eval_size >= 1 and self.eval_size != int(self.eval_size)):
            raise ValueError(f"`eval_size` must be 0, a fraction in (0, 1) or a whole count, got {self.eval_size}.")


@dataclass
class RouterModelArguments:
    """The router to train: a pretrained backbone and the head on top of it.

    Parameters:
        model_name_or_path (`str`, *optional*, defaults to `"Qwen/Qwen2.5-1.5B"`):
            Path or Hub id of the backbone (paper default: Qwen2.5-1.5B); any `AutoModel` architecture.
        dtype (`str`, *optional*):
            Dtype the backbone is loaded in: `"auto"`, `"bfloat16"`, `"float16"` or `"float32"` (the default).
        attn_implementation (`str`, *optional*):
            Attention implementation of the backbone, e.g. `"sdpa"` or `"flash_attention_2"`.
        pooling (`str`, *optional*):
            `"last"` (decoders), `"cls"` or `"mean"` (encoders); defaults to what suits the backbone.
        head (`str`, *optional*, defaults to `"linear"`):
            `"linear"` or `"mlp"` (one hidden layer).
        head_hidden_size (`int`, *optional*):
            Width of the `"mlp"` head's hidden layer; defaults to the backbone's hidden size.
        dropout (`float`, *optional*, defaults to `0.0`):
            Dropout in the head.
        max_prompt_length (`int`, *optional*, defaults to `1024`):
            Prompts are truncated to this many tokens, in training and routing.
    """

    model_name_or_path: str = field(
        default="Qwen/Qwen2.5-1.5B", metadata={"help": "Path or Hub id of the backbone (paper: Qwen2.5-1.5B)."}
    )
    dtype: str | None = field(
        default=None, metadata={"help": "Backbone dtype: auto, bfloat16, float16 or float32 (default)."}
    )
    attn_implementation: str | None = field(
        default=None, metadata={"help": "Backbone attention implementation, e.g. sdpa or flash_attention_2."}
    )
    pooling: str | None = field(
        default=None, metadata={"help": "last (decoders), cls or mean (encoders); default: what suits the backbone."}
    )
    head: str = field(default="linear", metadata={"help": "Score head: linear or mlp (one hidden layer)."})
    head_hidden_size: int | None = field(
        default=None, metadata={"help": "Width of the mlp head's hidden layer (default: the backbone's)."}
    )
    dropout: float = field(default=0.0, metadata={"help": "Dropout in the head."})
    max_prompt_length: int = field(default=1024, metadata={"help": "Prompts are truncated to this many tokens."})

    def __post_init__(self):
        if self.dtype not in (None, "auto", "bfloat16", "float16", "float32"):
            raise ValueError(f"`dtype` must be auto, bfloat16, float16 or float32, got {self.dtype!r}.")


def check_teachers(scores: Dataset, teachers: list[str], source: str) -> None:
    """The scores must cover exactly the declared teachers: a router output without data (or data without an output)
    is a mistake in the recipe."""
    scored = sorted(set(scores["teacher"]))
    if set(scored) != set(teachers):
        raise ValueError(
            f"The scores' teachers {scored} differ from the teachers of {source} {teachers}: use the teacher specs "
            "the scores were computed with."
        )


def split_rows(rows: Dataset, eval_size: float, seed: int) -> tuple[Dataset, Dataset | None]:
    """(train, eval) router rows; eval is None when `eval_size` is 0."""
    if eval_size == 0:
        return rows, None
    test_size = int(eval_size) if eval_size >= 1 else eval_size
    if (test_size if isinstance(test_size, int) else round(test_size * len(rows))) >= len(rows):
        raise ValueError(f"`eval_size={eval_size}` would hold out all {len(rows)} prompts: lower it.")
    split = rows.train_test_split(test_size=test_size, seed=seed)
    return split["train"], split["test"]


def main(
    script_args: TrainRouterScriptArguments,
    model_args: RouterModelArguments,
    training_args,
    store_args: StoreArguments,
):
    import torch

    from persyn_hf.pairs import pairwise_export, router_rows
    from persyn_hf.router import PersynRouterModel
    from persyn_hf.router_trainer import router_card, train_router
    from persyn_hf.teachers import load_teachers

    store = ArtifactStore.from_args(store_args)
    specs = load_teachers(script_args.teachers)
    names = [spec.name for spec in specs]
    scores = store.load_dataset(script_args.scores_repo_id, script_args.scores_config)
    prompts = store.load_dataset(script_args.prompts_repo_id, script_args.prompts_config, script_args.prompts_split)
    check_teachers(scores, names, script_args.teachers)
    rows = router_rows(scores, prompts, names)
    train_rows, eval_rows = split_rows(rows, script_args.eval_size, training_args.seed)

    dtype = getattr(torch, model_args.dtype) if model_args.dtype not in (None, "auto") else model_args.dtype
    backbone_kwargs = {"dtype": dtype} if dtype is not None else {}
    if model_args.attn_implementation is not None:
        backbone_kwargs["attn_implementation"] = model_args.attn_implementation
    router, tokenizer = PersynRouterModel.from_backbone(
        model_args.model_name_or_path,
        teachers=names,
        pooling=model_args.pooling,
        head=model_args.head,
        head_hidden_size=model_args.head_hidden_size,
        dropout=model_args.dropout,
        max_prompt_length=model_args.max_prompt_length,
        **backbone_kwargs,
    )
    trainer = train_router(router, tokenizer, train_rows, eval_rows, args=training_args, teachers=names)
    metrics = trainer.evaluate() if trainer.eval_dataset is not None else {}
    if trainer.is_world_process_zero():
        card = router_card(
            trainer.model,
            specs,
            script_args.router_repo_id,
            training_args,
            trainer.train_dataset,
            metrics=metrics,
            num_eval_prompts=len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0,
        )
        location = store.save_model(script_args.router_repo_id, trainer.model, tokenizer, card=card)
        if script_args.pairs_repo_id is not None:
            store.save_dataset(script_args.pairs_repo_id, pairwise_export(rows, names))
        shown = {key: round(value, 4) for key, value in metrics.items() if "hit" in key or "regret" in key}
        print(f"Saved the router to {location} {shown}")
    trainer.accelerator.wait_for_everyone()


def make_parser():
    from trl import TrlParser

    from persyn_hf.router_trainer import RouterConfig

    return TrlParser((TrainRouterScriptArguments, RouterModelArguments, RouterConfig, StoreArguments))


if __name__ == "__main__":
    main(*parse_args(make_parser(), sys.argv[1:]))
