"""Run the whole method offline on the embedded demo world (`persyn-hf demo`).

```bash
# the full demo world (about 10 minutes cold on 2 CPU cores, less once the teachers are cached)
persyn-hf demo --config recipes/demo/config_demo.yaml

# a small world, as the test suite runs it
persyn-hf demo --config recipes/demo/config_quick.yaml --output_dir /tmp/demo --store_root /tmp/demo/store
```

It trains (or reuses) the demo teachers and student, then runs every stage's verb on its recipe in
`recipes/demo/`: generate on X_sub → score → train-router → route → generate (routed) → generate and score
all of X for the Oracle and the baselines → for each strategy: select → build personalized → sft → eval.
It prints the comparison table and writes `results.json` and `allocation_persyn.png` to `output_dir`.
"""

from persyn_hf.cli import run_script
from persyn_hf.demo.pipeline import DemoArguments, run_demo
from persyn_hf.scripts.parser import RecipeParser


def main(args: DemoArguments) -> None:
    run_demo(args)


def make_parser():
    return RecipeParser((DemoArguments,))


if __name__ == "__main__":
    run_script("demo")
