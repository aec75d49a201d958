"""Route a prompt set to its teachers with a trained PerSyn router (`persyn-hf route`, "Route then Generate").

Reads the router (`persyn-hf train-router`) and the prompts from the artifact store and writes the assignments
dataset: `prompt_id`, `teacher` (the best-scored teacher) and `router_scores` (one score per teacher, in the
router's teacher order). `persyn-hf generate` then has each teacher answer only its own prompts. Under
`accelerate launch` the prompts are split across the processes and gathered back in order.

# One GPU (or CPU)
```bash
persyn-hf route --config recipes/Qwen2.5-1.5B-Instruct/route/config_math.yaml
```

# The same keys on the command line, the prompts split over 8 GPUs
```bash
accelerate launch --config_file recipes/accelerate_configs/ddp.yaml --num_processes 8 -m persyn_hf.scripts.route \
    --router_repo_id persyn/router-Qwen2.5-1.5B-Instruct-persyn-math \
    --prompts_repo_id persyn/persyn-math --prompts_config prompts \
    --assignments_repo_id persyn/persyn-math-assignments-Qwen2.5-1.5B-Instruct-persyn --batch_size 128
```
"""

from persyn_hf.cli import run_script
from persyn_hf.configs import process_state
from persyn_hf.route import RouteConfig, run
from persyn_hf.scripts.parser import RecipeParser
from persyn_hf.store import ArtifactStore, StoreArguments


def main(config: RouteConfig, store_args: StoreArguments) -> None:
    result = run(config, ArtifactStore.from_args(store_args))
    if process_state().is_main_process:
        print(f"Wrote {len(result.artifact)} assignments to {result.location}: {result.summary['allocation']}")


def make_parser():
    return RecipeParser((RouteConfig, StoreArguments))


if __name__ == "__main__":
    run_script("route")
