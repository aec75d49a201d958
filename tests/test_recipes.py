"""Every recipe parses with its verb's parser; the real-run recipes chain (each stage reads what an earlier one wrote).

Parsing only: no model, no dataset, no network. A recipe's verb is its folder's name (`router` -> `train-router`);
`build/config_<builder>.yaml` goes through `persyn-hf build <builder>`, teachers YAMLs through `load_teachers`,
`recipes/demo/config_*.yaml` through the demo parser.
"""

import importlib
import re
from pathlib import Path

import pytest
import yaml

from persyn_hf.scripts import VERBS
from persyn_hf.scripts.build import BUILDERS
from persyn_hf.teachers import load_teachers

ROOT = Path(__file__).parent.parent
RECIPES = ROOT / "recipes"
STUDENT = "recipes/Qwen2.5-1.5B-Instruct"
FOLDER_VERBS = {"router": "train-router"}


def _recipes() -> list[Path]:
    return sorted(p for p in RECIPES.rglob("*.yaml") if "accelerate_configs" not in p.relative_to(RECIPES).parts)


def _is_teachers(path: Path) -> bool:
    return path.name == "teachers.yaml" or path.parent == RECIPES / "teachers"


def _verb(path: Path) -> tuple[str, str | None]:
    """(verb, builder) of a recipe."""
    if path.parent == RECIPES / "demo":
        return "demo", None
    if path.parent.name == "build":
        return "build", path.stem.removeprefix("config_")
    return FOLDER_VERBS.get(path.parent.name, path.parent.name), None


def parse(recipe: str | Path, *overrides: str) -> tuple:
    """The recipe's dataclasses as its verb parses them (`build`: the builder's name first)."""
    path = ROOT / recipe
    verb, builder = _verb(path)
    argv = ["--config", str(path), *overrides]
    if yaml.safe_load(path.read_text()).get("bf16"):
        argv += ["--bf16", "false"]  # this CPU-only machine cannot check bf16; the recipes target GPUs
    parser = importlib.import_module(VERBS[verb][0]).make_parser()
    return parser.parse_args_and_config([builder, *argv] if builder else argv)


@pytest.mark.parametrize("recipe", _recipes(), ids=lambda p: str(p.relative_to(RECIPES)))
def test_recipe_parses(recipe):
    if _is_teachers(recipe):
        assert load_teachers(recipe)
        return
    verb, builder = _verb(recipe)
    assert verb in VERBS, f"{recipe}: no verb {verb!r}"
    if builder is not None:
        assert builder in BUILDERS, f"{recipe}: no builder {builder!r}"
    parsed = parse(recipe.relative_to(ROOT))
    assert parsed and all(arg is not None for arg in parsed)


# Chains --------------------------------------------------------------------------------------------------------------


def _dataset(repo_id, config="default", split="train") -> tuple:
    return ("dataset", repo_id, config, split)


def _model(repo_id) -> tuple:
    return ("model", repo_id, None, None)


def artifacts(recipe: str, *overrides: str) -> tuple[set, set, dict]:
    """(artifacts read, artifacts written, facts to compare along a chain) of one recipe."""
    verb, builder = _verb(ROOT / recipe)
    parsed = parse(recipe, *overrides)
    reads, writes, facts = set(), set(), {}
    if verb == "build":
        config = parsed[1]
        out = config.dataset_repo_id if builder == "personalized" else config.output_repo_id
        facts["teachers"] = config.teachers
        if builder == "magpie_zoo":
            writes = {_dataset(out, c, s) for c in ("prompts", "generations") for s in ("train", "router")}
        elif builder == "persyn_math":
            writes = {_dataset(out, c) for c in ("default", "prompts", "generations")}
        else:
            reads = {
                _dataset(config.assignments_repo_id, config.assignments_config),
                _dataset(config.generations_repo_id, config.generations_config),
                _dataset(config.prompts_repo_id, config.prompts_config),
            }
            if config.scores_repo_id:
                reads.add(_dataset(config.scores_repo_id, config.scores_config))
            writes = {_dataset(out, config.strategy)}
            facts["student"] = config.student
    elif verb == "generate":
        args, synthesis = parsed[0], parsed[1]
        reads = {_dataset(args.prompts_repo_id, args.prompts_config, args.prompts_split)}
        if synthesis.mode == "routed":
            assert args.assignments_repo_id, f"{recipe}: routed generation needs `assignments_repo_id`"
            reads.add(_dataset(args.assignments_repo_id, args.assignments_config, args.assignments_split))
        writes = {_dataset(args.generations_repo_id, args.generations_config)}
        facts["teachers"] = args.teachers
    elif verb == "score":
        args = parsed[0]
        reads = {
            _dataset(args.generations_repo_id, args.generations_config, args.generations_split),
            _dataset(args.prompts_repo_id, args.prompts_config, args.prompts_split),
        }
        writes = {_dataset(args.scores_repo_id)}
        facts["student"] = args.student
    elif verb == "train-router":
        args = parsed[0]
        reads = {
            _dataset(args.scores_repo_id, args.scores_config),
            _dataset(args.prompts_repo_id, args.prompts_config, args.prompts_split),
        }
        writes = {_model(args.router_repo_id)}
        facts["teachers"] = args.teachers  # the student and α come with the scores (their card)
    elif verb == "route":
        args = parsed[0]
        reads = {_model(args.router_repo_id), _dataset(args.prompts_repo_id, args.prompts_config, args.prompts_split)}
        writes = {_dataset(args.assignments_repo_id, args.assignments_config)}
    elif verb == "select":
        args, selection, store = parsed
        reads = {_dataset(args.prompts_repo_id, args.prompts_config)}
        if args.scores_repo_id:
            reads.add(_dataset(args.scores_repo_id))
        if selection.strategy == "persyn":
            reads.add(_model(selection.router_repo_id))
        writes = {_dataset(args.assignments_repo_id)}
        facts["teachers"] = args.teachers
    elif verb == "sft":
        args, model = parsed[0], parsed[2]
        reads = {_dataset(args.dataset_repo_id, args.dataset_config, args.dataset_train_split)}
        if args.router_repo_id:
            reads.add(_model(args.router_repo_id))
        writes = {_model(args.student_repo_id)}
        facts["student"] = model.model_name_or_path
    elif verb == "eval":
        args = parsed[0]
        reads = {_model(args.model_name_or_path)}
        if args.heldout_repo_id:
            reads.add(_dataset(args.heldout_repo_id, args.heldout_config, args.heldout_split))
    else:
        raise AssertionError(f"{recipe}: verb {verb!r} has no place in a chain")
    return reads, writes, facts


# Inputs no verb writes: the held-out problems are saved to the store (or the Hub) by hand.
EXTERNAL = {_dataset("persyn/persyn-math-heldout", "default", "test")}

MATH_ROUTED = [
    ("recipes/persyn_math/build/config_persyn_math.yaml",),
    (f"{STUDENT}/score/config_math.yaml",),
    (f"{STUDENT}/router/config_math.yaml",),
    (f"{STUDENT}/route/config_math.yaml",),
    (f"{STUDENT}/generate/config_routed.yaml",),
    ("recipes/persyn_math/build/config_personalized.yaml",),
    (f"{STUDENT}/sft/config_math.yaml",),
    (f"{STUDENT}/eval/config_math.yaml",),
    (f"{STUDENT}/eval/config_heldout.yaml",),
]
INSTRUCT = [
    ("recipes/magpie_zoo/build/config_magpie_zoo.yaml",),
    (f"{STUDENT}/score/config_instruct.yaml",),
    (f"{STUDENT}/router/config_instruct.yaml",),
    (f"{STUDENT}/select/config_instruct.yaml",),
    ("recipes/magpie_zoo/build/config_personalized.yaml",),
    (f"{STUDENT}/sft/config_instruct.yaml",),
    (f"{STUDENT}/eval/config_instruct.yaml",),
]


def _replace(chain: list, old: str, *new: tuple) -> list:
    i = [stage[0] for stage in chain].index(old)
    return [*chain[:i], *new, *chain[i + 1 :]]


def _baseline(chain: list, select: str, personalized: str, sft: str, dataset: str, *generations: str) -> list:
    """The chain with a baseline (oracle) assigned by `select` in place of the router, built and trained."""
    start = [stage[0] for stage in chain].index(personalized)
    assignments = f"persyn/{dataset}-assignments-Qwen2.5-1.5B-Instruct-oracle"
    return [
        *chain[:start],
        (select, "--strategy", "oracle"),
        (personalized, "--strategy", "oracle", "--assignments_repo_id", assignments, *generations),
        (sft, "--dataset_config", "oracle"),
        *chain[start + 2 :],
    ]


CHAINS = {
    # build persyn_math -> score -> train-router -> route -> generate (routed) -> build personalized -> sft -> eval
    "math": MATH_ROUTED,
    # ... select --strategy persyn in place of route
    "math-select": _replace(MATH_ROUTED, f"{STUDENT}/route/config_math.yaml", (f"{STUDENT}/select/config_math.yaml",)),
    # ... Generate-then-Select on the 2.5K router subset of the PerSyn-Math prompts, scored in place of the build's
    "math-router-subset": _replace(
        MATH_ROUTED,
        f"{STUDENT}/score/config_math.yaml",
        (f"{STUDENT}/generate/config_parallel.yaml",),
        (f"{STUDENT}/score/config_math.yaml", "--generations_repo_id", "persyn/persyn-math-router-subset"),
    ),
    # ... a baseline from the parallel scores, built on the build's parallel responses
    "math-oracle": _baseline(
        [stage for stage in MATH_ROUTED if "route/" not in stage[0] and "generate/" not in stage[0]],
        f"{STUDENT}/select/config_baselines_math.yaml",
        "recipes/persyn_math/build/config_personalized.yaml",
        f"{STUDENT}/sft/config_math.yaml",
        "persyn-math",
        "--generations_repo_id",
        "persyn/persyn-math",
        "--generations_config",
        "generations",
    ),
    # build magpie_zoo -> score (router split) -> train-router -> select --strategy persyn -> build personalized -> ...
    "instruct": INSTRUCT,
    "instruct-route": _replace(
        INSTRUCT, f"{STUDENT}/select/config_instruct.yaml", (f"{STUDENT}/route/config_instruct.yaml",)
    ),
    "instruct-oracle": _baseline(
        [stage for stage in INSTRUCT if "select/" not in stage[0]],
        f"{STUDENT}/select/config_baselines_instruct.yaml",
        "recipes/magpie_zoo/build/config_personalized.yaml",
        f"{STUDENT}/sft/config_instruct.yaml",
        "magpie-zoo",
    ),
}


@pytest.mark.parametrize("name", list(CHAINS))
def test_recipes_chain(name):
    """Each stage reads only what an earlier stage of its chain wrote, and each stage but the last feeds a later one;
    the stages agree on the teacher pool and the student."""
    stages = [(stage[0], artifacts(*stage)) for stage in CHAINS[name]]
    written = set()
    for recipe, (reads, writes, _) in stages:
        missing = reads - written - EXTERNAL
        assert not missing, f"{name}: {recipe} reads {sorted(missing)}, which no earlier stage writes ({written})"
        written |= writes
    for i, (recipe, (_, writes, _)) in enumerate(stages):
        if writes:
            later = set().union(*(reads for _, (reads, _, _) in stages[i + 1 :]))
            assert writes & later, f"{name}: nothing reads what {recipe} writes ({sorted(writes)})"
    for fact in ("teachers", "student"):
        values = {recipe: facts[fact] for recipe, (_, _, facts) in stages if fact in facts}
        assert len(set(values.values())) == 1, f"{name}: the stages disagree on the {fact}: {values}"


def test_readmes_name_existing_recipes():
    """Every recipe path the READMEs name exists (the chains above are the ones they spell out)."""
    for readme in (ROOT / "README.md", RECIPES / "README.md"):
        named = set(re.findall(r"recipes/[\w./-]+\.yaml", readme.read_text()))
        assert named, readme
        missing = sorted(path for path in named if not (ROOT / path).exists())
        assert not missing, f"{readme} names recipes that do not exist: {missing}"
