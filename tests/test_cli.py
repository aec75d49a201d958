"""`persyn-hf` dispatches verbs, and every verb parses its recipe strictly."""

import subprocess
import sys
from pathlib import Path

import pytest

from persyn_hf.cli import _global_options, main
from persyn_hf.scripts import VERBS


def test_help_lists_every_verb_with_one_line():
    console_script = Path(sys.executable).with_name("persyn-hf")  # installed beside the interpreter
    result = subprocess.run([str(console_script), "--help"], capture_output=True, text=True, check=True)
    for verb, (_, help_line) in VERBS.items():
        assert f"  {verb:<14}{help_line}" in result.stdout


def test_unknown_verb_names_the_choices(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["trian"])
    assert exit_info.value.code == 2
    assert "persyn-hf: error: unknown verb 'trian'; choose one of: generate, score" in capsys.readouterr().err


def test_no_verb_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2 and "usage: persyn-hf" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--verbose", "route"], "unknown option '--verbose'; options before the verb: --debug, --log_level"),
        (["--log_level", "loud", "route"], "`--log_level` must be one of ['debug', 'info', 'warning', 'error'], got 'loud'"),
        (["--log_level"], "`--log_level` needs a value, one of ['debug', 'info', 'warning', 'error']"),
    ],
)  # fmt: skip
def test_a_bad_option_before_the_verb_is_a_usage_error(options, message, capsys, monkeypatch):
    monkeypatch.delenv("PERSYN_HF_LOG_LEVEL", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(options)
    assert (exit_info.value.code, capsys.readouterr().err) == (2, f"persyn-hf: error: {message}\n")


@pytest.mark.parametrize("options", [["--log_level", "DEBUG"], ["--log_level=DEBUG"]])
def test_the_log_level_is_read_with_or_without_equals(options, monkeypatch):
    monkeypatch.delenv("PERSYN_HF_DEBUG", raising=False)
    assert _global_options([*options, "route", "--config", "r.yaml"]) == (
        False,
        "debug",
        ["route", "--config", "r.yaml"],
    )


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_every_verb_has_a_parser_and_main(verb, capsys):
    import importlib

    from trl import TrlParser

    module = importlib.import_module(VERBS[verb][0])
    parser = module.make_parser()
    assert callable(module.main) and isinstance(parser, TrlParser)
    with pytest.raises(SystemExit, match="0"):
        parser.parse_args_and_config(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "usage:" in shown and "`--config recipe.yaml`; flags override it" in shown


def test_unknown_recipe_key_is_an_error_naming_it(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("router_repo_id: r\nprompts_repo_id: p\nassignments_repo_id: a\nbatch_sise: 8\n")
    result = subprocess.run(
        [sys.executable, "-m", "persyn_hf.cli", "route", "--config", str(recipe)], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"persyn-hf route: error: unknown key `batch_sise` in the recipe {str(recipe)!r} (did you mean `batch_size`?) "
        "(`persyn-hf route --help` lists the fields).\n"
    )


def test_unknown_flag_is_an_error_naming_it(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("router_repo_id: r\nprompts_repo_id: p\nassignments_repo_id: a\n")
    result = subprocess.run(
        [sys.executable, "-m", "persyn_hf.cli", "route", "--config", str(recipe), "--no_such_flag", "1"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "persyn-hf route: error: unknown flag `--no_such_flag`" in result.stderr
    assert len(result.stderr.splitlines()) == 1
