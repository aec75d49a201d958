"""`persyn-hf <verb> --config recipe.yaml [--field value ...]`."""

from __future__ import annotations

import importlib
import sys

from persyn_hf.scripts import VERBS

USAGE = "usage: persyn-hf <verb> --config recipe.yaml [--field value ...]\n\nverbs:\n" + "\n".join(
    f"  {verb:<14}{help_line}" for verb, (_, help_line) in VERBS.items()
)


def parse_args(parser, argv: list[str]):
    """Parse `argv` with a verb's `TrlParser`: YAML gives defaults, flags override, unknown keys are errors."""
    try:
        return parser.parse_args_and_config(argv)
    except ValueError as error:  # unknown YAML keys or flags: name them, no traceback
        parser.error(str(error))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        sys.exit(f"persyn-hf: unknown verb {verb!r}; choose one of: {', '.join(VERBS)}")
    module = importlib.import_module(VERBS[verb][0])
    parser = module.make_parser()
    parser.prog = f"persyn-hf {verb}"
    module.main(*parse_args(parser, rest))


if __name__ == "__main__":
    main()
