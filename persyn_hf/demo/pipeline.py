"""`persyn-hf demo`: the whole method on the demo world, stage by stage, through the stages' Python API.

Every stage runs the recipe in `persyn_hf/demo/recipes/<stage>/` (the repository's `recipes/demo/`), parsed as
strictly as `persyn-hf <verb> --config ...` parses it, with this run's paths filled in, through the stage's `run`;
only the world (problems, teachers, student) is made here.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from persyn_hf.cost import generate_then_select, route_then_generate
from persyn_hf.errors import ConfigError
from persyn_hf.scripts import VERBS
from persyn_hf.scripts.parser import load_recipe
from persyn_hf.store import ArtifactStore, check_writable
from persyn_hf.teachers import load_teachers

RECIPES_DIR = Path(__file__).with_name("recipes")

STRATEGIES = [
    "persyn",
    "oracle",
    "strong",
    "mix",
    "family_strong",
    "car",
    "persyn_wo_quality",
    "persyn_wo_learnability",
]

# Strategies whose assignments come from a trained router, with the reward mix α (Eq. 2) it is trained on: PerSyn,
# and its ablations without the quality term (α = 1) and without the learnability term (α = 0).
ROUTED = {"persyn": 0.4, "persyn_wo_quality": 1.0, "persyn_wo_learnability": 0.0}
ROUTERS = {
    "persyn": "demo/persyn-router",
    "persyn_wo_quality": "demo/persyn-router-wo-quality",
    "persyn_wo_learnability": "demo/persyn-router-wo-learnability",
}

QUICK_STEPS = 100


@dataclass
class DemoArguments:
    """The demo world and where its run goes.

    Parameters:
        num_prompts (`int`): Size of the prompt set X the students are distilled on.
        router_prompts (`int`): Size of the subset X_sub every teacher answers, to train the router.
        test_prompts (`int`): Size of the held-out split the students are evaluated on.
        teachers (`str`, *optional*): Teachers YAML (default: the demo world's); relative `model_path`s are
            resolved against `cache_dir`.
        seed (`int`): Seed of the world (problems, sampling, training).
        quick (`bool`): A smaller world: fewer training steps for teachers, student and SFT.
        output_dir (`str`): Where `results.json`, the allocation chart and the stage outputs go.
        cache_dir (`str`): Where the trained tokenizer, teachers and student are kept between runs.
        store_root (`str`): The local artifact store every stage writes to.
        recipes_dir (`str`, *optional*): The folder of the stage recipes the demo runs (default: the packaged ones).
    """

    num_prompts: int = field(default=1000, metadata={"help": "Size of the prompt set X."})
    router_prompts: int = field(default=250, metadata={"help": "Size of X_sub, answered by every teacher."})
    test_prompts: int = field(default=200, metadata={"help": "Size of the held-out evaluation split."})
    teachers: str | None = field(default=None, metadata={"help": "Teachers YAML (default: the demo world's)."})
    seed: int = field(default=42, metadata={"help": "Seed of the world."})
    quick: bool = field(default=False, metadata={"help": "A smaller, faster world (used by the tests)."})
    output_dir: str = field(default="outputs/demo", metadata={"help": "Where results and stage outputs go."})
    cache_dir: str = field(default=".cache/persyn-demo", metadata={"help": "Trained teachers and student."})
    store_root: str = field(default="outputs/demo/store", metadata={"help": "The local artifact store."})
    recipes_dir: str | None = field(
        default=None, metadata={"help": "The stage recipes the demo runs (default: the packaged ones)."}
    )

    def __post_init__(self):
        self.recipes_dir = self.recipes_dir or str(RECIPES_DIR)
        if not Path(self.recipes_dir).is_dir():
            raise ConfigError(
                f"`recipes_dir` {self.recipes_dir!r} is not a folder: give the folder of the stage recipes."
            )
        self.teachers = self.teachers or str(Path(self.recipes_dir) / "teachers.yaml")
        if not 2 <= self.router_prompts <= self.num_prompts:
            raise ConfigError(
                f"`router_prompts` must be in [2, num_prompts={self.num_prompts}], got {self.router_prompts}"
            )


class Demo:
    """One demo run: the world, then each stage's verb on its recipe."""

    def __init__(self, args: DemoArguments):
        self.args = args
        self.out = Path(args.output_dir)
        self.store = ArtifactStore(args.store_root)
        for name in ("output_dir", "store_root"):  # before the world is trained: minutes of work
            check_writable(getattr(args, name), f"`{name}` {getattr(args, name)!r}", f"choose another `{name}`")
        self.teachers = load_teachers(args.teachers)
        self.timings: dict[str, float] = {}
        self.assignments: dict[str, object] = {}  # strategy -> its assignments dataset
        self.router_metrics: dict[str, float] = {}

    def run_verb(self, verb: str, recipe: str, *positional: str, **overrides):
        """The stage of `persyn-hf <verb>` on `recipes/demo/<recipe>` with `overrides`, run through its Python API in
        this process and this run's store; returns its `StageResult`."""
        script = importlib.import_module(VERBS[verb][0])
        path = Path(self.args.recipes_dir) / recipe
        *configs, _ = load_recipe(script.make_parser(), path, *positional, **overrides)
        return script.run(*configs, store=self.store)

    def timed(self, name: str, fn, *args, **kwargs):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        self.timings[name] = round(time.perf_counter() - start, 1)
        print(f"[persyn-hf demo] {name}: {self.timings[name]} s")
        return result

    # The world -------------------------------------------------------------------------------------

    def build_world(self) -> tuple[str, str]:
        """Train (or reuse) the tokenizer, teachers and student; write the prompts; returns (teachers YAML, student)."""
        from persyn_hf.demo.models import (
            STUDENT_RECIPE,
            TEACHER_RECIPES,
            pretrain_student,
            train_teacher,
            world_tokenizer,
        )
        from persyn_hf.demo.world import make_problems, problems_dataset

        args, cache = self.args, Path(self.args.cache_dir)
        tokenizer = world_tokenizer(cache, seed=args.seed)
        unknown = sorted({t.name for t in self.teachers} - set(TEACHER_RECIPES))
        if unknown:
            raise ConfigError(
                f"Demo teachers {unknown} have no recipe; the demo world knows {sorted(TEACHER_RECIPES)}"
            )
        resolved = []
        for spec in self.teachers:
            recipe = self._scaled(TEACHER_RECIPES[spec.name])
            path = train_teacher(tokenizer, recipe, cache / "teachers", num_examples=1600 if args.quick else 8000)
            resolved.append({**dataclasses.asdict(spec), "model_path": path})
        student = pretrain_student(tokenizer, self._scaled(STUDENT_RECIPE), cache / "student")
        self.out.mkdir(parents=True, exist_ok=True)
        teachers_file = self.out / "teachers.yaml"
        teachers_file.write_text(yaml.safe_dump({"teachers": resolved}, sort_keys=False))

        train = make_problems(args.num_prompts, args.seed, split="train")
        subset = problems_dataset(train).shuffle(seed=args.seed).select(range(args.router_prompts))
        self.store.save_dataset("demo/prompts", problems_dataset(train))
        self.store.save_dataset("demo/prompts", subset, config_name="router")
        test = problems_dataset(make_problems(args.test_prompts, args.seed, split="test"))
        self.store.save_dataset("demo/prompts", test, config_name="heldout", split="test")
        return str(teachers_file), student

    def _scaled(self, recipe):
        return dataclasses.replace(recipe, steps=QUICK_STEPS) if self.args.quick else recipe

    # The method ------------------------------------------------------------------------------------

    def run(self) -> list[dict]:
        teachers, student = self.timed("world", self.build_world)
        paths = {"teachers": teachers, "results_dir": str(self.out / "generation-results")}
        # Generate then Select on X_sub: every teacher answers the router's subset
        self.timed("generate_router_subset", self.run_verb, "generate", "generate/config_router_subset.yaml", **paths)
        # Route then Generate on X, with PerSyn's router and the two ablations' (rewards without one term)
        for strategy, alpha in ROUTED.items():
            self.route_then_generate(strategy, alpha, teachers, student, paths)
        # The baselines and the Oracle need every teacher's answer to all of X (Generate then Select)
        self.timed("generate_parallel", self.run_verb, "generate", "generate/config_parallel.yaml", **paths)
        self.timed("score_parallel", self.run_verb, "score", "score/config_parallel.yaml", student=student)
        return [self.distill(strategy, teachers, student) for strategy in STRATEGIES]

    def route_then_generate(self, strategy: str, alpha: float, teachers: str, student: str, paths: dict) -> None:
        """Score X_sub with reward mix `alpha`, train a router on it, route X, and generate the routed answers."""
        scores, router = f"demo/scores-router-{strategy}", ROUTERS[strategy]
        self.timed(
            f"score_router_subset_{strategy}",
            self.run_verb,
            "score",
            "score/config_router_subset.yaml",
            student=student,
            alpha=alpha,
            scores_repo_id=scores,
        )
        trained = self.timed(
            f"train_router_{strategy}",
            self.run_verb,
            "train-router",
            "router/config_demo.yaml",
            teachers=teachers,
            model_name_or_path=student,
            scores_repo_id=scores,
            router_repo_id=router,
            output_dir=self.out / "router-training" / strategy,
            **self._quick_training(),
        )
        if strategy == "persyn":
            self.router_metrics = trained.summary["metrics"]
        assignments = f"demo/assignments-{strategy}"
        routed = self.timed(
            f"route_{strategy}",
            self.run_verb,
            "route",
            "route/config_demo.yaml",
            router_repo_id=router,
            assignments_repo_id=assignments,
        )
        self.assignments[strategy] = routed.artifact
        self.timed(
            f"generate_routed_{strategy}",
            self.run_verb,
            "generate",
            "generate/config_routed.yaml",
            assignments_repo_id=assignments,
            generations_config=f"routed-{strategy}",
            **paths,
        )

    def distill(self, strategy: str, teachers: str, student: str) -> dict:
        """Select (or route), build the personalized dataset, fine-tune the student and evaluate it."""
        if strategy not in ROUTED:
            selected = self.run_verb(
                "select",
                "select/config_demo.yaml",
                teachers=teachers,
                strategy=strategy,
                assignments_repo_id=f"demo/assignments-{strategy}",
            )
            self.assignments[strategy] = selected.artifact
        generations = f"routed-{strategy}" if strategy in ROUTED else "parallel"
        self.run_verb(
            "build",
            "build/config_personalized.yaml",
            "personalized",
            teachers=teachers,
            student=student,
            strategy=strategy,
            assignments_repo_id=f"demo/assignments-{strategy}",
            generations_config=generations,
        )
        self.run_verb(
            "sft",
            "sft/config_demo.yaml",
            model_name_or_path=student,
            dataset_config=strategy,
            student_repo_id=f"demo/student-{strategy}",
            output_dir=self.out / "sft" / strategy,
            **self._quick_training(),
        )
        evaluated = self.run_verb(
            "eval",
            "eval/config_demo.yaml",
            model_name_or_path=f"demo/student-{strategy}",
            output_dir=self.out / "eval" / strategy,
        )
        return self._result(strategy, evaluated.summary["tasks"]["persyn_heldout"]["accuracy"])

    # Results ---------------------------------------------------------------------------------------

    def _quick_training(self) -> dict:
        return {"max_steps": 6} if self.args.quick else {}

    def generations_needed(self, strategy: str, num_teachers: int) -> int:
        """Teacher generations a strategy needs on its own (rejection-sampling attempts not counted)."""
        N, S = self.args.num_prompts, self.args.router_prompts
        if strategy in ROUTED or strategy == "car":  # the parallel subset, then one teacher per prompt
            return route_then_generate(N, num_teachers, S)
        if strategy == "oracle":  # every teacher's answer to all of X
            return generate_then_select(N, num_teachers)
        return N  # strong, family_strong, mix: one teacher per prompt, chosen up front

    def _result(self, strategy: str, accuracy: float) -> dict:
        assigned = self.assignments[strategy]["teacher"]
        teachers = [t.name for t in self.teachers]
        return {
            "strategy": strategy,
            "accuracy": accuracy,
            "generations": self.generations_needed(strategy, len(teachers)),
            "allocation": {t: assigned.count(t) / len(assigned) for t in teachers},
        }


def results_table(results: list[dict]) -> str:
    """The demo's comparison table: strategy, held-out accuracy, generations, allocation."""
    teachers = list(results[0]["allocation"])
    header = f"| strategy | accuracy | generations | {' | '.join(teachers)} |"
    lines = [header, "|" + "---|" * (3 + len(teachers))]
    for row in results:
        shares = " | ".join(f"{row['allocation'][t]:.0%}" for t in teachers)
        lines.append(f"| {row['strategy']} | {row['accuracy']:.3f} | {row['generations']} | {shares} |")
    return "\n".join(lines)


def run_demo(args: DemoArguments) -> dict:
    """Run the demo; print the table and write `results.json` and the allocation chart to `output_dir`."""
    from persyn_hf.cards import allocation_chart

    demo = Demo(args)
    start = time.perf_counter()
    results = demo.run()
    report = {
        "results": results,
        "router": {"hit_at_3": demo.router_metrics.get("hit_at_3")},
        "wall_time_s": {**demo.timings, "total": round(time.perf_counter() - start, 1)},
        "world": dataclasses.asdict(args),
    }
    (demo.out / "results.json").write_text(json.dumps(report, indent=2))
    persyn = next(r for r in results if r["strategy"] == "persyn")
    counts = {t: round(share * args.num_prompts) for t, share in persyn["allocation"].items()}
    allocation_chart(counts, demo.teachers, demo.out / "allocation_persyn.png", "PerSyn allocation (demo)")
    print(results_table(results))
    print(f"router Hit@3 on held-out subset prompts: {report['router']['hit_at_3']}")
    print(f"wall time: {report['wall_time_s']['total']} s; results in {demo.out / 'results.json'}")
    return report
