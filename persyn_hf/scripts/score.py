"""Score every teacher response: quality, the student's learnability and their mix (`persyn-hf score`, Eq. 1-2).

Reads the generations (`persyn-hf generate`) and their prompts from the artifact store, scores each response
with the chosen quality scorer and the student, and writes the scores dataset: `prompt_id`, `teacher`,
`quality`, `learnability`, `reward`.

# Instruction data: a reward model for quality, one process
```bash
persyn-hf score --config recipes/Qwen2.5-1.5B-Instruct/score/config_instruct.yaml
```

# Math data: math-verify correctness for quality, the responses split across 8 GPUs
```bash
accelerate launch --config_file recipes/accelerate_configs/ddp.yaml --num_processes 8 -m persyn_hf.scripts.score \
    --config recipes/Qwen2.5-1.5B-Instruct/score/config_math.yaml
```

# Any recipe, with overrides (here: the "w/o learnability" mix and a local store)
```bash
persyn-hf score --config recipes/Qwen2.5-1.5B-Instruct/score/config_instruct.yaml \
    --alpha 0.0 --scores_repo_id my-user/scores-wo-learnability --store_root artifacts
```
"""

from persyn_hf.cli import run_script
from persyn_hf.score import ScoreArguments, ScoringConfig, run
from persyn_hf.scripts.parser import RecipeParser
from persyn_hf.store import ArtifactStore, StoreArguments


def main(args: ScoreArguments, scoring: ScoringConfig, store_args: StoreArguments) -> None:
    from accelerate import PartialState

    result = run(args, scoring, ArtifactStore.from_args(store_args))
    if PartialState().is_main_process:
        missing = {key: value for key, value in result.summary.items() if key.endswith("_missing") and value}
        print(f"Wrote {len(result.artifact)} scores to {result.location}" + (f" ({missing})" if missing else ""))


def make_parser():
    return RecipeParser((ScoreArguments, ScoringConfig, StoreArguments))


if __name__ == "__main__":
    run_script("score")
