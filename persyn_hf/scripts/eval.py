"""Evaluate a student with lm-eval (`persyn-hf eval`).

# The held-out split of your prompt set (answers checked with math-verify)
```bash
persyn-hf eval --config recipes/Qwen2.5-1.5B-Instruct/eval/config_heldout.yaml \
    --model_name_or_path persyn/Qwen2.5-1.5B-Instruct-PerSyn-math \
    --heldout_repo_id persyn/persyn-math-heldout --store_root artifacts
```

# The paper's benchmarks: IFEval and TruthfulQA (instruction tuning), GSM8K 5-shot, MATH-500 and SVAMP (math)
```bash
persyn-hf eval --config recipes/Qwen2.5-1.5B-Instruct/eval/config_instruct.yaml \
    --model_name_or_path data/Qwen2.5-1.5B-Instruct-PerSyn-instruct
persyn-hf eval --config recipes/Qwen2.5-1.5B-Instruct/eval/config_math.yaml \
    --model_name_or_path data/Qwen2.5-1.5B-Instruct-PerSyn-math
```

# Several GPUs, one model copy each (lm-eval's data parallelism)
```bash
accelerate launch --num_processes 4 -m persyn_hf.scripts.eval --config recipes/Qwen2.5-1.5B-Instruct/eval/config_math.yaml
```
"""

from persyn_hf.cli import run_script
from persyn_hf.evaluation import EvalArguments, run
from persyn_hf.scripts.parser import RecipeParser
from persyn_hf.store import ArtifactStore, StoreArguments


def main(args: EvalArguments, store_args: StoreArguments) -> None:
    result = run(args, ArtifactStore.from_args(store_args))
    if result.summary:
        print(result.summary["table"])
        print(f"Results written to {result.location}")


def make_parser():
    return RecipeParser((EvalArguments, StoreArguments))


if __name__ == "__main__":
    run_script("eval")
