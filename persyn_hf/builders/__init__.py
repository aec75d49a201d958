"""Dataset builders: Magpie-Zoo and PerSyn-Math parallel responses, and personalized SFT datasets.

Each builder is a module with a config dataclass and a function `run(config, ..., store=...)` that validates
everything before it writes anything, then saves (or pushes) the datasets with their card through the
`ArtifactStore` and returns a `StageResult`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from persyn_hf.errors import ArtifactNotFoundError, ConfigError, DataError, check_utf8

if TYPE_CHECKING:
    from datasets import Dataset

# Source files a builder reads, by suffix, with the `datasets` loader that reads them.
SOURCE_LOADERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv"}
TEXT_SUFFIXES = (".json", ".jsonl", ".csv")


def load_source(path: str, field_name: str = "source") -> Dataset:
    """Read a local copy of a dataset: a parquet / JSON(L) / CSV file, or a folder (e.g. a Hub snapshot)."""
    from datasets import load_dataset

    source = Path(path)
    if not source.exists():
        raise ArtifactNotFoundError(
            f"`{field_name}` {path!r} does not exist: give the path of a local copy (a parquet or JSON file, or "
            "the folder of a downloaded snapshot, e.g. from `hf download --repo-type dataset`)."
        )
    if not source.is_dir() and source.suffix not in SOURCE_LOADERS:
        raise ConfigError(f"`{field_name}` {path!r}: unknown file type; use one of {sorted(SOURCE_LOADERS)}.")
    files = sorted(source.rglob("*")) if source.is_dir() else [source]
    for file in files:
        if file.suffix in TEXT_SUFFIXES:  # arrow's JSON reader keeps bytes that are not UTF-8, to fail far later
            check_utf8(file, f"`{field_name}` file")
    if not any(file.is_file() and file.stat().st_size for file in files):
        raise DataError(f"`{field_name}` {path!r} is empty: give a copy of the dataset with its rows.")
    try:
        if source.is_dir():
            return load_dataset(str(source), split="train")
        return load_dataset(SOURCE_LOADERS[source.suffix], data_files=str(source), split="train")
    except Exception as error:  # an empty, truncated or undecodable file is the user's to fix, not a crash
        raise DataError(
            f"`{field_name}` {path!r} cannot be read as a dataset: {type(error).__name__}: {error}"
        ) from error


def check_schema(
    columns: Sequence[str], required: Sequence[str], allowed: Sequence[str], source: str, fix: str
) -> None:
    """Raise a `DataError` listing the missing and the unexpected columns of a source, with the fix."""
    missing = [column for column in required if column not in columns]
    unexpected = [column for column in columns if column not in allowed]
    if missing or unexpected:
        raise DataError(
            f"{source} does not have the expected schema: missing column(s) {missing}, unexpected column(s) "
            f"{unexpected}. {fix}"
        )


def sample_indices(total: int, size: int, seed: int, field_name: str) -> np.ndarray:
    """`size` distinct row indices out of `total`, drawn with `seed` (the same draw on every machine)."""
    if total == 0:
        raise DataError("The source dataset is empty: there is nothing to sample.")
    if not 0 < size <= total:
        raise ConfigError(f"`{field_name}` must be in [1, {total}] (the source's size), got {size}.")
    return np.random.default_rng(seed).permutation(total)[:size]


def teacher_names_in_specs(names: Sequence[str], known: Sequence[str], where: str, teachers_file: str) -> None:
    """Raise a `DataError` naming the teachers of `names` that the teacher specs do not declare."""
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise DataError(
            f"Teacher(s) {unknown} in {where} are not in the teacher specs {teachers_file!r} (which declare "
            f"{list(known)}): add them there, or use the specs the data was generated with."
        )
