"""Fine-tune the student on a personalized dataset with TRL (`persyn-hf sft`).

# Full fine-tuning (paper Table 9), 4 GPUs with DeepSpeed ZeRO-3
```bash
accelerate launch --config_file recipes/accelerate_configs/zero3.yaml -m persyn_hf.scripts.sft \
    --config recipes/Qwen2.5-1.5B-Instruct/sft/config_math.yaml
```

# LoRA on all linear layers (paper Table 10), for students above 14B
```bash
accelerate launch --config_file recipes/accelerate_configs/zero3.yaml -m persyn_hf.scripts.sft \
    --config recipes/Qwen2.5-32B-Instruct/sft/config_math_lora.yaml
```

# One process, any recipe, with overrides
```bash
persyn-hf sft --config recipes/Qwen2.5-1.5B-Instruct/sft/config_instruct.yaml \
    --model_name_or_path Qwen/Qwen2.5-1.5B-Instruct \
    --dataset_name my-user/magpie-zoo-personalized-Qwen2.5-1.5B-Instruct --dataset_config persyn \
    --student_repo_id my-user/Qwen2.5-1.5B-Instruct-PerSyn \
    --store_root artifacts --output_dir data/Qwen2.5-1.5B-Instruct-PerSyn
```
"""

import sys

from persyn_hf.cli import parse_args
from persyn_hf.sft import SFTScriptArguments, train_student
from persyn_hf.store import StoreArguments


def main(script_args, training_args, model_args, store_args):
    train_student(script_args, training_args, model_args, store_args)


def make_parser():
    from trl import ModelConfig, SFTConfig, TrlParser

    return TrlParser((SFTScriptArguments, SFTConfig, ModelConfig, StoreArguments))


if __name__ == "__main__":
    main(*parse_args(make_parser(), sys.argv[1:]))
