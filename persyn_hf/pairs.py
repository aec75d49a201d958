"""From scores to what the router learns from (paper §2.2, Eq. 3-4; Table 5).

- `router_rows`: one row per prompt with its teachers' rewards as a vector in the router's teacher order
  (NaN where a teacher has no usable score). The router derives its Bradley-Terry pairs from this vector,
  one backbone pass per prompt serving all of them.
- `pairwise_export`: the same information as explicit pairs, C(n, 2) per prompt with n rewarded teachers
  (so N prompts with every teacher scored give N·C(n, 2) pairs), for inspection and publication.
"""

from __future__ import annotations

import itertools
import logging
import math

from datasets import Dataset

from persyn_hf.rewards import require_columns

logger = logging.getLogger(__name__)


def prompt_text(row: dict) -> str:
    """The prompt of a prompts-dataset row: its `prompt`, or the last user message of its `messages`."""
    if row.get("prompt") is not None:
        return row["prompt"]
    user_turns = [message["content"] for message in row.get("messages") or [] if message["role"] == "user"]
    if not user_turns:
        raise ValueError(f"Prompt {row.get('prompt_id')!r} has neither a `prompt` nor a user message in `messages`.")
    return user_turns[-1]


def prompt_columns(prompts: Dataset) -> list[str]:
    """The columns a prompts dataset needs: `prompt_id` and one of `prompt` / `messages`."""
    text_column = "prompt" if "prompt" in prompts.column_names else "messages"
    require_columns(prompts, ["prompt_id", text_column], "prompts")
    return ["prompt_id", text_column]


def reward_table(scores: Dataset, teachers: list[str], column: str = "reward") -> dict[str, list[float]]:
    """`{prompt_id: [score of each teacher in `teachers` order]}`, NaN where a teacher has no finite score.

    Raises on scores for a teacher not in `teachers` and on a (prompt, teacher) pair scored twice; non-finite
    scores are treated as missing and counted in a warning.
    """
    require_columns(scores, ["prompt_id", "teacher", column], "scores")
    index = {name: i for i, name in enumerate(teachers)}
    unknown = sorted(set(scores["teacher"]) - set(index))
    if unknown:
        raise ValueError(
            f"The scores name teacher(s) {unknown} that are not in the teacher list {teachers}: add them to the "
            "teacher list (the router's teacher order) or drop their rows from the scores."
        )
    table: dict[str, list[float]] = {}
    non_finite = 0
    for prompt_id, teacher, value in zip(scores["prompt_id"], scores["teacher"], scores[column]):
        row = table.setdefault(prompt_id, [math.nan] * len(teachers))
        if not math.isnan(row[index[teacher]]):
            raise ValueError(f"The scores hold more than one row for prompt {prompt_id!r} and teacher {teacher!r}.")
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
    prompt_columns(prompts)
    table = reward_table(scores, teachers)
    texts = {row["prompt_id"]: prompt_text(row) for row in prompts}
    unknown = [prompt_id for prompt_id in table if prompt_id not in texts]
    if unknown:
        raise ValueError(
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
        raise ValueError("No prompt has a finite reward: there is nothing to train the router on.")
    return Dataset.from_dict(rows)


def pairwise_export(rows: Dataset, teachers: list[str]) -> Dataset:
    """Explicit Bradley-Terry pairs from router rows: `prompt_id`, `teacher_a`, `teacher_b`, `label`.

    For every prompt and every pair a < b (in `teachers` order) of teachers that both have a finite reward,
    `label` is 1 if `b` has the higher reward, else 0 (ties give 0).
    """
    require_columns(rows, ["prompt_id", "teacher_rewards"], "router rows")
    pairs = {"prompt_id": [], "teacher_a": [], "teacher_b": [], "label": []}
    for prompt_id, rewards in zip(rows["prompt_id"], rows["teacher_rewards"]):
        rewarded = [i for i, value in enumerate(rewards) if not math.isnan(value)]
        for a, b in itertools.combinations(rewarded, 2):
            pairs["prompt_id"].append(prompt_id)
            pairs["teacher_a"].append(teachers[a])
            pairs["teacher_b"].append(teachers[b])
            pairs["label"].append(int(rewards[b] > rewards[a]))
    return Dataset.from_dict(pairs)
