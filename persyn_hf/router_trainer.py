"""Training the PerSyn router with the transformers `Trainer`: config, collator, metrics and `train_router`."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from huggingface_hub import ModelCard, ModelCardData
from transformers import EvalPrediction, PreTrainedTokenizerBase, Trainer, TrainerCallback, TrainingArguments

from persyn_hf.cards import PERSYN_CITATION, hub_link
from persyn_hf.contracts import validate
from persyn_hf.errors import ConfigError, DataError
from persyn_hf.rewards import check_alpha
from persyn_hf.router import PersynRouterModel, reward_pairs
from persyn_hf.teachers import TeacherSpec
from persyn_hf.templates import template_path

# Metric keys of `router_metrics` -> their names on the router card.
METRIC_NAMES = {
    "hit_at_1": "Hit@1",
    "hit_at_3": "Hit@3",
    "pairwise_accuracy": "Pairwise accuracy",
    "oracle_regret": "Oracle regret",
    "loss": "Bradley-Terry loss",
}


@dataclass
class RouterConfig(TrainingArguments):
    r"""
    Configuration of [`train_router`]: the `TrainingArguments` of the router's `Trainer`.

    Parameters:
        > Deprecated parameters (the router's card reads them from the scores' card, where `persyn-hf score` records
        > them once)

        student (`str`, *optional*):
            Hub id or path of the student whose learnability the rewards measure.
        alpha (`float`, *optional*):
            Weight of learnability in the reward, r = (1 - α)·quality + α·learnability (PerSyn Eq. 2).

    > [!NOTE]
    > These parameters have default values different from [`~transformers.TrainingArguments`]:
    > - `learning_rate`: Defaults to `1e-5` instead of `5e-5`.
    > - `logging_steps`: Defaults to `10` instead of `500`.
    > - `label_names`: Defaults to `["teacher_rewards"]` instead of `None`, so that evaluation computes the loss and
    >   passes the reward vectors to `compute_metrics`.
    """

    # Parameters whose default values are overridden from TrainingArguments
    learning_rate: float = field(default=1e-5, metadata={"help": "The initial learning rate for AdamW."})
    logging_steps: float = field(
        default=10,
        metadata={
            "help": "Log every X updates steps. Should be an integer or a float in range `[0,1)`. If smaller than 1, "
            "will be interpreted as ratio of total training steps."
        },
    )
    label_names: list[str] | None = field(
        default_factory=lambda: ["teacher_rewards"],
        metadata={"help": "Input keys holding the labels: the reward vectors."},
    )

    # Deprecated parameters: the scores' card records them
    student: str | None = field(
        default=None, metadata={"help": "Deprecated: the router's card takes the student from the scores' card."}
    )
    alpha: float | None = field(
        default=None, metadata={"help": "Deprecated: the router's card takes α from the scores' card."}
    )

    def __post_init__(self):
        if self.alpha is not None:
            check_alpha(self.alpha)
        for name in ("student", "alpha"):
            if getattr(self, name) is not None:
                warnings.warn(
                    f"`{name}` is deprecated: the router's card reads it from the scores' card.", FutureWarning, 2
                )
        super().__post_init__()


@dataclass
class RouterCollator:
    """Pads tokenized prompts to the longest of the batch (right side) and stacks their reward vectors.

    Args:
        pad_token_id (`int`): Id written into padded positions; the attention mask marks them, so any id works.
        pad_to_multiple_of (`int`, *optional*): Round the padded length up to a multiple of this number.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        length = max(len(example["input_ids"]) for example in examples)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(examples), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(examples), length), dtype=torch.long)
        for row, example in enumerate(examples):
            ids = example["input_ids"]
            input_ids[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "teacher_rewards" in examples[0]:
            batch["teacher_rewards"] = torch.tensor([example["teacher_rewards"] for example in examples])
        return batch


def router_metrics(scores: np.ndarray, rewards: np.ndarray, top_k: tuple[int, ...] = (1, 3)) -> dict[str, float]:
    """How well router scores agree with the true rewards, over prompts with at least one known reward.

    The router's choice is its best-scored teacher among those with a known (finite) reward.

    - `hit_at_k`: the choice is within the top k teachers by reward (fewer than k teachers have a strictly higher
      reward, so ties never count against the router).
    - `pairwise_accuracy`: share of comparable pairs (both rewards known and different) that the scores order like
      the rewards do.
    - `oracle_regret`: mean of (best reward − reward of the choice), 0 for a perfect router.
    """
    scores = np.asarray(scores, dtype=np.float64)
    rewards = np.asarray(rewards, dtype=np.float64)
    known = np.isfinite(rewards)
    rows = known.any(axis=1)
    scores, rewards, known = scores[rows], rewards[rows], known[rows]
    if len(rewards) == 0:
        raise ValueError("No prompt has a known reward: cannot evaluate the router.")
    choice = np.where(known, scores, -np.inf).argmax(axis=1)
    chosen = rewards[np.arange(len(rewards)), choice]
    masked = np.where(known, rewards, -np.inf)
    higher = (masked > chosen[:, None]).sum(axis=1)
    metrics = {f"hit_at_{k}": float((higher < k).mean()) for k in top_k}

    n = rewards.shape[1]
    a, b = np.triu_indices(n, k=1)
    comparable = known[:, a] & known[:, b] & (rewards[:, a] != rewards[:, b])
    agree = np.sign(scores[:, b] - scores[:, a]) == np.sign(rewards[:, b] - rewards[:, a])
    metrics["pairwise_accuracy"] = float(agree[comparable].mean()) if comparable.any() else float("nan")
    metrics["oracle_regret"] = float((masked.max(axis=1) - chosen).mean())
    return metrics


def compute_metrics(eval_prediction: EvalPrediction) -> dict[str, float]:
    """`Trainer` hook: [`router_metrics`] of the eval scores (predictions) against the reward vectors (labels)."""
    return router_metrics(eval_prediction.predictions, eval_prediction.label_ids)


def prepare_rows(
    dataset: Dataset, tokenizer: PreTrainedTokenizerBase, router: PersynRouterModel, name: str
) -> Dataset | None:
    """Check router training rows, drop those without a comparable pair (with a warning) and tokenize the prompts.

    Rows need `prompt` (str) and `teacher_rewards` (one float per router teacher, NaN = missing). Prompts are
    tokenized without a chat template, truncated to `router.config.max_prompt_length` tokens. Returns `None`
    when no row is left.
    """
    validate(dataset, "router_rows", source=f"`{name}`")
    teachers = router.config.teachers
    lengths = [len(rewards) for rewards in dataset["teacher_rewards"]]
    wrong = [i for i, length in enumerate(lengths) if length != len(teachers)]
    if wrong:
        raise DataError(
            f"`{name}` row {wrong[0]} has {lengths[wrong[0]]} rewards but the router scores {len(teachers)} teachers "
            f"{teachers} ({len(wrong)} such rows): build the rows with the router's teacher order."
        )
    rewards = np.array(dataset["teacher_rewards"], dtype=np.float64).reshape(len(dataset), len(teachers))
    comparable = [_has_comparable_pair(row) for row in rewards]
    dropped = len(dataset) - sum(comparable)
    if dropped:
        warnings.warn(
            f"Dropped {dropped} of {len(dataset)} rows of `{name}` without any comparable teacher pair (fewer than "
            "two finite, different rewards).",
            stacklevel=3,
        )
        dataset = dataset.select([i for i, keep in enumerate(comparable) if keep])
    if len(dataset) == 0:
        return None
    max_length = router.config.max_prompt_length
    return dataset.map(
        lambda batch: tokenizer(batch["prompt"], truncation=True, max_length=max_length),
        batched=True,
        desc=f"Tokenizing {name}",
    )


def _has_comparable_pair(rewards: np.ndarray) -> bool:
    return len(np.unique(rewards[np.isfinite(rewards)])) >= 2


def train_router(
    router: PersynRouterModel,
    tokenizer: PreTrainedTokenizerBase,
    train_dataset: Dataset,
    eval_dataset: Dataset | None = None,
    args: RouterConfig | None = None,
    teachers: list[str] | None = None,
    callbacks: list[TrainerCallback] | None = None,
) -> Trainer:
    """Train `router` on router rows (`prompt`, `teacher_rewards`) with the Bradley-Terry loss and the `Trainer`.

    Each prompt goes through the backbone once per step and serves all its comparable teacher pairs. With an
    `eval_dataset`, evaluation reports the loss, Hit@1, Hit@3, pairwise accuracy and oracle regret. Runs unchanged
    under `accelerate launch`.

    Args:
        teachers (`list[str]`, *optional*): Teacher order of the rows' reward vectors; must equal
            `router.config.teachers` when given.

    Returns:
        The `Trainer` after training (its `model` is the trained router; call `evaluate()` for metrics).
    """
    if teachers is not None and list(teachers) != list(router.config.teachers):
        raise DataError(
            f"The rows' teachers {list(teachers)} differ from the router's teachers {router.config.teachers}: "
            "build the rows with the router's teacher names, in the same order."
        )
    if tokenizer.pad_token_id is None:
        raise ValueError("The tokenizer has no pad token: use the tokenizer from `PersynRouterModel.from_backbone`.")
    args = args if args is not None else RouterConfig(output_dir="router-trainer")
    with args.main_process_first(desc="preparing router rows"):
        train_dataset = prepare_rows(train_dataset, tokenizer, router, "train_dataset")
        if train_dataset is None:
            raise DataError("`train_dataset` has no row with two finite, different teacher rewards: nothing to learn.")
        if eval_dataset is not None:
            eval_dataset = prepare_rows(eval_dataset, tokenizer, router, "eval_dataset")
            if eval_dataset is None:
                warnings.warn(
                    "`eval_dataset` has no comparable teacher pair: training without evaluation.", stacklevel=2
                )
    trainer = Trainer(
        model=router,
        args=args,
        data_collator=RouterCollator(tokenizer.pad_token_id),
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        compute_metrics=compute_metrics if eval_dataset is not None else None,
        callbacks=callbacks,
    )
    trainer.train()
    return trainer


def count_pairs(teacher_rewards: list[list[float]]) -> int:
    """Number of comparable teacher pairs (both rewards finite and different) in a list of reward vectors."""
    return len(reward_pairs(torch.tensor(teacher_rewards, dtype=torch.float64))[1]) if teacher_rewards else 0


def router_card(
    router: PersynRouterModel,
    teachers: Sequence[TeacherSpec],
    repo_id: str,
    args: RouterConfig,
    train_dataset: Dataset,
    metrics: dict[str, float] | None = None,
    num_eval_prompts: int = 0,
    student: str | None = None,
    alpha: float | None = None,
) -> ModelCard:
    """The router's model card: teachers, backbone, student, α, training data and eval metrics, quick start.

    `metrics` are `router_metrics` / `Trainer.evaluate` results (an `eval_` prefix is dropped); `student` and `alpha`
    are those of the scores the router learnt from.
    """
    names = [spec.name for spec in teachers]
    if names != list(router.config.teachers):
        raise ConfigError(f"The teacher specs {names} differ from the router's teachers {router.config.teachers}.")
    backbone = router.config.backbone_config.name_or_path
    metrics = {key.removeprefix("eval_"): value for key, value in (metrics or {}).items()}
    shown = [(label, metrics[key]) for key, label in METRIC_NAMES.items() if key in metrics]
    card_data = ModelCardData(
        base_model=None if Path(backbone).exists() else backbone,
        library_name="transformers",
        model_name=repo_id,
        tags=["persyn", "router", "bradley-terry", "generated_from_trainer"],
        persyn={
            "teachers": names,
            "student": student,
            "alpha": alpha,
            "num_train_prompts": len(train_dataset),
            "metrics": {key: metrics[key] for key in METRIC_NAMES if key in metrics},
        },
    )
    return ModelCard.from_template(
        card_data,
        template_path=template_path("router_card.md"),
        model_name=repo_id,
        repo_id=repo_id,
        backbone_link=hub_link(backbone),
        student_link=hub_link(student) if student else "(not recorded)",
        alpha=alpha,
        teachers=teachers,
        metrics=shown,
        num_eval_prompts=num_eval_prompts,
        pooling=router.config.pooling,
        head=router.config.head,
        max_prompt_length=router.config.max_prompt_length,
        num_train_prompts=len(train_dataset),
        num_train_pairs=count_pairs(train_dataset["teacher_rewards"]),
        learning_rate=args.learning_rate,
        num_train_epochs=args.num_train_epochs,
        effective_batch_size=args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size,
        persyn_citation=PERSYN_CITATION,
        persyn_hf_version=version("persyn-hf"),
        transformers_version=version("transformers"),
        pytorch_version=version("torch"),
        datasets_version=version("datasets"),
    )
