"""Score every teacher response: quality, the student's learnability and their mix (`persyn-hf score`, Eq. 1-2).

Reads the generations (`persyn-hf generate`) and their prompts from the artifact store, scores each response
with the chosen quality scorer and the student, and writes the scores dataset: `prompt_id`, `teacher`,
`quality`, `learnability`, `reward`. Learnability (`persyn_hf.learnability`) scores exactly the tokens the sft stage
trains on; a response it cannot score gets NaN, and the count per reason is printed.

# Instruction data: a reward model for quality, one process
```bash
persyn-hf score --config recipes/Qwen2.5-1.5B-Instruct/score/config_instruct.yaml
```

# Math data: math-verify correctness for quality, the responses split across 8 GPUs
```bash
accelerate launch --config_file recipes/accelerate_configs/ddp.yaml --num_processes 8 -m persyn_hf.scripts.score \
    --config recipes/Qwen2.5-1.5B-Instruct/score/config_math.yaml
```

# Learnability computed by a vLLM server serving the student (prefix caching off: exact prompt log-probabilities)
```bash
vllm serve Qwen/Qwen2.5-1.5B-Instruct --no-enable-prefix-caching &
persyn-hf score --config recipes/Qwen2.5-1.5B-Instruct/score/config_math.yaml \
    --learnability_backend openai --learnability_base_url http://localhost:8000
```

# Any recipe, with overrides (here: the "w/o learnability" mix and a local store)
```bash
persyn-hf score --config recipes/Qwen2.5-1.5B-Instruct/score/config_instruct.yaml \
    --alpha 0.0 --scores_repo_id my-user/scores-wo-learnability --store_root artifacts
```
"""

from persyn_hf.cli import run_script
from persyn_hf.configs import process_state
from persyn_hf.learnability import LearnabilityConfig
from persyn_hf.score import ScoreArguments, ScoringConfig, run
from persyn_hf.scripts.parser import RecipeParser
from persyn_hf.store import ArtifactStore, StoreArguments


def main(
    args: ScoreArguments, scoring: ScoringConfig, learnability: LearnabilityConfig, store_args: StoreArguments
) -> None:
    result = run(args, scoring, learnability, ArtifactStore.from_args(store_args))
    if process_state().is_main_process:
        quality_missing = result.summary["quality_missing"]
        print(f"Wrote {len(result.artifact)} scores to {result.location}")
        print(result.summary["learnability"] + (f"; {quality_missing} without a quality" if quality_missing else ""))


def make_parser():
    return RecipeParser((ScoreArguments, ScoringConfig, LearnabilityConfig, StoreArguments))


if __name__ == "__main__":
    run_script("score")
