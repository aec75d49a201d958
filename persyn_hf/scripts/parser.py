"""How every verb reads its recipe: `RecipeParser`, strict and one line per error, and `load_recipe` for Python.

`--config recipe.yaml` gives the defaults, flags override them. A recipe that cannot be read, an unknown key or flag
(with the closest valid name) and a value of the wrong type are reported before any config class is built (and runs
its own checks); each is one line on stderr and exit status 2.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import sys
import typing
from argparse import ArgumentTypeError
from pathlib import Path

import yaml
from transformers.hf_argparser import string_to_bool
from trl import TrlParser

from persyn_hf.errors import PersynError, check_utf8


class RecipeParser(TrlParser):
    """A verb's `TrlParser`, strict about its recipe, whose errors are one line (no usage text).

    Before any dataclass is built (and runs its own checks), it reports a recipe that cannot be read, every unknown
    key or flag (with the closest valid name) and a value of the wrong type, naming the recipe file.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault(
            "epilog",
            "Every field can come from a YAML recipe, `--config recipe.yaml`; flags override it (`--field value`).",
        )
        super().__init__(*args, **kwargs)

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
