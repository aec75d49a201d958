"""`persyn-hf [--debug] [--log_level LEVEL] <verb> --config recipe.yaml [--field value ...]`.

Every verb parses its recipe strictly (`persyn_hf.scripts.parser.RecipeParser`: unknown keys are errors naming the closest field), runs its
stage, and prints what it made. Every mistake a user can fix ends the run with one line on stderr: a recipe or flag
that cannot be parsed with exit status 2, a `persyn_hf.errors.PersynError` of the stage with exit status 1;
`--debug` (or `PERSYN_HF_DEBUG=1`) shows the traceback too. `--log_level` (or `PERSYN_HF_LOG_LEVEL`) sets
how much of persyn-hf's progress is logged, `info` by default; the library itself configures no logging.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import os
import sys
from typing import NoReturn

from persyn_hf.errors import PersynError
from persyn_hf.scripts import VERBS

LOG_LEVELS = ("debug", "info", "warning", "error")
USAGE = (
    "usage: persyn-hf [--debug] [--log_level {debug,info,warning,error}] <verb> --config recipe.yaml "
    "[--field value ...]\n\nverbs:\n" + "\n".join(f"  {verb:<14}{help_line}" for verb, (_, help_line) in VERBS.items())
)


def configure_logging(level: str) -> None:
    """Show persyn-hf's log records of `level` and above on stderr."""
    logger = logging.getLogger("persyn_hf")
    if not any(getattr(handler, "persyn_hf", False) for handler in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[persyn-hf] %(message)s"))
        handler.persyn_hf = True
        logger.addHandler(handler)
    logger.setLevel(level.upper())


def _usage_error(message: str) -> NoReturn:
    """End the run as a flag that cannot be parsed does: one line on stderr, exit status 2."""
    print(f"persyn-hf: error: {message}", file=sys.stderr)
    sys.exit(2)


def _global_options(argv: list[str]) -> tuple[bool, str, list[str]]:
    """(debug, log level, the rest) from the options before the verb (`--log_level LEVEL` or `--log_level=LEVEL`)
    and the environment."""
    debug = os.environ.get("PERSYN_HF_DEBUG", "") not in ("", "0")
    level = os.environ.get("PERSYN_HF_LOG_LEVEL", "info").lower()
    while argv and argv[0].startswith("--") and argv[0] not in ("--help", "--version"):
        option, argv = argv[0], argv[1:]
        name, equals, value = option.partition("=")
        if option == "--debug":
            debug = True
        elif name == "--log_level":
            if not equals:
                if not argv:
                    _usage_error(f"`--log_level` needs a value, one of {list(LOG_LEVELS)}")
                value, argv = argv[0], argv[1:]
            level = value.lower()
        else:
            _usage_error(f"unknown option {option!r}; options before the verb: --debug, --log_level")
    if level not in LOG_LEVELS:
        _usage_error(f"`--log_level` must be one of {list(LOG_LEVELS)}, got {level!r}")
    return debug, level, argv


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    debug, level, argv = _global_options(list(argv))
    if not argv:  # a verb is needed: the usage, as for any other usage error
        print(USAGE, file=sys.stderr)
        sys.exit(2)
    if argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    if argv[0] == "--version":
        from persyn_hf import __version__

        print(f"persyn-hf {__version__}")
        return
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        close = difflib.get_close_matches(verb, VERBS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        _usage_error(f"unknown verb {verb!r}; choose one of: {', '.join(VERBS)}{hint}")
    module = importlib.import_module(VERBS[verb][0])
    if {"-h", "--help"} & set(rest) and hasattr(module, "make_help_parser"):
        # verbs built on `TrainingArguments` list its fields only with `--help-all`: importing them takes seconds
        parser = module.make_help_parser()
        parser.prog = f"persyn-hf {verb}"
        parser.print_help()
        return
    from persyn_hf.scripts.parser import parse_args

    rest = ["--help" if arg == "--help-all" else arg for arg in rest]
    configure_logging(level)
    parser = module.make_parser()
    parser.prog = f"persyn-hf {verb}"
    try:
        module.main(*parse_args(parser, rest))
    except PersynError as error:
        if debug:
            raise
        hint = f"(`persyn-hf --debug {verb} ...` shows the traceback)"
        sys.exit(f"persyn-hf {verb}: error: {error}" + ("\n" if "\n" in str(error) else " ") + hint)


def run_script(verb: str) -> None:
    """`python -m persyn_hf.scripts.<verb> ...` (and `accelerate launch -m ...`): the same as `persyn-hf <verb> ...`."""
    main([verb, *sys.argv[1:]])


if __name__ == "__main__":
    main()
