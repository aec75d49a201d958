"""`persyn-hf [--debug] [--log_level LEVEL] <verb> --config recipe.yaml [--field value ...]`.

Every verb parses its recipe strictly (`RecipeParser`: unknown keys are errors naming the closest field), runs its
stage, and prints what it made. Every mistake a user can fix ends the run with one line on stderr: a recipe or flag
that cannot be parsed with exit status 2, a `persyn_hf.errors.PersynError` of the stage with exit status 1;
`--debug` (or `PERSYN_HF_DEBUG=1`) shows the traceback too. `--log_level` (or `PERSYN_HF_LOG_LEVEL`) sets
how much of persyn-hf's progress is logged, `info` by default; the library itself configures no logging.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import logging
import os
import sys
import typing
from argparse import ArgumentTypeError
from pathlib import Path

import yaml
from transformers.hf_argparser import string_to_bool
from trl import TrlParser

from persyn_hf.errors import PersynError, check_utf8
from persyn_hf.scripts import VERBS

LOG_LEVELS = ("debug", "info", "warning", "error")
USAGE = (
    "usage: persyn-hf [--debug] [--log_level {debug,info,warning,error}] <verb> --config recipe.yaml "
    "[--field value ...]\n\nverbs:\n" + "\n".join(f"  {verb:<14}{help_line}" for verb, (_, help_line) in VERBS.items())
)


class RecipeParser(TrlParser):
    """A verb's `TrlParser`, strict about its recipe, whose errors are one line (no usage text).

    Before any dataclass is built (and runs its own checks), it reports a recipe that cannot be read, every unknown
    key or flag (with the closest valid name) and a value of the wrong type, naming the recipe file.
    """

    def parse_args_and_config(self, args=None, **kwargs) -> tuple:
        args = _split_config_flag(list(sys.argv[1:] if args is None else args))
        path, recipe = self._recipe(args)
        self._check_names(path, recipe, args)
        self._check_values(path, recipe)
        return super().parse_args_and_config(args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")

    def _recipe(self, args: list[str]) -> tuple[str | None, dict]:
        """(path, mapping) of the `--config` recipe; `(None, {})` without one."""
        if "--config" not in args:
            return None, {}
        index = args.index("--config")
        if index + 1 == len(args) or args[index + 1].startswith("--"):
            self.error("`--config` needs the path of a YAML recipe.")
        path = args[index + 1]
        if not os.path.isfile(path):
            self.error(f"The recipe {path!r} does not exist or is not a file: give the path of a YAML recipe.")
        try:
            check_utf8(path, "The recipe")
            recipe = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except PersynError as problem:
            self.error(str(problem))
        except yaml.YAMLError as problem:
            mark = getattr(problem, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            self.error(f"The recipe {path!r} is not valid YAML{where}: {getattr(problem, 'problem', problem)}.")
        if not isinstance(recipe, dict):
            self.error(
                f"The recipe {path!r} must be a YAML mapping of `field: value` lines, got {type(recipe).__name__} "
                f"{recipe!r:.60}."
            )
        return path, recipe

    def _check_names(self, path: str | None, recipe: dict, args: list[str]) -> None:
        """Report every key of the recipe and every flag that names no field, with the closest field."""
        fields = [action.dest for action in self._actions if action.dest != "help"]
        problems = [
            f"unknown key `{key}` in the recipe {path!r}{_closest(str(key), fields)}"
            for key in recipe
            if key not in fields and key != "env"  # TRL sets the environment variables under `env`
        ]
        flags = [arg.split("=", 1)[0] for arg in _without_config(args) if arg.startswith("--") and arg != "--"]
        problems += [
            f"unknown flag `{flag}`{_closest(flag[2:], fields, prefix='--')}"
            for flag in flags
            if flag not in self._option_string_actions
        ]
        if problems:
            self.error(f"{'; '.join(problems)} (`{self.prog} --help` lists the fields).")

    def _check_values(self, path: str | None, recipe: dict) -> None:
        """Report the first recipe value that its field's type cannot take (a list for a number, null for a field
        that needs a value): the dataclass would take it as it is."""
        nullable = self._nullable_fields()
        for key, value in recipe.items():
            action = self._option_string_actions.get(f"--{key}")
            if action is None:  # `env`
                continue
            if value is None and key not in nullable:
                self.error(
                    f"`{key}` in the recipe {path!r} is null: give it a value, or drop the key for its default."
                )
            if value is not None and action.nargs not in ("+", "*") and action.type in VALUE_KINDS:
                try:
                    action.type(str(value))
                except (ValueError, TypeError, ArgumentTypeError):
                    self.error(f"`{key}` in the recipe {path!r} must be {VALUE_KINDS[action.type]}, got {value!r}.")

    def _nullable_fields(self) -> set[str]:
        """Fields that take null: typed `X | None`, or None by default."""
        nullable = set()
        for dataclass_type in self.dataclass_types:
            hints = typing.get_type_hints(dataclass_type)
            nullable |= {
                field.name
                for field in dataclasses.fields(dataclass_type)
                if field.default is None or type(None) in typing.get_args(hints[field.name])
            }
        return nullable


VALUE_KINDS = {int: "an integer", float: "a number", string_to_bool: "true or false"}


def _split_config_flag(args: list[str]) -> list[str]:
    """`--config=path` as TRL reads it: `--config path`."""
    return [part for arg in args for part in (arg.split("=", 1) if arg.startswith("--config=") else [arg])]


def _without_config(args: list[str]) -> list[str]:
    if "--config" not in args:
        return args
    index = args.index("--config")
    return args[:index] + args[index + 2 :]


def _closest(name: str, names: list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(name, names, n=1)
    return f" (did you mean `{prefix}{close[0]}`?)" if close else ""


def parse_args(parser, argv: list[str]):
    """Parse `argv` with a verb's parser: YAML gives defaults, flags override, unknown keys are errors.

    With a `RecipeParser`, a recipe that cannot be read and unknown keys are reported first; a config's own check
    (an invalid value) is reported as it raises it. Each ends the run with a one-line usage error (exit status 2).
    """
    try:
        return parser.parse_args_and_config(argv)
    except ValueError as error:  # a config's own check, run as its dataclass is built
        parser.error(str(error))


def load_recipe(parser, path: str, *positional: str, **overrides) -> tuple:
    """The dataclasses of `parser` from a YAML recipe and keyword overrides, without a command line.

    The same strict parsing as the CLI (`parse_args`), for Python callers such as `persyn-hf demo`.
    """
    argv = [*positional, "--config", str(path)]
    for key, value in overrides.items():
        argv += [f"--{key}", str(value)]
    return parse_args(parser, argv)


def configure_logging(level: str) -> None:
    """Show persyn-hf's log records of `level` and above on stderr."""
    logger = logging.getLogger("persyn_hf")
    if not any(getattr(handler, "persyn_hf", False) for handler in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[persyn-hf] %(message)s"))
        handler.persyn_hf = True
        logger.addHandler(handler)
    logger.setLevel(level.upper())


def _global_options(argv: list[str]) -> tuple[bool, str, list[str]]:
    """(debug, log level, the rest) from the options before the verb and the environment."""
    debug = os.environ.get("PERSYN_HF_DEBUG", "") not in ("", "0")
    level = os.environ.get("PERSYN_HF_LOG_LEVEL", "info").lower()
    while argv and argv[0].startswith("--") and argv[0] not in ("--help", "--version"):
        option, argv = argv[0], argv[1:]
        if option == "--debug":
            debug = True
        elif option == "--log_level" and argv:
            level, argv = argv[0].lower(), argv[1:]
        else:
            sys.exit(f"persyn-hf: unknown option {option!r}; options before the verb: --debug, --log_level")
    if level not in LOG_LEVELS:
        sys.exit(f"persyn-hf: `--log_level` must be one of {list(LOG_LEVELS)}, got {level!r}")
    return debug, level, argv


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    debug, level, argv = _global_options(list(argv))
    if not argv or argv[0] in ("-h", "--help"):
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
        sys.exit(f"persyn-hf: unknown verb {verb!r}; choose one of: {', '.join(VERBS)}{hint}")
    module = importlib.import_module(VERBS[verb][0])
    if {"-h", "--help"} & set(rest) and hasattr(module, "make_help_parser"):
        # verbs built on `TrainingArguments` list its fields only with `--help-all`: importing them takes seconds
        parser = module.make_help_parser()
        parser.prog = f"persyn-hf {verb}"
        parser.print_help()
        return
    rest = ["--help" if arg == "--help-all" else arg for arg in rest]
    configure_logging(level)
    parser = module.make_parser()
    parser.prog = f"persyn-hf {verb}"
    try:
        module.main(*parse_args(parser, rest))
    except PersynError as error:
        if debug:
            raise
        sys.exit(f"persyn-hf {verb}: error: {error} (`persyn-hf --debug {verb} ...` shows the traceback)")


def run_script(verb: str) -> None:
    """`python -m persyn_hf.scripts.<verb> ...` (and `accelerate launch -m ...`): the same as `persyn-hf <verb> ...`."""
    main([verb, *sys.argv[1:]])


if __name__ == "__main__":
    main()
