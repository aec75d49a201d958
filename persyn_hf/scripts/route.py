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

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from persyn_hf.cli import parse_args
from persyn_hf.store import ArtifactStore, StoreArguments


@dataclass
class RouteScriptArguments:
    """What `persyn-hf route` reads and writes.

    Parameters:
        router_repo_id (`str`):
            Artifact of the trained router (with its tokenizer), as saved by `persyn-hf train-router`.
        prompts_repo_id (`str`):
            Artifact of the prompts to route (`prompt_id`, and `prompt` or `messages`).
        assignments_repo_id (`str`):
            Artifact the assignments are written to.
        prompts_config (`str`, *optional*, defaults to `"default"`):
            Dataset config of the prompts artifact.
        prompts_split (`str`, *optional*, defaults to `"train"`):
            Split of the prompts to route.
        assignments_config (`str`, *optional*, defaults to `"default"`):
            Dataset config the assignments are written to.
        prompt_column (`str`, *optional*, defaults to `"prompt"`):
            Column holding the prompt text (prompts with `messages` only are routed on their last user message).
        batch_size (`int`, *optional*, defaults to `64`):
            Prompts per router forward pass (prompts are sorted by length first).
        dtype (`str`, *optional*):
            Dtype the router is loaded in: `"auto"`, `"bfloat16"`, `"float16"` or `"float32"` (the default).
    """

    router_repo_id: str = field(metadata={"help": "Artifact of the trained router (persyn-hf train-router)."})
    prompts_repo_id: str = field(metadata={"help": "Artifact of the prompts to route."})
    assignments_repo_id: str = field(metadata={"help": "Artifact the assignments are written to."})
    prompts_config: str = field(default="default", metadata={"help": "Dataset config of the prompts."})
    prompts_split: str = field(default="train", metadata={"help": "Split of the prompts to route."})
    assignments_config: str = field(default="default", metadata={"help": "Dataset config of the assignments."})
    prompt_column: str = field(default="prompt", metadata={"help": "Column holding the prompt text."})
    batch_size: int = field(default=64, metadata={"help": "Prompts per router forward pass."})
    dtype: str | None = field(
        default=None, metadata={"help": "Router dtype: auto, bfloat16, float16 or float32 (default)."}
    )

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {self.batch_size}.")
        if self.dtype not in (None, "auto", "bfloat16", "float16", "float32"):
            raise ValueError(f"`dtype` must be auto, bfloat16, float16 or float32, got {self.dtype!r}.")


def main(script_args: RouteScriptArguments, store_args: StoreArguments):
    import torch
    from accelerate import PartialState
    from transformers import AutoModel, AutoTokenizer

    import persyn_hf  # noqa: F401  (registers the router with AutoModel)
    from persyn_hf.routing import route_prompts

    state = PartialState()
    store = ArtifactStore.from_args(store_args)
    location = store.location(script_args.router_repo_id)
    dtype = getattr(torch, script_args.dtype) if script_args.dtype not in (None, "auto") else script_args.dtype
    router = AutoModel.from_pretrained(location, **({"dtype": dtype} if dtype is not None else {}))
    tokenizer = AutoTokenizer.from_pretrained(location)
    prompts = store.load_dataset(script_args.prompts_repo_id, script_args.prompts_config, script_args.prompts_split)
    assignments = route_prompts(
        router.to(state.device), tokenizer, prompts, script_args.batch_size, script_args.prompt_column
    )
    if state.is_main_process:
        saved = store.save_dataset(
            script_args.assignments_repo_id, assignments, config_name=script_args.assignments_config
        )
        counts = {name: assignments["teacher"].count(name) for name in router.config.teachers}
        print(f"Wrote {len(assignments)} assignments to {saved}: {counts}")
    state.wait_for_everyone()


def make_parser():
    from trl import TrlParser

    return TrlParser((RouteScriptArguments, StoreArguments))


if __name__ == "__main__":
    main(*parse_args(make_parser(), sys.argv[1:]))
