"""Teachers answer prompts (`persyn-hf generate`): every teacher (`--mode parallel`) or the routed one (`--mode routed`).

# Generate-then-Select on the router's subset (every teacher answers 2.5K prompts)
```bash
persyn-hf generate --config recipes/Qwen2.5-1.5B-Instruct/generate/config_parallel.yaml
```

# Route-then-Generate (each teacher answers only the prompts the router assigned to it)
```bash
persyn-hf generate --config recipes/Qwen2.5-1.5B-Instruct/generate/config_routed.yaml
```

# Any recipe with overrides: other teachers, a resumable results store, more requests in flight
```bash
persyn-hf generate --config recipes/Qwen2.5-1.5B-Instruct/generate/config_parallel.yaml \
    --teachers recipes/teachers/openai.yaml --mode parallel --max_prompts 2500 \
    --results_dir data/results/magpie-subset --max_concurrency 512 --store_root artifacts
```

A killed run resumes where it stopped when run again with the same `results_dir` (by default
`<store_root>/.persyn-results/<generations_repo_id>/<generations_config>`). The cost report is printed and saved
beside the dataset as `cost_report-<generations_config>.json`.
"""

import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from persyn_hf.cli import parse_args
from persyn_hf.store import ArtifactStore, StoreArguments
from persyn_hf.teachers.synthesis import SynthesisConfig


@dataclass
class GenerateArguments:
    """What to generate and where it goes.

    Parameters:
        prompts_repo_id (`str`): Repo id of the prompts dataset (`prompt_id`, `prompt` or `messages`, `answer`).
        teachers (`str`): Teachers YAML (`recipes/teachers/*.yaml`).
        generations_repo_id (`str`): Repo id the generations dataset is saved to.
        prompts_config, prompts_split: Config and split of the prompts dataset.
        assignments_repo_id (`str`, *optional*): Repo id of the assignments (`prompt_id`, `teacher`); routed mode.
        assignments_config, assignments_split: Config and split of the assignments dataset.
        generations_config (`str`, *optional*, defaults to `"default"`): Config the generations are saved to.
        max_prompts (`int`, *optional*): Keep this many prompts, drawn at random with `seed` (e.g. the router's
            2.5K subset).
    """

    prompts_repo_id: str = field(metadata={"help": "Repo id of the prompts dataset."})
    teachers: str = field(metadata={"help": "Teachers YAML, e.g. recipes/teachers/tgi.yaml."})
    generations_repo_id: str = field(metadata={"help": "Repo id the generations dataset is saved to."})
    prompts_config: str = field(default="default", metadata={"help": "Config of the prompts dataset."})
    prompts_split: str = field(default="train", metadata={"help": "Split of the prompts dataset."})
    assignments_repo_id: str | None = field(
        default=None, metadata={"help": "Repo id of the assignments (`prompt_id`, `teacher`), for --mode routed."}
    )
    assignments_config: str = field(default="default", metadata={"help": "Config of the assignments dataset."})
    assignments_split: str = field(default="train", metadata={"help": "Split of the assignments dataset."})
    generations_config: str = field(default="default", metadata={"help": "Config the generations are saved to."})
    max_prompts: int | None = field(
        default=None, metadata={"help": "Keep this many prompts, drawn at random with `seed`."}
    )


def main(args: GenerateArguments, config: SynthesisConfig, store_args: StoreArguments) -> None:
    from persyn_hf.teachers import load_teachers
    from persyn_hf.teachers.synthesis import synthesize

    store = ArtifactStore.from_args(store_args)
    teachers = load_teachers(args.teachers)
    prompts = store.load_dataset(args.prompts_repo_id, args.prompts_config, args.prompts_split)
    if args.max_prompts is not None and args.max_prompts < len(prompts):
        prompts = prompts.shuffle(seed=config.seed).select(range(args.max_prompts))
    assignments = None
    if args.assignments_repo_id is not None:
        assignments = store.load_dataset(args.assignments_repo_id, args.assignments_config, args.assignments_split)
    if config.results_dir is None:
        config.results_dir = str(
            Path(store_args.store_root, ".persyn-results", args.generations_repo_id, args.generations_config)
        )
    generations, report = synthesize(prompts, teachers, config, assignments)
    print(report)
    location = store.save_dataset(args.generations_repo_id, generations, config_name=args.generations_config)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "cost_report.json")
        path.write_text(json.dumps(report.to_dict(), indent=2, default=str))
        store.save_files(args.generations_repo_id, {f"cost_report-{args.generations_config}.json": path})
    print(f"Saved {len(generations)} generations to {location}")


def make_parser():
    from trl import TrlParser

    return TrlParser((GenerateArguments, SynthesisConfig, StoreArguments))


if __name__ == "__main__":
    main(*parse_args(make_parser(), sys.argv[1:]))
