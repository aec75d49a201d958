"""Personalized SFT datasets: assignments + generations -> TRL prompt-completion examples with provenance.

For each assigned (prompt, teacher) the builder takes that teacher's response from the generations (routed ones
for PerSyn; parallel ones for the Oracle and the baselines, or Magpie-Zoo's precomputed responses) and writes

- `prompt`: the prompt as chat messages (`[{"role": "user", "content": ...}]`, or the prompts' `messages`);
- `completion`: `[{"role": "assistant", "content": response}]`;
- provenance: `prompt_id`, `teacher`, `strategy`, `reward` (from the scores when given, NaN when unknown).

Each strategy is one config of the output repo (config name = strategy), so `persyn`, `strong`, `mix`, ... sit
side by side; the card describes every strategy built so far, with its allocation chart beside it.
"""

from __future__ import annotations

import math
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from persyn_hf.builders import teacher_names_in_specs
from persyn_hf.configs import renamed
from persyn_hf.contracts import CONTRACTS, StageResult, completion_messages, prompt_messages
from persyn_hf.cost import generate_then_select, mean_tokens_estimate
from persyn_hf.errors import ConfigError, DataError
from persyn_hf.store import ArtifactStore, data_file
from persyn_hf.teachers.spec import TeacherSpec, load_teachers

if TYPE_CHECKING:
    from datasets import Dataset


@dataclass
class PersonalizedConfig:
    """Build one strategy's personalized SFT dataset. Inputs are read from the store, split `train`.

    Parameters:
        strategy (`str`):
            Name of the selection strategy (`persyn`, `oracle`, `strong`, ...): the config name written.
        student (`str`):
            The student the data is personalized for (Hub id or local path; shown on the card).
        assignments_repo_id (`str`):
            Assignments (`prompt_id`, `teacher`) written by `persyn-hf select` or `persyn-hf route`.
        generations_repo_id (`str`):
            Generations holding each assigned teacher's response.
        prompts_repo_id (`str`):
            Prompts (`prompt_id`, `prompt` or `messages`).
        teachers (`str`):
            Teacher specs of the pool (families, sizes and long-CoT flags for the card).
        dataset_repo_id (`str`):
            The personalized dataset repo written (what `persyn-hf sft` reads as its `dataset_repo_id`).
        assignments_config (`str`, *optional*, defaults to `"default"`):
            Config of `assignments_repo_id`.
        generations_config (`str`, *optional*, defaults to `"generations"`):
            Config of `generations_repo_id`.
        prompts_config (`str`, *optional*, defaults to `"prompts"`):
            Config of `prompts_repo_id`.
        scores_repo_id (`str`, *optional*):
            Scores (`prompt_id`, `teacher`, `reward`) giving each example its `reward`; NaN without them.
        scores_config (`str`, *optional*, defaults to `"default"`):
            Config of `scores_repo_id`.
        output_repo_id (`str`, *optional*):
            Deprecated name of `dataset_repo_id`.
    """

    strategy: str = field(metadata={"help": "Selection strategy; the config name written."})
    student: str = field(metadata={"help": "Student the data is personalized for (Hub id or local path)."})
    assignments_repo_id: str = field(metadata={"help": "Assignments (`prompt_id`, `teacher`)."})
    generations_repo_id: str = field(metadata={"help": "Generations with each assigned teacher's response."})
    prompts_repo_id: str = field(metadata={"help": "Prompts (`prompt_id`, `prompt` or `messages`)."})
    teachers: str = field(metadata={"help": "Teacher specs of the pool."})
    dataset_repo_id: str | None = field(default=None, metadata={"help": "The personalized dataset repo written."})
    assignments_config: str = field(default="default", metadata={"help": "Config of `assignments_repo_id`."})
    generations_config: str = field(default="generations", metadata={"help": "Config of `generations_repo_id`."})
    prompts_config: str = field(default="prompts", metadata={"help": "Config of `prompts_repo_id`."})
    scores_repo_id: str | None = field(default=None, metadata={"help": "Scores giving each example its `reward`."})
    scores_config: str = field(default="default", metadata={"help": "Config of `scores_repo_id`."})
    output_repo_id: str | None = field(default=None, metadata={"help": "Deprecated: use `dataset_repo_id`."})

    def __post_init__(self):
        renamed(self, "output_repo_id", "dataset_repo_id")
        if self.dataset_repo_id is None:
            raise ConfigError("`dataset_repo_id` is required: the personalized dataset repo to write.")


def generation_cost(assignments: list[tuple], generations: Dataset, teachers: list[TeacherSpec]) -> dict:
    """Responses and completion tokens of the routed data, against Generate-then-Select on the same prompts.

    Generate-then-Select's tokens are estimated from each teacher's mean completion tokens in `generations`;
    `None` where a teacher has no token counts there.
    """
    tokens = generations["completion_tokens"] if "completion_tokens" in generations.column_names else None
    per_teacher: dict[str, list[int]] = {}
    for teacher, count in zip(generations["teacher"], tokens or []):
        if count is not None:
            per_teacher.setdefault(teacher, []).append(count)
    by_key = dict(zip(zip(generations["prompt_id"], generations["teacher"]), tokens or []))
    routed = [by_key.get(key) for key in assignments] if tokens is not None else None
    return {
        "routed_responses": len(assignments),
        "gts_responses": generate_then_select(len(assignments), len(teachers)),
        "routed_completion_tokens": None if routed is None or None in routed else int(sum(routed)),
        "gts_completion_tokens": mean_tokens_estimate(len(assignments), per_teacher, [t.name for t in teachers]),
    }


def load_inputs(config: PersonalizedConfig, store: ArtifactStore, names: list[str]):
    """(assignments, generations, prompts by id, rewards by key), each checked against its contract."""
    assignments = store.load_dataset(config.assignments_repo_id, config.assignments_config, contract="assignments")
    teacher_names_in_specs(assignments.unique("teacher"), names, "the assignments", config.teachers)
    generations = store.load_dataset(config.generations_repo_id, config.generations_config, contract="generations")
    prompts = store.load_dataset(config.prompts_repo_id, config.prompts_config, contract="prompts")
    rewards = {}
    if config.scores_repo_id:
        scores = store.load_dataset(
            config.scores_repo_id, config.scores_config, contract="scores", required=("prompt_id", "teacher", "reward")
        )
        rewards = dict(zip(zip(scores["prompt_id"], scores["teacher"]), scores["reward"]))
    return assignments, generations, {row["prompt_id"]: row for row in prompts}, rewards


def run(config: PersonalizedConfig, store: ArtifactStore | None = None) -> StageResult:
    """Join assignments with the assigned teachers' responses into the SFT dataset and save it with its card."""
    from datasets import Dataset

    from persyn_hf.cards import allocation_chart, chart_filename, existing_card_metadata, personalized_dataset_card

    store = store or ArtifactStore()
    store.check_output(
        config.dataset_repo_id,
        "dataset_repo_id",
        files=[data_file(config.strategy), chart_filename(config.strategy)],
    )
    teachers = load_teachers(config.teachers)
    names = [spec.name for spec in teachers]
    assignments, generations, prompts, rewards = load_inputs(config, store, names)
    keys = list(zip(assignments["prompt_id"], assignments["teacher"]))
    index = {key: row for row, key in enumerate(zip(generations["prompt_id"], generations["teacher"]))}
    undone = [key for key in keys if key not in index]
    if undone:
        raise DataError(
            f"{len(undone)} assigned (prompt_id, teacher) pairs have no response in {config.generations_repo_id!r} "
            f"(e.g. {undone[:5]}): generate them with `persyn-hf generate --mode routed` on these assignments."
        )
    unknown = [pid for pid, _ in keys if pid not in prompts]
    if unknown:
        raise DataError(f"{len(unknown)} assigned prompts are not in {config.prompts_repo_id!r} (e.g. {unknown[:5]}).")

    responses = generations["response"]
    sft = Dataset.from_dict(
        {
            "prompt": [prompt_messages(prompts[pid]) for pid, _ in keys],
            "completion": [completion_messages(responses[index[key]]) for key in keys],
            "prompt_id": [pid for pid, _ in keys],
            "teacher": [teacher for _, teacher in keys],
            "strategy": [config.strategy] * len(keys),
            "reward": [math.nan if rewards.get(key) is None else float(rewards[key]) for key in keys],
        },
        features=CONTRACTS["sft"].features(prompt_id=assignments.features["prompt_id"]),
    )
    counts = Counter(teacher for _, teacher in keys)
    allocation = {name: counts[name] for name in names}
    cost = generation_cost(keys, generations, teachers)
    card = personalized_dataset_card(
        repo_id=config.dataset_repo_id,
        student=config.student,
        strategy=config.strategy,
        allocation=allocation,
        cost=cost,
        teachers=teachers,
        existing_metadata=existing_card_metadata(store, config.dataset_repo_id),
    )
    with tempfile.TemporaryDirectory() as scratch:
        chart = allocation_chart(
            allocation,
            teachers,
            Path(scratch) / chart_filename(config.strategy),
            f"{config.strategy}: {config.student}",
        )
        location = store.save_dataset(config.dataset_repo_id, sft, card=card, config_name=config.strategy)
        store.save_files(config.dataset_repo_id, {chart_filename(config.strategy): chart})
    return StageResult(sft, location, {"strategy": config.strategy, "allocation": allocation, "cost": cost})
