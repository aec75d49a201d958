"""Assign each prompt to a teacher with a strategy (`persyn-hf select`).

Writes the assignments dataset (`prompt_id`, `teacher`, `router_scores`) that `persyn-hf generate` answers in
routed mode. Strategies (see `persyn_hf.strategies`): `persyn` (the trained router), `oracle`, `strong`,
`family_strong`, `mix`, `car`, `persyn_wo_quality`, `persyn_wo_learnability`.

# PerSyn: route the full prompt set with the trained router (math: config_math.yaml)
```bash
persyn-hf select --config recipes/Qwen2.5-1.5B-Instruct/select/config_instruct.yaml
```

# A baseline from the same recipe family: the strategy and its output on the command line
```bash
persyn-hf select --config recipes/Qwen2.5-1.5B-Instruct/select/config_baselines_instruct.yaml \
    --strategy car --assignments_repo_id persyn/magpie-zoo-assignments-Qwen2.5-1.5B-Instruct-car
```
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from persyn_hf.cli import parse_args
from persyn_hf.store import ArtifactStore, StoreArguments
from persyn_hf.strategies import SelectionConfig, select_teachers
from persyn_hf.teachers import load_teachers


@dataclass
class SelectScriptArguments:
    """What `persyn-hf select` reads and writes.

    Parameters:
        prompts_repo_id (`str`):
            Artifact of the prompts to assign.
        teachers (`str`):
            YAML file of the teacher specs (their order breaks ties; `family` and `size_b` feed `family_strong`).
        assignments_repo_id (`str`):
            Artifact the assignments are written to.
        scores_repo_id (`str` or `None`, *optional*, defaults to `None`):
            Artifact of the scores (`persyn-hf score`), for `oracle`, the ablations, `car` and an unnamed `strong`.
        prompts_config (`str`, *optional*, defaults to `"default"`):
            Dataset config of the prompts artifact.
    """

    prompts_repo_id: str = field(metadata={"help": "Artifact of the prompts to assign."})
    teachers: str = field(metadata={"help": "YAML file of the teacher specs."})
    assignments_repo_id: str = field(metadata={"help": "Artifact the assignments are written to."})
    scores_repo_id: str | None = field(
        default=None, metadata={"help": "Artifact of the scores (persyn-hf score), for strategies that need them."}
    )
    prompts_config: str = field(default="default", metadata={"help": "Dataset config of the prompts."})


def main(script_args: SelectScriptArguments, selection: SelectionConfig, store_args: StoreArguments):
    store = ArtifactStore.from_args(store_args)
    teachers = load_teachers(script_args.teachers)
    prompts = store.load_dataset(script_args.prompts_repo_id, script_args.prompts_config)
    scores = store.load_dataset(script_args.scores_repo_id) if script_args.scores_repo_id else None
    if selection.router is not None:
        selection.router = store.resolve(selection.router, "router")
    assignments = select_teachers(prompts, scores, teachers, selection)
    location = store.save_dataset(script_args.assignments_repo_id, assignments)
    counts = {t.name: assignments["teacher"].count(t.name) for t in teachers}
    print(f"Wrote {len(assignments)} assignments ({selection.strategy}) to {location}: {counts}")


def make_parser():
    from trl import TrlParser

    return TrlParser((SelectScriptArguments, SelectionConfig, StoreArguments))


if __name__ == "__main__":
    main(*parse_args(make_parser(), sys.argv[1:]))
