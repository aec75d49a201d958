"""Build a dataset and its card (`persyn-hf build <builder>`): `magpie_zoo`, `persyn_math` or `personalized`.

# Magpie-Zoo prompts and the 19 teachers' precomputed responses (50K training prompts, 2.5K router subset)
```bash
hf download Magpie-Align/Magpie-100K-Generator-Zoo --repo-type dataset --local-dir data/Magpie-100K-Generator-Zoo
persyn-hf build magpie_zoo --config recipes/magpie_zoo/build/config_magpie_zoo.yaml \
    --source data/Magpie-100K-Generator-Zoo --output_repo_id my-user/magpie-zoo --hub true
```

# PerSyn-Math: 10K OpenR1-Math problems, answered by the 15 math teachers with rejection sampling
```bash
hf download open-r1/OpenR1-Math-220k --repo-type dataset --local-dir data/OpenR1-Math-220k
persyn-hf build persyn_math --config recipes/persyn_math/build/config_persyn_math.yaml \
    --source data/OpenR1-Math-220k --results_dir data/persyn-math-results --output_repo_id my-user/persyn-math
```

# The personalized SFT dataset of one strategy (config name = strategy)
```bash
persyn-hf build personalized --config recipes/magpie_zoo/build/config_personalized.yaml \
    --strategy persyn --assignments_repo_id my-user/magpie-zoo-assignments-Qwen2.5-1.5B-Instruct-persyn
```

Each builder checks its inputs before it writes anything; `--hub true` pushes to the Hugging Face Hub (token
from `HF_TOKEN` or `hf auth login`) instead of the local store under `--store_root`.
"""

import difflib
import sys

from persyn_hf.builders import magpie_zoo, personalized, persyn_math
from persyn_hf.cli import run_script
from persyn_hf.generate import SynthesisConfig
from persyn_hf.scripts.parser import RecipeParser
from persyn_hf.store import ArtifactStore, StoreArguments

# builder -> (its module, its parser's dataclasses, one-line help); each module's `run(*configs, store=...)` builds.
BUILDERS = {
    "magpie_zoo": (
        magpie_zoo,
        (magpie_zoo.MagpieZooConfig, StoreArguments),
        "Magpie-Zoo prompts and precomputed parallel responses (train + router subset).",
    ),
    "persyn_math": (
        persyn_math,
        (persyn_math.PersynMathConfig, SynthesisConfig, StoreArguments),
        "PerSyn-Math: OpenR1-Math problems answered by every math teacher, with rejection sampling.",
    ),
    "personalized": (
        personalized,
        (personalized.PersonalizedConfig, StoreArguments),
        "A strategy's personalized SFT dataset (TRL prompt-completion) with its allocation card.",
    ),
}


class BuildParser(RecipeParser):
    """`persyn-hf build <builder> ...`: one `RecipeParser` subparser per builder, each over its own dataclasses.

    Parsing hands the arguments after the builder's name to that builder's parser, so its `--config` YAML and
    flags are checked against its own fields only: an unknown key is an error that names it.
    """

    def __init__(self):
        super().__init__(prog="persyn-hf build", description="Build a dataset and its card.")
        self.builders = self.add_subparsers(
            dest="builder",
            metavar="builder",
            required=True,
            parser_class=RecipeParser,
            help="one of: " + ", ".join(BUILDERS),
        )
        for name, (_, dataclass_types, help_line) in BUILDERS.items():
            self.builders.add_parser(name, dataclass_types=dataclass_types, help=help_line, description=help_line)

    def parse_args_and_config(self, args=None, **kwargs) -> tuple:
        """`(builder, *its dataclasses)`."""
        args = list(sys.argv[1:] if args is None else args)
        if not args or args[0] in ("-h", "--help"):
            self.parse_args(args)  # prints the help, or says that a builder is required, and exits
        if args[0] not in self.builders.choices:
            close = difflib.get_close_matches(args[0], self.builders.choices, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            self.error(
                f"the first argument must be a builder, one of {list(self.builders.choices)}; got {args[0]!r}{hint}"
            )
        return (args[0], *self.builders.choices[args[0]].parse_args_and_config(args[1:], **kwargs))


def make_parser() -> BuildParser:
    return BuildParser()


def run(builder: str, *configs, store: ArtifactStore | None = None):
    """Run `builder` on its configs (its parser's dataclasses but the store's); returns its `StageResult`."""
    return BUILDERS[builder][0].run(*configs, store=store)


def main(builder: str, *configs) -> None:
    *configs, store_args = configs
    result = run(builder, *configs, store=ArtifactStore.from_args(store_args))
    print(f"persyn-hf build {builder}: wrote {result.location}")


if __name__ == "__main__":
    run_script("build")
