"""Rewards of a teacher response (paper §2.1): its quality, and the mix with learnability (Eq. 2).

- Quality scorers live in `QUALITY_SCORERS` and are chosen by name: `reward_model`, `math_verify`, `precomputed`.
- `mix_rewards` normalises quality and learnability across the teachers of each prompt and mixes them,
  r = (1-α)·r_q + α·r_l. Learnability itself (Eq. 1) is `persyn_hf.learnability`.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import numpy as np

from persyn_hf.configs import check_choice
from persyn_hf.contracts import completion_messages
from persyn_hf.errors import ConfigError, DataError
from persyn_hf.learnability import context_length, length_buckets, load_for_scoring, longer_than
from persyn_hf.verify import CORRECT, INCORRECT, TIMEOUT, UNPARSEABLE_GOLD, check_answer

if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.getLogger(__name__)

NORMALIZATIONS = ("minmax", "zscore")


# Quality --------------------------------------------------------------------------------------------------------


def encode_conversations(tokenizer, messages: list[list[dict]], responses: list[str], max_length: int) -> list:
    """Each conversation (prompt `messages` + the assistant `response`) rendered with the reward model's own chat
    template and tokenised as rendered (the template writes the special tokens, so none are added): its input ids,
    or `None` when it is longer than `max_length` tokens (a long text is found so without tokenising it whole)."""
    encoded = []
    for prompt, response in zip(messages, responses, strict=True):
        texts = [response, *(message.get("content") for message in prompt)]
        if any(isinstance(text, str) and longer_than(tokenizer, text, max_length) for text in texts):
            encoded.append(None)
            continue
        text = tokenizer.apply_chat_template([*prompt, *completion_messages(response)], tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        encoded.append(ids if len(ids) <= max_length else None)
    return encoded


# How to fix a reward model's pad token. The eos token, a common choice, is one that most chat templates write.
PAD_TOKEN_FIX = (
    "give the reward model's tokenizer a pad token its chat template never writes (`pad_token` in its "
    "tokenizer_config.json: a token of its vocabulary, not the eos token)"
)


def check_pad_token(model, tokenizer) -> int:
    """The pad token id shared by the reward model's tokenizer and its config (the config's is set when missing):
    the sequence-classification head pools the last token that is not the config's `pad_token_id`."""
    config = model.config.get_text_config()
    if tokenizer.pad_token_id is None:
        raise ConfigError(f"The reward model's tokenizer has no `pad_token`, needed to batch: {PAD_TOKEN_FIX}.")
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id
    elif config.pad_token_id != tokenizer.pad_token_id:
        raise ConfigError(
            f"The reward model's config has `pad_token_id` {config.pad_token_id} but its tokenizer's pad token "
            f"{tokenizer.pad_token!r} has id {tokenizer.pad_token_id}, and the model scores the last token that is "
            f"not {config.pad_token_id}: set `pad_token_id` to {tokenizer.pad_token_id} in the reward model's "
            "config.json (or make its tokenizer's pad token the config's)."
        )
    return tokenizer.pad_token_id


def reward_model_quality(
    model,
    tokenizer,
    messages: list[list[dict]],
    responses: list[str],
    batch_size: int = 8,
    max_tokens_per_batch: int = 16384,
    show_progress: bool = True,
    max_length: int | None = None,
) -> list[float]:
    """Quality as the logit of a reward model (`AutoModelForSequenceClassification`, `num_labels=1`).

    Each conversation is encoded by `encode_conversations` and scored in length-bucketed batches; the model pools
    its last token that is not its config's `pad_token_id` (set to the tokenizer's pad token when missing), so that
    token must be the tokenizer's pad token and appear in no conversation. A conversation longer than `max_length`
    tokens (defaults to the reward model's context) gets NaN, counted in a warning, before any forward pass.
    """
    import torch
    from tqdm.auto import tqdm

    pad_id = check_pad_token(model, tokenizer)
    max_length = max_length or context_length(model.config, "reward_model_max_length", "reward model")
    encoded = encode_conversations(tokenizer, messages, responses, max_length)
    padded_rows = [i for i, ids in enumerate(encoded) if ids is not None and pad_id in ids]
    if padded_rows:
        raise ConfigError(
            f"The reward model's pad token {tokenizer.pad_token!r} (id {pad_id}) appears in {len(padded_rows)} "
            f"conversations (first: row {padded_rows[0]}), and the model scores the last token that is not padding: "
            f"{PAD_TOKEN_FIX}."
        )
    scores = [math.nan] * len(encoded)
    scored = [i for i, ids in enumerate(encoded) if ids is not None]
    if len(scored) < len(encoded):
        logger.warning(
            f"reward model: {len(encoded) - len(scored)} of {len(encoded)} conversations are longer than "
            f"{max_length} tokens (`reward_model_max_length`): no quality (NaN)."
        )
    model.eval()
    batches = length_buckets([len(encoded[i]) for i in scored], batch_size, max_tokens_per_batch)
    for batch in tqdm(batches, desc="Quality (reward model)", disable=not show_progress):
        rows = [scored[j] for j in batch]
        padded = tokenizer.pad({"input_ids": [encoded[i] for i in rows]}, padding=True, return_tensors="pt")
        with torch.inference_mode():
            logits = model(**padded.to(model.device)).logits[:, 0].float().cpu()
        for i, value in zip(rows, logits.tolist()):
            scores[i] = value
    return scores


def math_verify_quality(answers: list[str | None], responses: list[str], timeout_s: float = 5.0, show_progress=True):
    """Quality as math-verify correctness: 1.0 if correct, 0.0 if not or if the check timed out.

    A missing or unparseable gold answer gives NaN (no score, never a free 1.0). Time-outs and unscored answers
    are counted in a warning.
    """
    from tqdm.auto import tqdm

    counts = dict.fromkeys((CORRECT, INCORRECT, TIMEOUT, UNPARSEABLE_GOLD), 0)
    scores = []
    pairs = zip(answers, responses)
    for gold, response in tqdm(pairs, total=len(responses), desc="Quality (math-verify)", disable=not show_progress):
        verdict = UNPARSEABLE_GOLD if gold is None else check_answer(gold, response, timeout_s)
        counts[verdict] += 1
        scores.append(math.nan if verdict == UNPARSEABLE_GOLD else float(verdict == CORRECT))
    if counts[TIMEOUT] or counts[UNPARSEABLE_GOLD]:
        logger.warning(
            f"math-verify: {counts[TIMEOUT]} of {len(scores)} checks timed out after {timeout_s} s (scored 0.0); "
            f"{counts[UNPARSEABLE_GOLD]} responses have a missing or unparseable gold answer (no score)."
        )
    return scores


def _reward_model_scorer(rows: Dataset, config, device="cpu", show_progress=True) -> list[float]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = load_for_scoring(AutoModelForSequenceClassification, config.reward_model, config.dtype, device)
    tokenizer = AutoTokenizer.from_pretrained(config.reward_model)
    if model.config.num_labels != 1:
        raise ConfigError(
            f"The reward model {config.reward_model!r} must have `num_labels=1`, got {model.config.num_labels}."
        )
    return reward_model_quality(
        model,
        tokenizer,
        rows["messages"],
        rows["response"],
        config.batch_size,
        config.max_tokens_per_batch,
        show_progress,
        config.reward_model_max_length,
    )


def _math_verify_scorer(rows: Dataset, config, device="cpu", show_progress=True) -> list[float]:
    return math_verify_quality(rows["answer"], rows["response"], config.math_verify_timeout_s, show_progress)


def _precomputed_scorer(rows: Dataset, config, device="cpu", show_progress=True) -> list[float]:
    return [math.nan if value is None else float(value) for value in rows[config.quality_column]]


# name -> scorer(rows, config, device, show_progress) -> one quality per row. `rows` hold the generations with
# their prompt as chat `messages` (and the gold `answer` when the prompts have one), checked by
# `check_scorer_inputs` first (the score stage does); `config` is a `ScoringConfig`.
QUALITY_SCORERS = {
    "reward_model": _reward_model_scorer,
    "math_verify": _math_verify_scorer,
    "precomputed": _precomputed_scorer,
}


# Normalise and mix (Eq. 2) --------------------------------------------------------------------------------------


def normalize_per_prompt(prompt_ids: list[str], values: list[float], method: str = "minmax") -> np.ndarray:
    """Normalise `values` across the teachers of each prompt (rows sharing a `prompt_id`).

    `minmax` maps each prompt's values to [0, 1]; `zscore` to mean 0 and (population) standard deviation 1.
    Non-finite values stay NaN and are left out of the statistics. When all finite values of a prompt are
    equal (or there is only one), they carry no ranking information and all get the middle value: 0.5 for
    `minmax`, 0.0 for `zscore`.
    """
    check_choice("normalization", method, NORMALIZATIONS)
    values = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
    values[~np.isfinite(values)] = math.nan
    normalized = np.full_like(values, math.nan)
    groups: dict[str, list[int]] = {}
    for i, prompt_id in enumerate(prompt_ids):
        groups.setdefault(prompt_id, []).append(i)
    for rows in groups.values():
        group = values[rows]
        finite = group[np.isfinite(group)]
        if finite.size == 0:
            continue
        spread = finite.max() - finite.min() if method == "minmax" else finite.std()
        if spread == 0:
            normalized[rows] = np.where(np.isfinite(group), 0.5 if method == "minmax" else 0.0, math.nan)
        elif method == "minmax":
            normalized[rows] = (group - finite.min()) / spread
        else:
            normalized[rows] = (group - finite.mean()) / spread
    return normalized


def check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"`alpha` must be in [0, 1], got {alpha}")


def mix_rewards(scores: Dataset, alpha: float = 0.4, normalization: str = "minmax") -> Dataset:
    """Eq. 2: `reward` = (1-α)·quality + α·learnability, both normalised across the teachers of each prompt.

    Returns `scores` with the `reward` column set. A row whose needed quality or learnability is missing, NaN or
    infinite gets a NaN reward (counted in a warning): downstream stages treat it as a teacher without a score.
    α = 0 uses quality alone ("w/o learnability"), α = 1 learnability alone ("w/o quality").
    """
    check_alpha(alpha)
    missing = [column for column in ("prompt_id", "quality", "learnability") if column not in scores.column_names]
    if missing:
        raise DataError(f"The scores lack column(s) {missing}: they come from `persyn-hf score`.")
    prompt_ids = scores["prompt_id"]
    reward = np.zeros(len(scores))
    for column, weight in (("quality", 1.0 - alpha), ("learnability", alpha)):
        if weight > 0:
            reward = reward + weight * normalize_per_prompt(prompt_ids, scores[column], normalization)
    missing = int(np.isnan(reward).sum())
    if missing:
        logger.warning(f"{missing} of {len(scores)} responses have no finite quality or learnability: reward NaN.")
    if "reward" in scores.column_names:
        scores = scores.remove_columns("reward")
    return scores.add_column("reward", reward.tolist())


def check_scorer_inputs(rows: Dataset, config) -> None:
    """Raise a `DataError` if the scored rows lack a column the configured quality scorer reads."""
    if config.quality_scorer == "math_verify" and "answer" not in rows.column_names:
        raise DataError(
            "The prompts dataset lacks column(s) ['answer']: `quality_scorer: math_verify` compares each response "
            "with a gold answer; use a math prompt set with gold answers (e.g. `persyn-hf build persyn_math`) or "
            "another `quality_scorer`."
        )
    if config.quality_scorer == "precomputed" and config.quality_column not in rows.column_names:
        raise DataError(
            f"`quality_column` {config.quality_column!r} is not a column of the generations; "
            f"they have {rows.column_names}."
        )
