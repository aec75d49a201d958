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

Every remote teacher's endpoint is probed before any prompt is sent; a wrong URL, protocol, model name or API key
is one error line per teacher. A teacher that stops answering mid-run is paused and probed, and given up only after
`--teacher_down_timeout_s` (300 s). A run that leaves prompts undone ends with them grouped by teacher and cause,
and the command that resumes it.
"""

from persyn_hf.cli import run_script
from persyn_hf.generate import GenerateArguments, SynthesisConfig, run
from persyn_hf.scripts.parser import RecipeParser
from persyn_hf.store import ArtifactStore, StoreArguments


def main(args: GenerateArguments, synthesis: SynthesisConfig, store_args: StoreArguments) -> None:
    result = run(args, synthesis, ArtifactStore.from_args(store_args))
    print(result.summary["report"])
    print(f"Saved {len(result.artifact)} generations to {result.location}")


def make_parser():
    return RecipeParser((GenerateArguments, SynthesisConfig, StoreArguments))


if __name__ == "__main__":
    run_script("generate")
