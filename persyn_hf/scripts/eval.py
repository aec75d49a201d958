"""Evaluate a student with lm-eval (`persyn-hf eval`).

# The held-out split of your prompt set (answers checked with math-verify)
```bash
persyn-hf eval --config recipes/Qwen2.5-1.5B-Instruct/eval/config_heldout.yaml \
    --model_name_or_path persyn/Qwen2.5-1.5B-Instruct-PerSyn-math \
    --heldout_dataset persyn/persyn-math-heldout --store_root artifacts
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

import sys

from persyn_hf.cli import parse_args
from persyn_hf.evaluation import EvalArguments, evaluate_model
from persyn_hf.store import StoreArguments


def main(eval_args, store_args):
    evaluate_model(eval_args, store_args)


def make_parser():
    from trl import TrlParser

    return TrlParser((EvalArguments, StoreArguments))


if __name__ == "__main__":
    main(*parse_args(make_parser(), sys.argv[1:]))
