"""The data contracts between stages (DESIGN §2): what each artifact holds, and the one check every stage runs.

| artifact | one row is | key | written by |
|---|---|---|---|
| `prompts` | a prompt | `prompt_id` | you, or `persyn-hf build` |
| `generations` | a teacher's response to a prompt | `prompt_id`, `teacher` | `persyn-hf generate` |
| `scores` | the rewards of a response | `prompt_id`, `teacher` | `persyn-hf score` |
| `router_rows` | a prompt and its teachers' rewards | `prompt_id` | `persyn-hf train-router` |
| `pairs` | a comparable teacher pair of a prompt | `prompt_id`, `teacher_a`, `teacher_b` | `persyn-hf train-router` |
| `assignments` | a prompt and its teacher | `prompt_id` | `persyn-hf route`, `persyn-hf select` |
| `sft` | a training example with its provenance | `prompt_id` | `persyn-hf build personalized` |
| `heldout` | an evaluation problem | `prompt_id` | you, or the demo world |

A stage checks every dataset it reads with `validate` before it loads a model or sends a request, and writes its
output with `Contract.features`, so the next stage finds what it expects. Extra columns are allowed everywhere.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from persyn_hf.errors import DataError

if TYPE_CHECKING:
    from datasets import Dataset, Features


@dataclass
class StageResult:
    """What a stage's `run` returns: what it made (a dataset, a model, a results dict), where it saved it, and a
    summary of the run (counts, metrics, costs) that the CLI prints and the demo reads."""

    artifact: Any
    location: str
    summary: dict = field(default_factory=dict)


# Column types: a `datasets` value type, a list of one (`float64[]`), chat `messages`, or `id` (the prompts' own
# `prompt_id` type: text or an integer).
MESSAGES, ID = "messages", "id"
# What each type accepts, as the kind of a `datasets` feature (see `_kind`).
ACCEPTED_KINDS = {
    "string": {"text"},
    ID: {"text", "integer"},
    "float64": {"float", "integer"},
    "int64": {"integer"},
    "int32": {"integer"},
    "bool": {"bool"},
    "float64[]": {"list"},
    MESSAGES: {"list"},
}
KIND_NAMES = {"text": "text", "integer": "integers", "float": "numbers", "bool": "booleans", "list": "lists"}


@dataclass(frozen=True)
class Contract:
    """One artifact: its columns and their types (in the order stages write them), the required ones, its key,
    and the stage that writes it."""

    name: str
    columns: dict[str, str]
    required: tuple[str, ...]
    key: tuple[str, ...]
    produced_by: str
    one_of: tuple[str, ...] = ()

    def features(self, prompt_id=None, columns: tuple[str, ...] | None = None) -> Features:
        """The `datasets.Features` of the artifact (all its columns, or `columns`); `prompt_id` keeps the prompts'
        own id type when given."""
        from datasets import Features, List, Value

        def feature(kind: str):
            if kind == ID:
                return prompt_id if prompt_id is not None else Value("string")
            if kind == MESSAGES:
                return List({"role": Value("string"), "content": Value("string")})
            if kind.endswith("[]"):
                return List(Value(kind[:-2]))
            return Value(kind)

        return Features({column: feature(self.columns[column]) for column in columns or self.columns})


PROMPTS_SOURCE = "the prompts dataset (your own prompt set, or `persyn-hf build`)"
CONTRACTS = {
    contract.name: contract
    for contract in (
        Contract(
            "prompts",
            {"prompt_id": ID, "prompt": "string", "messages": MESSAGES, "answer": "string", "source": "string"},
            required=("prompt_id",),
            one_of=("prompt", "messages"),
            key=("prompt_id",),
            produced_by=PROMPTS_SOURCE,
        ),
        Contract(
            "generations",
            {
                "prompt_id": ID,
                "teacher": "string",
                "response": "string",
                "finish_reason": "string",
                "num_samples": "int32",
                "correct": "bool",
                "prompt_tokens": "int64",
                "completion_tokens": "int64",
            },
            required=("prompt_id", "teacher", "response"),
            key=("prompt_id", "teacher"),
            produced_by="`persyn-hf generate`",
        ),
        Contract(
            "scores",
            {
                "prompt_id": ID,
                "teacher": "string",
                "quality": "float64",
                "learnability": "float64",
                "reward": "float64",
            },
            required=("prompt_id", "teacher", "quality", "learnability", "reward"),
            key=("prompt_id", "teacher"),
            produced_by="`persyn-hf score`",
        ),
        Contract(
            "router_rows",
            {"prompt_id": ID, "prompt": "string", "teacher_rewards": "float64[]"},
            required=("prompt", "teacher_rewards"),
            key=("prompt_id",),
            produced_by="`persyn-hf train-router` (`persyn_hf.pairs.router_rows`)",
        ),
        Contract(
            "pairs",
            {"prompt_id": ID, "teacher_a": "string", "teacher_b": "string", "label": "int64"},
            required=("prompt_id", "teacher_a", "teacher_b", "label"),
            key=("prompt_id", "teacher_a", "teacher_b"),
            produced_by="`persyn-hf train-router --pairs_repo_id`",
        ),
        Contract(
            "assignments",
            {"prompt_id": ID, "teacher": "string", "router_scores": "float64[]"},
            required=("prompt_id", "teacher"),
            key=("prompt_id",),
            produced_by="`persyn-hf route` or `persyn-hf select`",
        ),
        Contract(
            "sft",
            {
                "prompt": MESSAGES,
                "completion": MESSAGES,
                "prompt_id": ID,
                "teacher": "string",
                "strategy": "string",
                "reward": "float64",
            },
            required=("prompt", "completion", "prompt_id", "teacher", "strategy", "reward"),
            key=("strategy", "prompt_id"),
            produced_by="`persyn-hf build personalized`",
        ),
        Contract(
            "heldout",
            {"prompt_id": ID, "prompt": "string", "answer": "string"},
            required=("prompt_id", "prompt", "answer"),
            key=("prompt_id",),
            produced_by="a held-out split of prompts with gold answers (e.g. the demo world's `heldout` config)",
        ),
    )
}


def validate(dataset: Dataset, artifact: str, source: str = "", required: tuple[str, ...] | None = None) -> None:
    """Raise a `DataError` if `dataset` breaks the contract of `artifact`.

    Checked, in this order: it has rows; it has the required columns (the contract's, or `required` when a reader
    needs fewer), naming the stage that writes them; its contract columns hold the contract's types; its key columns
    have no empty value and no repeated key (naming the first repeats and how many there are). `source` says where
    the dataset was read from.
    """
    contract = CONTRACTS[artifact]
    where = f" ({source})" if source else ""
    columns = dataset.column_names
    if len(dataset) == 0:
        raise DataError(f"The {artifact} dataset{where} has no rows: it should hold {contract.produced_by}'s output.")
    missing = [column for column in (contract.required if required is None else required) if column not in columns]
    if missing:
        raise DataError(
            f"The {artifact} dataset lacks column(s) {missing} (it has {columns}{where}): "
            f"{', '.join(f'`{column}`' for column in missing)} comes from {_producer(contract, missing)}."
        )
    if contract.one_of and not any(column in columns for column in contract.one_of):
        raise DataError(
            f"The {artifact} dataset needs one of the columns {list(contract.one_of)} (it has {columns}{where})."
        )
    for column in columns:
        if column in contract.columns:
            _check_type(dataset, contract, column, where)
    _check_key(dataset, contract, where)


def _producer(contract: Contract, missing: list[str]) -> str:
    if contract.name == "prompts" and "answer" in missing:
        return f"{PROMPTS_SOURCE}: a math prompt set with gold answers (e.g. `persyn-hf build persyn_math`)"
    return contract.produced_by


def _kind(feature) -> str:
    """`text`, `integer`, `float`, `bool`, `list` or `struct`: what a `datasets` feature holds."""
    dtype = getattr(feature, "dtype", None)
    if dtype in ("string", "large_string"):
        return "text"
    if dtype == "bool":
        return "bool"
    if isinstance(dtype, str) and dtype.startswith(("int", "uint")):
        return "integer"
    if isinstance(dtype, str) and dtype.startswith("float"):
        return "float"
    if dtype == "null":  # every value is None: no type to check
        return "null"
    return (
        "list"
        if type(feature).__name__ in ("List", "LargeList", "Sequence") or isinstance(feature, list)
        else "struct"
    )


def _check_type(dataset: Dataset, contract: Contract, column: str, where: str) -> None:
    kind = _kind(dataset.features[column])
    accepted = ACCEPTED_KINDS[contract.columns[column]]
    if kind != "null" and kind not in accepted:
        wanted = " or ".join(KIND_NAMES[k] for k in sorted(accepted))
        raise DataError(
            f"Column `{column}` of the {contract.name} dataset{where} holds {KIND_NAMES.get(kind, kind)}, not "
            f"{wanted}: convert it (e.g. `dataset.cast_column({column!r}, ...)`) or rename the column."
        )


def _check_key(dataset: Dataset, contract: Contract, where: str) -> None:
    key = [column for column in contract.key if column in dataset.column_names]
    if not key:
        return
    columns = dataset.select_columns(key).to_dict()  # whole columns at once: iterating `dataset[column]` is slow
    values = list(zip(*(columns[column] for column in key)))
    empty = next((row for row, value in enumerate(values) if any(v is None or v == "" for v in value)), None)
    if empty is not None:
        raise DataError(
            f"Row {empty} of the {contract.name} dataset{where} has no {' / '.join(key)}: every row needs one."
        )
    name = key[0] if len(key) == 1 else f"({', '.join(key)})"
    check_unique([value[0] if len(key) == 1 else value for value in values], name, f"{contract.name} dataset{where}")


def check_unique(values: list, name: str, what: str) -> None:
    """Raise a `DataError` naming the first repeated `values` of the key `name` in `what` and how many repeat."""
    repeated = [value for value, count in Counter(values).items() if count > 1]
    if repeated:
        shown = ", ".join(repr(value) for value in repeated[:5])
        raise DataError(
            f"The {what} repeats {len(repeated)} {name} value(s): {shown}{', ...' if len(repeated) > 5 else ''}; "
            f"keep one row per {name}."
        )


# The prompt of a prompts row ----------------------------------------------------------------------------------


def prompt_messages(row: dict) -> list[dict]:
    """The prompt of a prompts row as chat messages: its `messages` (role and content only), or its `prompt` as one
    user turn."""
    if row.get("messages"):
        return [{"role": message["role"], "content": message["content"]} for message in row["messages"]]
    if isinstance(row.get("prompt"), str) and row["prompt"].strip():
        return [{"role": "user", "content": row["prompt"]}]
    raise DataError(f"Prompt {row.get('prompt_id')!r} has neither a non-empty `prompt` nor `messages`: give it one.")


def completion_messages(response: str) -> list[dict]:
    """A teacher's response as the sft contract's `completion`: one assistant turn, as SFT trains on it."""
    return [{"role": "assistant", "content": response}]


def prompt_text(row: dict) -> str:
    """The prompt of a prompts row as text: its `prompt`, or the last user message of its `messages` (what the router
    reads)."""
    if isinstance(row.get("prompt"), str) and row["prompt"].strip():
        return row["prompt"]
    user_turns = [message["content"] for message in row.get("messages") or [] if message["role"] == "user"]
    if not user_turns:
        raise DataError(f"Prompt {row.get('prompt_id')!r} has neither a `prompt` nor a user message in `messages`.")
    return user_turns[-1]
