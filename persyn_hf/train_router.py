"""The train-router stage: the PerSyn router, trained on a student's teacher rewards (paper §2.3, Eq. 3-4).

Reads the scores (`persyn-hf score`) and their prompts from the artifact store, turns them into one row per prompt
with its teachers' rewards in the order of the teachers YAML (`persyn_hf.pairs.router_rows`), holds out
`eval_size` prompts, and trains a router from a pretrained backbone with the Bradley-Terry loss and the transformers
`Trainer` (`persyn_hf.router_trainer`). The router is saved with its tokenizer, its code and its card (teachers,
backbone, Hit@k, and the student and α that the scores' card records), and loads with `AutoModel.from_pretrained`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from persyn_hf.configs import DTYPES, TRAINING_DTYPE, check_choice, check_positive
from persyn_hf.contracts import StageResult
from persyn_hf.errors import ConfigError, DataError
from persyn_hf.store import MODEL_FILES, ArtifactStore, check_writable, data_file

if TYPE_CHECKING:
    from datasets import Dataset


@dataclass
class TrainRouterArguments:
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
            at most C(n, 2) rows per prompt: ties and missing rewards are left out), for inspection or publication.
            Training never reads it.
        max_train_prompts (`int`, *optional*):
            Train on only this many of the training prompts (drawn with the `seed`), the held-out ones unchanged:
            how the router's quality grows with its training data (paper Fig. 5).
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
    max_train_prompts: int | None = field(
        default=None, metadata={"help": "Train on only this many training prompts; the held-out ones unchanged."}
    )

    def __post_init__(self):
        if self.max_train_prompts is not None:
            check_positive(self, "max_train_prompts")
        if self.eval_size < 0 or (self.eval_size >= 1 and self.eval_size != int(self.eval_size)):
            raise ConfigError(f"`eval_size` must be 0, a fraction in (0, 1) or a whole count, got {self.eval_size}.")


@dataclass
class RouterModelArguments:
    """The router to train: a pretrained backbone and the head on top of it.

    Parameters:
        model_name_or_path (`str`, *optional*, defaults to `"Qwen/Qwen2.5-1.5B"`):
            Path or Hub id of the backbone (paper default: Qwen2.5-1.5B); any `AutoModel` architecture.
        dtype (`str`, *optional*, defaults to `"float32"`):
            Dtype the backbone is loaded in (`persyn_hf.configs`: weights that train load in float32; use `bf16: true`
            for mixed precision).
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
    dtype: str = field(
        default=TRAINING_DTYPE, metadata={"help": "Backbone dtype: float32 (default), bfloat16, float16 or auto."}
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
        check_choice("dtype", self.dtype, DTYPES)


def check_teachers(scores: Dataset, teachers: list[str], source: str) -> None:
    """The scores must cover exactly the declared teachers: a router output without data (or data without an output)
    is a mistake in the recipe."""
    scored = sorted(set(scores["teacher"]))
    if set(scored) != set(teachers):
        raise DataError(
            f"The scores' teachers {scored} differ from the teachers of {source} {teachers}: use the teacher specs "
            "the scores were computed with."
        )


def split_rows(
    rows: Dataset, eval_size: float, seed: int, max_train_prompts: int | None = None
) -> tuple[Dataset, Dataset | None]:
    """(train, eval) router rows, drawn with `seed`: `eval_size` prompts held out (eval is None when it is 0), and at
    most `max_train_prompts` of the others to train on."""
    if eval_size == 0:
        train, held_out = rows.shuffle(seed=seed), None
    else:
        test_size = int(eval_size) if eval_size >= 1 else eval_size
        num_test = test_size if isinstance(test_size, int) else math.ceil(test_size * len(rows))  # as `datasets`
        if num_test >= len(rows):
            raise ConfigError(
                f"`eval_size: {eval_size}` holds out {num_test} of the {len(rows)} prompts (a fraction is rounded "
                "up), leaving none to train on: lower it, or set it to 0 to hold out none."
            )
        split = rows.train_test_split(test_size=test_size, seed=seed)
        train, held_out = split["train"], split["test"]
    if max_train_prompts is not None:
        train = train.select(range(min(max_train_prompts, len(train))))
    return train, held_out


def scores_provenance(store: ArtifactStore, scores_repo_id: str, training_args) -> tuple[str | None, float | None]:
    """(student, α) of the scores, as their card records them: the router's card repeats them.

    The deprecated `student` / `alpha` fields of `RouterConfig` still fill in what an older scores' card lacks; set
    to a different value than the card's, they are an error.
    """
    from persyn_hf.cards import existing_card_metadata

    recorded = existing_card_metadata(store, scores_repo_id).get("persyn") or {}
    values = []
    for name in ("student", "alpha"):
        given, card = getattr(training_args, name), recorded.get(name)
        if given is not None and card is not None and given != card:
            raise ConfigError(
                f"`{name}: {given!r}` differs from the {card!r} that the scores {scores_repo_id!r} were computed "
                f"with; drop `{name}` from the recipe (the router's card takes it from the scores' card)."
            )
        values.append(card if card is not None else given)
    return values[0], values[1]


def backbone_kwargs(model_args: RouterModelArguments) -> dict:
    """`from_pretrained` keyword arguments of the backbone: its dtype and attention implementation."""
    import torch

    kwargs = {"dtype": model_args.dtype if model_args.dtype == "auto" else getattr(torch, model_args.dtype)}
    if model_args.attn_implementation is not None:
        kwargs["attn_implementation"] = model_args.attn_implementation
    return kwargs


def run(
    args: TrainRouterArguments,
    model_args: RouterModelArguments,
    training_args,
    store: ArtifactStore | None = None,
) -> StageResult:
    """Train the router on the scores; returns it, where it was saved and `{"metrics": ..., "alpha": ...}`.

    `training_args` is a `RouterConfig` (the router's `TrainingArguments`). Every input is checked before the
    backbone is loaded; under `accelerate launch` only the main process saves.
    """
    from transformers import set_seed

    from persyn_hf.pairs import pairwise_export, router_rows
    from persyn_hf.router import PersynRouterModel
    from persyn_hf.router_trainer import METRIC_NAMES, router_card, train_router
    from persyn_hf.teachers import load_teachers

    store = store or ArtifactStore()
    store.check_output(args.router_repo_id, "router_repo_id", files=MODEL_FILES)
    if args.pairs_repo_id is not None:
        store.check_output(args.pairs_repo_id, "pairs_repo_id", files=[data_file()])
    check_writable(
        training_args.output_dir, f"`output_dir` {training_args.output_dir!r}", "choose another `output_dir`"
    )
    backbone = store.resolve_model(model_args.model_name_or_path, "model_name_or_path", hub_ids=True)
    specs = load_teachers(args.teachers)
    names = [spec.name for spec in specs]
    scores = store.load_dataset(args.scores_repo_id, args.scores_config, contract="scores")
    prompts = store.load_dataset(args.prompts_repo_id, args.prompts_config, args.prompts_split, contract="prompts")
    check_teachers(scores, names, args.teachers)
    student, alpha = scores_provenance(store, args.scores_repo_id, training_args)
    rows = router_rows(scores, prompts, names)
    train_rows, eval_rows = split_rows(rows, args.eval_size, training_args.seed, args.max_train_prompts)
    set_seed(training_args.seed)  # the head's initial weights too: the same seed, the same router
    router, tokenizer = PersynRouterModel.from_backbone(
        backbone,
        teachers=names,
        pooling=model_args.pooling,
        head=model_args.head,
        head_hidden_size=model_args.head_hidden_size,
        dropout=model_args.dropout,
        max_prompt_length=model_args.max_prompt_length,
        **backbone_kwargs(model_args),
    )
    trainer = train_router(router, tokenizer, train_rows, eval_rows, args=training_args, teachers=names)
    metrics = trainer.evaluate() if trainer.eval_dataset is not None else {}
    location = store.location(args.router_repo_id)
    if trainer.is_world_process_zero():
        card = router_card(
            trainer.model,
            specs,
            args.router_repo_id,
            training_args,
            trainer.train_dataset,
            metrics=metrics,
            num_eval_prompts=len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0,
            student=student,
            alpha=alpha,
        )
        location = store.save_model(args.router_repo_id, trainer.model, tokenizer, card=card)
        if args.pairs_repo_id is not None:
            store.save_dataset(args.pairs_repo_id, pairwise_export(rows, names))
    trainer.accelerator.wait_for_everyone()
    metrics = {key: metrics[f"eval_{key}"] for key in METRIC_NAMES if f"eval_{key}" in metrics}  # no timings
    summary = {"metrics": metrics, "student": student, "alpha": alpha, "num_train_prompts": len(train_rows)}
    return StageResult(trainer.model, location, summary)
