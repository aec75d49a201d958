"""Rewards for PerSyn (paper §2.1): response quality, student learnability (Eq. 1) and their mix (Eq. 2).

- Quality scorers live in `QUALITY_SCORERS` and are chosen by name: `reward_model`, `math_verify`, `precomputed`.
- `learnability_scores` is Eq. 1 (`persyn_hf.learnability`): the student's mean log-probability of the response
  tokens given the prompt rendered with the student's chat template, on exactly the tokens SFT trains on.
- `mix_rewards` normalises both across the teachers of each prompt and mixes them, r = (1-α)·r_q + α·r_l.
"""

from __future__ import annotations

import json
import logging
import math
import select
import subprocess
import sys
import threading
from dataclasses import dataclass, field

import numpy as np
from datasets import Dataset

from persyn_hf import learnability
from persyn_hf.learnability import length_buckets

logger = logging.getLogger(__name__)

# The stage that writes each column, so that a missing column can be traced back to where it comes from.
PRODUCED_BY = {
    "prompt_id": "the prompts dataset (`persyn-hf build` or your own prompt set)",
    "prompt": "the prompts dataset (`persyn-hf build` or your own prompt set)",
    "messages": "the prompts dataset (`persyn-hf build` or your own prompt set)",
    "answer": "the prompts dataset (a math prompt set with gold answers, e.g. `persyn-hf build persyn_math`)",
    "teacher": "`persyn-hf generate`",
    "response": "`persyn-hf generate`",
    "quality": "`persyn-hf score`",
    "learnability": "`persyn-hf score`",
    "reward": "`persyn-hf score`",
}


def require_columns(dataset: Dataset, columns: list[str], artifact: str) -> None:
    """Raise a `ValueError` naming every column of `columns` that `dataset` lacks and the stage that writes it."""
    missing = [column for column in columns if column not in dataset.column_names]
    if missing:
        sources = "; ".join(
            f"`{column}` comes from {PRODUCED_BY.get(column, 'an earlier stage')}" for column in missing
        )
        raise ValueError(
            f"The {artifact} dataset lacks column(s) {missing} (it has {dataset.column_names}): {sources}."
        )


# Math answers ---------------------------------------------------------------------------------------------------

CORRECT, INCORRECT, TIMEOUT, UNPARSEABLE_GOLD = "correct", "incorrect", "timeout", "unparseable_gold"
WORKER_START_TIMEOUT_S = 120.0

# The program a math-verify worker runs: one JSON `[gold, response]` per stdin line, one JSON verdict per stdout
# line. math-verify's own (signal-based) time-outs are off: the parent enforces the time limit by killing it.
_WORKER_PROGRAM = f"""
import json, logging, sys
from math_verify import parse, verify
logging.getLogger("math_verify").setLevel(logging.ERROR)
out, sys.stdout = sys.stdout, sys.stderr
out.write('"ready"\\n'); out.flush()
for line in sys.stdin:
    gold, response = json.loads(line)
    try:
        gold_parsed = parse(gold, parsing_timeout=None)
        if not gold_parsed:
            verdict = {UNPARSEABLE_GOLD!r}
        elif verify(gold_parsed, parse(response, parsing_timeout=None), timeout_seconds=None):
            verdict = {CORRECT!r}
        else:
            verdict = {INCORRECT!r}
    except Exception:  # a crash inside math-verify is an answer that could not be checked
        verdict = {INCORRECT!r}
    out.write(json.dumps(verdict) + "\\n"); out.flush()
"""


class _MathVerifyWorkers:
    """Worker processes that run math-verify, one check at a time each.

    math-verify's own time-out relies on `SIGALRM`, which works only in the main thread and cannot interrupt a
    long computation inside C code (e.g. sympy evaluating `9^{9^{9^9}} + 1`). A process can always be killed, so
    each check runs in a worker process: a worker that overruns its time is killed (and replaced on the next
    check), idle workers are reused, and any number of threads may check at once, each borrowing its own worker.
    Workers are fresh interpreters (not forks), so they are safe to start from a threaded parent.
    """

    def __init__(self):
        self._idle: list[subprocess.Popen] = []
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen:
        worker = subprocess.Popen(
            [sys.executable, "-c", _WORKER_PROGRAM],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        if self._reply(worker, WORKER_START_TIMEOUT_S) != "ready":
            raise RuntimeError(f"A math-verify worker did not start within {WORKER_START_TIMEOUT_S} s.")
        return worker

    @staticmethod
    def _reply(worker: subprocess.Popen, timeout_s: float) -> str | None:
        """The worker's next answer, or `None` (and the worker killed) if none comes within `timeout_s`."""
        ready, _, _ = select.select([worker.stdout], [], [], timeout_s)
        line = worker.stdout.readline() if ready else ""
        if not line:
            worker.kill()
            worker.wait()
            return None
        return json.loads(line)

    def check(self, gold: str, response: str, timeout_s: float) -> str:
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        worker = worker or self._start()
        worker.stdin.write(json.dumps([gold, response]) + "\n")
        worker.stdin.flush()
        verdict = self._reply(worker, timeout_s)
        if verdict is None:
            return TIMEOUT
        with self._lock:
            self._idle.append(worker)
        return verdict


_WORKERS: _MathVerifyWorkers | None = None
_WORKERS_LOCK = threading.Lock()


def check_answer(gold: str, response: str, timeout_s: float = 5.0) -> str:
    """math-verify's verdict on the final answer of `response` against `gold`, within `timeout_s` seconds.

    Returns one of `"correct"`, `"incorrect"`, `"timeout"` (the check ran out of time and was killed) or
    `"unparseable_gold"` (math-verify finds no answer in `gold`). Safe to call from any thread.
    """
    global _WORKERS
    with _WORKERS_LOCK:
        if _WORKERS is None:
            _WORKERS = _MathVerifyWorkers()
    return _WORKERS.check(str(gold), str(response), timeout_s)


def verify_answer(gold: str, response: str, timeout_s: float = 5.0) -> bool | None:
    """Whether the final answer of `response` matches `gold` according to math-verify.

    `None` when `gold` does not parse (there is nothing to compare with: never a free `True`); a check that takes
    longer than `timeout_s` seconds is killed and counts as not correct. Safe to call from worker threads.
    """
    verdict = check_answer(gold, response, timeout_s)
    return None if verdict == UNPARSEABLE_GOLD else verdict == CORRECT


# Quality --------------------------------------------------------------------------------------------------------


def _conversation(messages: list[dict], response: str) -> list[dict]:
    return [*messages, {"role": "assistant", "content": response}]


def reward_model_quality(
    model,
    tokenizer,
    messages: list[list[dict]],
    responses: list[str],
    batch_size: int = 8,
    max_tokens_per_batch: int = 16384,
    show_progress: bool = True,
) -> list[float]:
    """Quality as the logit of a reward model (`AutoModelForSequenceClassification`, `num_labels=1`).

    Each conversation (prompt `messages` + the assistant `response`) is rendered with the reward model's own chat
    template and scored in length-bucketed batches; the model pools its last non-padding token.
    """
    import torch
    from tqdm.auto import tqdm

    if tokenizer.pad_token_id is None:
        raise ValueError("The reward model's tokenizer has no `pad_token`: set one (e.g. the eos token) to batch.")
    texts = [tokenizer.apply_chat_template(_conversation(m, r), tokenize=False) for m, r in zip(messages, responses)]
    encoded = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    scores = [math.nan] * len(encoded)
    model.eval()
    batches = length_buckets([len(ids) for ids in encoded], batch_size, max_tokens_per_batch)
    for batch in tqdm(batches, desc="Quality (reward model)", disable=not show_progress):
        padded = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, padding=True, return_tensors="pt")
        with torch.inference_mode():
            logits = model(**padded.to(model.device)).logits[:, 0].float().cpu()
        for i, value in zip(batch, logits.tolist()):
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


# Learnability (Eq. 1) -------------------------------------------------------------------------------------------


def learnability_scores(
    model,
    tokenizer,
    messages: list[list[dict]],
    responses: list[str],
    batch_size: int = 16,
    max_tokens_per_batch: int = 16384,
    show_progress: bool = True,
) -> list[float]:
    """Eq. 1 with the defaults of `persyn_hf.learnability.learnability_scores` (exactly SFT's tokens, the student's
    context as length bound); NaN for unscorable responses, whose reasons are logged."""
    return learnability.learnability_scores(
        model,
        tokenizer,
        messages,
        responses,
        batch_size=batch_size,
        max_tokens_per_batch=max_tokens_per_batch,
        show_progress=show_progress,
    ).scores


# Normalise and mix (Eq. 2) --------------------------------------------------------------------------------------

NORMALIZATIONS = ("minmax", "zscore")


def normalize_per_prompt(prompt_ids: list[str], values: list[float], method: str = "minmax") -> np.ndarray:
    """Normalise `values` across the teachers of each prompt (rows sharing a `prompt_id`).

    `minmax` maps each prompt's values to [0, 1]; `zscore` to mean 0 and (population) standard deviation 1.
    Non-finite values stay NaN and are left out of the statistics. When all finite values of a prompt are
    equal (or there is only one), they carry no ranking information and all get the middle value: 0.5 for
    `minmax`, 0.0 for `zscore`.
    """
    if method not in NORMALIZATIONS:
        raise ValueError(f"`normalization` must be one of {list(NORMALIZATIONS)}, got {method!r}")
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
        raise ValueError(f"`alpha` must be in [0, 1], got {alpha}")


def mix_rewards(scores: Dataset, alpha: float = 0.4, normalization: str = "minmax") -> Dataset:
    """Eq. 2: `reward` = (1-α)·quality + α·learnability, both normalised across the teachers of each prompt.

    Returns `scores` with the `reward` column set. A row whose needed quality or learnability is missing, NaN or
    infinite gets a NaN reward (counted in a warning): downstream stages treat it as a teacher without a score.
    α = 0 uses quality alone ("w/o learnability"), α = 1 learnability alone ("w/o quality").
    """
    check_alpha(alpha)
    require_columns(scores, ["prompt_id", "quality", "learnability"], "scores")
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


# Scorers chosen by name -----------------------------------------------------------------------------------------


@dataclass
class ScoringConfig:
    """How responses are scored (paper §2.1).

    Parameters:
        quality_scorer (`str`, *optional*, defaults to `"reward_model"`):
            Name of the quality scorer in `QUALITY_SCORERS`: `reward_model`, `math_verify` or `precomputed`.
        reward_model (`str` or `None`, *optional*, defaults to `None`):
            Path or Hub id of an `AutoModelForSequenceClassification` reward model, for `reward_model`.
        quality_column (`str` or `None`, *optional*, defaults to `None`):
            Column of the generations that already holds the quality, for `precomputed`.
        math_verify_timeout_s (`float`, *optional*, defaults to `5.0`):
            Time limit of one math-verify check, for `math_verify`; a check that overruns counts as not correct.
        alpha (`float`, *optional*, defaults to `0.4`):
            Weight of learnability in Eq. 2, r = (1-α)·quality + α·learnability. 0 and 1 are the paper's
            "w/o learnability" and "w/o quality" ablations.
        normalization (`str`, *optional*, defaults to `"minmax"`):
            Per-prompt normalisation across teachers before mixing: `minmax` or `zscore`.
        batch_size (`int`, *optional*, defaults to `16`):
            Most responses in one forward pass of the student or the reward model.
        max_tokens_per_batch (`int`, *optional*, defaults to `16384`):
            Most padded tokens in one forward pass; batches are length-bucketed so that padding stays small.
        dtype (`str`, *optional*, defaults to `"auto"`):
            Dtype the student and reward model are loaded in: `auto`, `float32`, `bfloat16` or `float16`.
    """

    quality_scorer: str = field(
        default="reward_model", metadata={"help": "Quality scorer: reward_model, math_verify or precomputed."}
    )
    reward_model: str | None = field(
        default=None, metadata={"help": "Path or Hub id of the reward model (quality_scorer=reward_model)."}
    )
    quality_column: str | None = field(
        default=None, metadata={"help": "Generations column holding the quality (quality_scorer=precomputed)."}
    )
    math_verify_timeout_s: float = field(
        default=5.0, metadata={"help": "Time limit of one math-verify check; overrunning counts as not correct."}
    )
    alpha: float = field(default=0.4, metadata={"help": "Weight of learnability in Eq. 2, in [0, 1]."})
    normalization: str = field(
        default="minmax", metadata={"help": "Per-prompt normalisation across teachers: minmax or zscore."}
    )
    batch_size: int = field(default=16, metadata={"help": "Most responses in one forward pass."})
    max_tokens_per_batch: int = field(default=16384, metadata={"help": "Most padded tokens in one forward pass."})
    dtype: str = field(default="auto", metadata={"help": "Model dtype: auto, float32, bfloat16 or float16."})

    def __post_init__(self):
        check_alpha(self.alpha)
        if self.quality_scorer not in QUALITY_SCORERS:
            raise ValueError(
                f"Unknown `quality_scorer` {self.quality_scorer!r}; choose one of {list(QUALITY_SCORERS)}"
            )
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"`normalization` must be one of {list(NORMALIZATIONS)}, got {self.normalization!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"`dtype` must be one of {list(DTYPES)}, got {self.dtype!r}")
        if self.quality_scorer == "reward_model" and not self.reward_model:
            raise ValueError("`quality_scorer: reward_model` needs `reward_model` (a path or Hub id).")
        if self.quality_scorer == "precomputed" and not self.quality_column:
            raise ValueError("`quality_scorer: precomputed` needs `quality_column` (the column holding the quality).")


DTYPES = ("auto", "float32", "bfloat16", "float16")


def load_for_scoring(auto_class, path: str, dtype: str, device):
    """`auto_class.from_pretrained(path)` in `dtype` on `device`, in eval mode, with its tokenizer."""
    from transformers import AutoTokenizer

    model = auto_class.from_pretrained(path, dtype=dtype).to(device).eval()
    return model, AutoTokenizer.from_pretrained(path)


def _reward_model_scorer(rows: Dataset, config: ScoringConfig, device="cpu", show_progress=True) -> list[float]:
    from transformers import AutoModelForSequenceClassification

    model, tokenizer = load_for_scoring(AutoModelForSequenceClassification, config.reward_model, config.dtype, device)
    if model.config.num_labels != 1:
        raise ValueError(
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
    )


def _math_verify_scorer(rows: Dataset, config: ScoringConfig, device="cpu", show_progress=True) -> list[float]:
    require_columns(rows, ["answer"], "prompts")
    return math_verify_quality(rows["answer"], rows["response"], config.math_verify_timeout_s, show_progress)


def _precomputed_scorer(rows: Dataset, config: ScoringConfig, device="cpu", show_progress=True) -> list[float]:
    if config.quality_column not in rows.column_names:
        raise ValueError(
            f"`quality_column` {config.quality_column!r} is not a column of the generations; "
            f"they have {rows.column_names}."
        )
    return [math.nan if value is None else float(value) for value in rows[config.quality_column]]


# name -> scorer(rows, config, device, show_progress) -> one quality per row. `rows` hold the generations with
# their prompt as chat `messages` (and the gold `answer` when the prompts have one).
QUALITY_SCORERS = {
    "reward_model": _reward_model_scorer,
    "math_verify": _math_verify_scorer,
    "precomputed": _precomputed_scorer,
}
