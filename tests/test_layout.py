"""The package's shape: the import graph flows one way, and importing it or asking a verb for help stays light."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from persyn_hf.scripts import VERBS

PACKAGE = Path(__file__).resolve().parents[1] / "persyn_hf"
STAGES = ("generate", "score", "train_router", "route", "select", "sft", "evaluation", "builders")
# What each layer may import from persyn_hf (at any depth, lazily too): the bottom knows nothing above it.
ALLOWED = {
    "errors": set(),
    "contracts": {"errors"},
    "configs": {"errors"},
    "verify": set(),
    "router": set(),  # self-contained: it ships with the weights as remote code
}


def persyn_imports(path: Path) -> set[str]:
    """The persyn_hf modules `path` imports, as `persyn_hf`-relative dotted names."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name.removeprefix("persyn_hf.") for name in names if name.startswith("persyn_hf.")}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")


MODULES = {module_name(path): persyn_imports(path) for path in PACKAGE.rglob("*.py")}


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_the_bottom_layers_import_only_what_is_below_them(layer):
    imported = set().union(*(deps for name, deps in MODULES.items() if name.split(".")[0] == layer))
    assert {dep.split(".")[0] for dep in imported} <= ALLOWED[layer]


def test_only_the_cli_and_the_demo_reach_the_scripts():
    for name, deps in MODULES.items():
        if any(dep.split(".")[0] in ("scripts", "cli") for dep in deps):
            assert name.split(".")[0] in ("scripts", "cli", "demo"), f"{name} imports the command line: {deps}"


def test_stages_do_not_import_each_others_internals():
    """A stage may call another stage's public `run`-level functions, never its private helpers."""
    for path in PACKAGE.rglob("*.py"):
        if module_name(path).split(".")[0] not in STAGES:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("persyn_hf."):
                private = [alias.name for alias in node.names if alias.name.startswith("_")]
                assert not private, f"{module_name(path)} imports private {private} from {node.module}"


def imported_after(code: str) -> list[str]:
    heavy = ("torch", "datasets", "transformers.modeling_utils", "trl.trainer.sft_trainer", "lm_eval", "peft")
    probe = f"import sys\n{code}\nprint([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return eval(result.stdout.strip().splitlines()[-1])


def test_import_loads_no_framework():
    assert imported_after("import persyn_hf") == []


@pytest.mark.parametrize("verb", ["generate", "score", "select", "route", "build", "eval", "demo"])
def test_a_verbs_parser_loads_no_framework(verb):
    assert imported_after(f"import {VERBS[verb][0]} as m; m.make_parser()") == []


@pytest.mark.parametrize("verb", ["train-router", "sft"])
def test_a_training_verbs_help_loads_no_framework(verb):
    assert imported_after(f"import {VERBS[verb][0]} as m; m.make_help_parser()") == []


def test_importing_persyn_hf_registers_the_router_whatever_the_order():
    code = (
        "from transformers import AutoModel\n"
        "import persyn_hf\n"
        "from persyn_hf.router import PersynRouterConfig, PersynRouterModel\n"
        "assert AutoModel._model_mapping[PersynRouterConfig] is PersynRouterModel\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
