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

from datasets import Dataset

from persyn_hf.builders import teacher_names_in_specs
from persyn_hf.cards import allocation_chart, chart_filename, existing_card_metadata, personalized_dataset_card
from persyn_hf.rewards import require_columns
from persyn_hf.store import ArtifactStore
from persyn_hf.teachers.spec import TeacherSpec, load_teachers


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
        output_repo_id (`str`):
            Dataset repo (or local-store folder) written.
        teachers (`str`):
            Teacher specs of the pool (families, sizes and long-CoT flags for the card).
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
    """

    strategy: str = field(metadata={"help": "Selection strategy; the config name written."})
    student: str = field(metadata={"help": "Student the data is personalized for (Hub id or local path)."})
    assignments_repo_id: str = field(metadata={"help": "Assignments (`prompt_id`, `teacher`)."})
    generations_repo_id: str = field(metadata={"help": "Generations with each assigned teacher's response."})
    prompts_repo_id: str = field(metadata={"help": "Prompts (`prompt_id`, `prompt` or `messages`)."})
    output_repo_id: str = field(metadata={"help": "Dataset repo written."})
    teachers: str = field(metadata={"help": "Teacher specs of the pool."})
    assignments_config: str = field(default="default", metadata={"help": "Config of `assignments_repo_id`."})
    generations_config: str = field(default="generations", metadata={"help": "Config of `generations_repo_id`."})
    prompts_config: str = field(default="prompts", metadata={"help": "Config of `prompts_repo_id`."})
    scores_repo_id: str | None = field(default=None, metadata={"help": "Scores giving each example its `reward`."})
    scores_config: str = field(default="default", metadata={"help": "Config of `scores_repo_id`."})


def _index(dataset: Dataset, artifact: str) -> dict[tuple, int]:
    """(prompt_id, teacher) -> row, refusing a pair that appears twice."""
    index = {}
    for row, key in enumerate(zip(dataset["prompt_id"], dataset["teacher"])):
        if key in index:
            raise ValueError(f"The {artifact} hold (prompt_id, teacher) {key} twice; keep one row per pair.")
        index[key] = row
    return index


def _prompt_messages(prompts: Dataset) -> dict:
    """prompt_id -> the prompt as chat messages."""
    if "messages" in prompts.column_names:
        return dict(zip(prompts["prompt_id"], prompts["messages"]))
    require_columns(prompts, ["prompt_id", "prompt"], "prompts")
    return {pid: [{"role": "user", "content": text}] for pid, text in zip(prompts["prompt_id"], prompts["prompt"])}


def generation_cost(
    assignments: list[tuple], generations: Dataset, index: dict[tuple, int], teachers: list[TeacherSpec]
) -> dict:
    """Responses and completion tokens of the routed data, against Generate-then-Select on the same prompts.

    Generate-then-Select's tokens are estimated from each teacher's mean completion tokens in `generations`;
    `None` where a teacher has no token counts there.
    """
    tokens = generations["completion_tokens"] if "completion_tokens" in generations.column_names else None
    routed = None if tokens is None else [tokens[index[key]] for key in assignments]
    per_teacher = {}
    if tokens is not None:
        for (_, teacher), row in index.items():
            if tokens[row] is not None:
                per_teacher.setdefault(teacher, []).append(tokens[row])
    num_prompts = len(assignments)
    gts_tokens = None
    if all(per_teacher.get(spec.name) for spec in teachers):
        gts_tokens = round(sum(num_prompts * sum(per_teacher[s.name]) / len(per_teacher[s.name]) for s in teachers))
    return {
        "routed_responses": num_prompts,
        "gts_responses": num_prompts * len(teachers),
        "routed_completion_tokens": None if routed is None or None in routed else int(sum(routed)),
        "gts_completion_tokens": gts_tokens,
    }


def build_personalized(config: PersonalizedConfig, store: ArtifactStore) -> str:
    """Join assignments with the assigned teachers' responses into the SFT dataset and save it with its card."""
    teachers = load_teachers(config.teachers)
    names = [spec.name for spec in teachers]
    assignments = store.load_dataset(config.assignments_repo_id, config.assignments_config)
    require_columns(assignments, ["prompt_id", "teacher"], "assignments")
    if len(assignments) == 0:
        raise ValueError(f"The assignments {config.assignments_repo_id!r} are empty: no prompt was selected.")
    if len(set(assignments["prompt_id"])) != len(assignments):
        raise ValueError(f"The assignments {config.assignments_repo_id!r} give some prompt more than one teacher.")
    teacher_names_in_specs(assignments.unique("teacher"), names, "the assignments", config.teachers)
    generations = store.load_dataset(config.generations_repo_id, config.generations_config)
    require_columns(generations, ["prompt_id", "teacher", "response"], "generations")
    prompts = _prompt_messages(store.load_dataset(config.prompts_repo_id, config.prompts_config))

    keys = list(zip(assignments["prompt_id"], assignments["teacher"]))
    index = _index(generations, "generations")
    undone = [key for key in keys if key not in index]
    if undone:
        raise ValueError(
            f"{len(undone)} assigned (prompt_id, teacher) pairs have no response in {config.generations_repo_id!r} "
            f"(e.g. {undone[:5]}): generate them with `persyn-hf generate --mode routed` on these assignments."
        )
    unknown = [pid for pid, _ in keys if pid not in prompts]
    if unknown:
        raise ValueError(
            f"{len(unknown)} assigned prompts are not in {config.prompts_repo_id!r} (e.g. {unknown[:5]})."
        )
    rewards = {}
    if config.scores_repo_id:
        scores = store.load_dataset(config.scores_repo_id, config.scores_config)
        require_columns(scores, ["prompt_id", "teacher", "reward"], "scores")
        rewards = dict(zip(zip(scores["prompt_id"], scores["teacher"]), scores["reward"]))

    responses = generations["response"]
    sft = Dataset.from_dict(
        {
            "prompt": [prompts[pid] for pid, _ in keys],
            "completion": [[{"role": "assistant", "content": responses[index[key]]}] for key in keys],
            "prompt_id": [pid for pid, _ in keys],
            "teacher": [teacher for _, teacher in keys],
            "strategy": [config.strategy] * len(keys),
            "reward": [math.nan if rewards.get(key) is None else float(rewards[key]) for key in keys],
        }
    )
    counts = Counter(teacher for _, teacher in keys)
    allocation = {name: counts[name] for name in names}
    card = personalized_dataset_card(
        repo_id=config.output_repo_id,
        student=config.student,
        strategy=config.strategy,
        allocation=allocation,
        cost=generation_cost(keys, generations, index, teachers),
        teachers=teachers,
        existing_metadata=existing_card_metadata(store, config.output_repo_id),
    )
    with tempfile.TemporaryDirectory() as scratch:
        chart = allocation_chart(
            allocation,
            teachers,
            Path(scratch) / chart_filename(config.strategy),
            f"{config.strategy}: {config.student}",
        )
        location = store.save_dataset(config.output_repo_id, sft, card=card, config_name=config.strategy)
        store.save_files(config.output_repo_id, {chart_filename(config.strategy): chart})
    return location
