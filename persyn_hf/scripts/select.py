"""Assign each prompt to a teacher with a strategy (`persyn-hf select`).

Writes the assignments dataset (`prompt_id`, `teacher`, `router_scores`) that `persyn-hf generate` answers in
routed mode. Strategies (see `persyn_hf.select`): `persyn` (the trained router), `oracle`, `strong`,
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

from persyn_hf.cli import run_script
from persyn_hf.configs import process_state
from persyn_hf.scripts.parser import RecipeParser
from persyn_hf.select import SelectArguments, SelectionConfig, run
from persyn_hf.store import ArtifactStore, StoreArguments


def main(args: SelectArguments, selection: SelectionConfig, store_args: StoreArguments) -> None:
    result = run(args, selection, ArtifactStore.from_args(store_args))
    summary = result.summary
    if process_state().is_main_process:
        print(
            f"Wrote {len(result.artifact)} assignments ({summary['strategy']}) to {result.location}: "
            f"{summary['allocation']}"
        )


def make_parser():
    return RecipeParser((SelectArguments, SelectionConfig, StoreArguments))


if __name__ == "__main__":
    run_script("select")
