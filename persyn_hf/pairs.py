"""From scores to what the router learns from (paper §2.2, Eq. 3-4; Table 5).

- `router_rows`: one row per prompt with its teachers' rewards as a vector in the router's teacher order
  (NaN where a teacher has no usable score). The router derives its Bradley-Terry pairs from this vector,
  one backbone pass per prompt serving all of them.
- `pairwise_export`: the same information as explicit pairs, at most C(n, 2) per prompt with n rewarded teachers
  (pairs with equal rewards are left out, so N prompts with every teacher scored give at most N·C(n, 2) pairs), for
  inspection and publication.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from persyn_hf.contracts import CONTRACTS, prompt_text, validate
from persyn_hf.errors import DataError

if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.getLogger(__name__)


def reward_table(scores: Dataset, teachers: list[str], column: str = "reward") -> dict[str, list[float]]:
    """`{prompt_id: [score of each teacher in `teachers` order]}`, NaN where a teacher has no finite score.

    Raises on scores for a teacher not in `teachers` and on a (prompt, teacher) pair scored twice; non-finite
    scores are treated as missing and counted in a warning.
    """
    validate(scores, "scores", required=("prompt_id", "teacher", column))
    index = {name: i for i, name in enumerate(teachers)}
    unknown = sorted(set(scores["teacher"]) - set(index))
    if unknown:
        raise DataError(
            f"The scores name teacher(s) {unknown} that are not in the teacher list {teachers}: add them to the "
            "teacher list (the router's teacher order) or drop their rows from the scores."
        )
    table: dict[str, list[float]] = {}
    non_finite = 0
    for prompt_id, teacher, value in zip(scores["prompt_id"], scores["teacher"], scores[column]):
        row = table.setdefault(prompt_id, [math.nan] * len(teachers))
        if value is None or not math.isfinite(value):
            non_finite += 1
            continue
        row[index[teacher]] = float(value)
    if non_finite:
        logger.warning(f"{non_finite} of {len(scores)} `{column}` values are missing, NaN or infinite: left out.")
    return table


def router_rows(scores: Dataset, prompts: Dataset, teachers: list[str]) -> Dataset:
    """Router training rows: `prompt_id`, `prompt` (str) and `teacher_rewards` (floats in `teachers` order).

    One row per prompt that has at least one finite reward, in the order of `prompts`; NaN marks a teacher
    without a score for that prompt. Every scored prompt must be in `prompts`.
    """
    validate(prompts, "prompts")
    table = reward_table(scores, teachers)
    texts = {row["prompt_id"]: prompt_text(row) for row in prompts}
    unknown = [prompt_id for prompt_id in table if prompt_id not in texts]
    if unknown:
        raise DataError(
            f"{len(unknown)} scored prompt_id(s) are not in the prompts dataset (first: {unknown[:3]}): pass the "
            "prompts dataset the generations were made from."
        )
    rows = {"prompt_id": [], "prompt": [], "teacher_rewards": []}
    unrewarded = 0
    for prompt_id, text in texts.items():
        rewards = table.get(prompt_id)
        if rewards is None:
            continue
        if all(math.isnan(value) for value in rewards):
            unrewarded += 1
            continue
        rows["prompt_id"].append(prompt_id)
        rows["prompt"].append(text)
        rows["teacher_rewards"].append(rewards)
    if unrewarded:
        logger.warning(f"{unrewarded} prompt(s) have no finite reward from any teacher: left out of the router rows.")
    if not rows["prompt_id"]:
        raise DataError("No prompt has a finite reward: there is nothing to train the router on.")
    return _dataset(rows, "router_rows", prompts)


def pairwise_export(rows: Dataset, teachers: list[str]) -> Dataset:
    """Explicit Bradley-Terry pairs from router rows: `prompt_id`, `teacher_a`, `teacher_b`, `label`.

    Exactly the pairs the router trains on (`persyn_hf.router.reward_pairs`): for every prompt and every pair
    a < b (in `teachers` order) of teachers that both have a finite reward, `label` is 1 if `b` has the higher
    reward, else 0; ties are left out, as they say nothing about which teacher is better.
    """
    import torch

    from persyn_hf.router import reward_pairs

    validate(rows, "router_rows", required=("prompt_id", "teacher_rewards"))
    rewards = torch.tensor(rows["teacher_rewards"], dtype=torch.float64).reshape(len(rows), len(teachers))
    index, labels = reward_pairs(rewards)
    prompt_ids = rows["prompt_id"]
    pairs = {
        "prompt_id": [prompt_ids[row] for row in index[:, 0].tolist()],
        "teacher_a": [teachers[a] for a in index[:, 1].tolist()],
        "teacher_b": [teachers[b] for b in index[:, 2].tolist()],
        "label": [int(label) for label in labels.tolist()],
    }
    return _dataset(pairs, "pairs", rows)


def _dataset(columns: dict, artifact: str, source: Dataset) -> Dataset:
    """`columns` as a dataset of the `artifact` contract, with the `prompt_id` type of `source`."""
    from datasets import Dataset

    features = CONTRACTS[artifact].features(prompt_id=source.features["prompt_id"], columns=tuple(columns))
    return Dataset.from_dict(columns, features=features)
