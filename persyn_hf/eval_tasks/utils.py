"""The functions persyn-hf's lm-eval tasks name with `!function utils.<name>`."""

from __future__ import annotations

import logging
import os
import tempfile
from collections import Counter

import datasets

from persyn_hf.contracts import validate
from persyn_hf.errors import ArtifactNotFoundError, ConfigError
from persyn_hf.verify import CORRECT, TIMEOUT, UNPARSEABLE_GOLD, check_answer

SVAMP_DATASET = "ChilleD/SVAMP"

logger = logging.getLogger(__name__)


def load_heldout(
    heldout_dataset: str | None = None, heldout_config: str = "default", heldout_split: str = "test", **metadata
) -> datasets.DatasetDict:
    """The held-out split named by the task metadata, checked for `prompt_id`, `prompt` and `answer`."""
    if heldout_dataset is None:
        raise ConfigError(
            "The `persyn_heldout` task needs `heldout_dataset`: the held-out split's repo id in the artifact store "
            "or a local dataset folder (`persyn-hf eval --heldout_repo_id ...`)."
        )
    try:
        dataset = _load(heldout_dataset, heldout_config, heldout_split)
    except (ValueError, FileNotFoundError) as error:  # no such config or split: the recipe's to fix
        raise ArtifactNotFoundError(
            f"Cannot load config {heldout_config!r}, split {heldout_split!r} of the held-out dataset "
            f"{heldout_dataset!r}: {error} Set `heldout_config` and `heldout_split` to ones it has."
        ) from error
    validate(dataset, "heldout", source=repr(heldout_dataset))
    return datasets.DatasetDict({"test": dataset})


def _load(path: str, config: str, split: str) -> datasets.Dataset:
    if not os.path.isdir(path):
        return datasets.load_dataset(path, config, split=split)
    # `datasets` keys its cache of a local folder by the folder's name, not its path or contents: a split rewritten in
    # place, or another store's artifact of the same name, would load stale. A local split is read afresh into memory
    # through a throwaway cache.
    with tempfile.TemporaryDirectory() as cache_dir:
        return datasets.load_dataset(path, config, split=split, cache_dir=cache_dir, keep_in_memory=True)


def load_svamp(**metadata) -> datasets.DatasetDict:
    """All 1,000 SVAMP problems as `prompt_id`, `prompt` (body and question) and `answer`."""
    splits = datasets.load_dataset(SVAMP_DATASET)
    problems = datasets.concatenate_datasets([splits["train"], splits["test"]])
    return datasets.DatasetDict({"test": problems.map(_svamp_doc, remove_columns=problems.column_names)})


def _svamp_doc(row: dict) -> dict:
    answer = float(row["Answer"])
    return {
        "prompt_id": str(row["ID"]),
        "prompt": f"{row['Body'].strip()} {row['Question'].strip()}",
        "answer": str(int(answer)) if answer.is_integer() else str(answer),
    }


def math_verdict(doc: dict, results: list[str]) -> dict:
    """math-verify's verdict on one problem (`correct`, `incorrect`, `timeout` or `unparseable_gold`): kept per
    problem in lm-eval's logged samples, counted by `math_verify_accuracy`."""
    return {"accuracy": check_answer(doc["answer"], results[0])}


def math_verify_accuracy(verdicts: list[str]) -> float:
    """Share of responses math-verify finds equal to their gold answer; time-outs and unparseable gold answers
    count as wrong, and are counted in a warning."""
    counts = Counter(verdicts)
    if counts[TIMEOUT] or counts[UNPARSEABLE_GOLD]:
        logger.warning(
            "math-verify: of %d answers, %d checks timed out and %d gold answers did not parse; all counted wrong.",
            len(verdicts),
            counts[TIMEOUT],
            counts[UNPARSEABLE_GOLD],
        )
    return counts[CORRECT] / len(verdicts)
