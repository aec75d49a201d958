"""`persyn-hf demo`: the whole method on the demo world, stage by stage, through the real verbs.

Every stage runs the recipe in `recipes/demo/<stage>/` through the same parser and `main` as
`persyn-hf <verb> --config ...`, with this run's paths filled in; only the world (problems, teachers,
student) is made here.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from huggingface_hub import ModelCard

from persyn_hf.cli import parse_args
from persyn_hf.demo.models import LMRecipe, pretrain_student, train_teacher, world_tokenizer
from persyn_hf.demo.world import make_problems, problems_dataset
from persyn_hf.scripts import VERBS
from persyn_hf.store import ArtifactStore
from persyn_hf.teachers import load_teachers

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

# How each teacher of `recipes/demo/teachers.yaml` is made: its style, size and training budget.
TEACHER_RECIPES = {
    "long-cot": LMRecipe(style="long_cot", hidden_size=96, num_hidden_layers=3, steps=500, seed=1),
    "short-cot": LMRecipe(style="short_cot", hidden_size=64, num_hidden_layers=2, steps=600, seed=2),
    "terse": LMRecipe(style="terse", hidden_size=64, num_hidden_layers=2, steps=400, seed=3),
    "sloppy": LMRecipe(style="sloppy", arch="llama", hidden_size=48, num_hidden_layers=2, steps=400, seed=4),
}
STUDENT_RECIPE = LMRecipe(hidden_size=64, num_hidden_layers=2, steps=300, seed=5)
QUICK_STEPS = 100


@dataclass
class DemoArguments:
    """The demo world and where its run goes.

    Parameters:
        num_prompts (`int`): Size of the prompt set X the students are distilled on.
        router_prompts (`int`): Size of the subset X_sub every teacher answers, to train the router.
        test_prompts (`int`): Size of the held-out split the students are evaluated on.
        teachers (`str`): Teachers YAML; relative `model_path`s are resolved against `cache_dir`.
        seed (`int`): Seed of the world (problems, sampling, training).
        quick (`bool`): A smaller world: fewer training steps for teachers, student and SFT.
        output_dir (`str`): Where `results.json`, the allocation chart and the stage outputs go.
        cache_dir (`str`): Where the trained tokenizer, teachers and student are kept between runs.
        store_root (`str`): The local artifact store every stage writes to.
        recipes_dir (`str`): The folder of the stage recipes the demo runs.
    """

    num_prompts: int = field(default=1000, metadata={"help": "Size of the prompt set X."})
    router_prompts: int = field(default=250, metadata={"help": "Size of X_sub, answered by every teacher."})
    test_prompts: int = field(default=200, metadata={"help": "Size of the held-out evaluation split."})
    teachers: str = field(default="recipes/demo/teachers.yaml", metadata={"help": "Teachers YAML."})
    seed: int = field(default=42, metadata={"help": "Seed of the world."})
    quick: bool = field(default=False, metadata={"help": "A smaller, faster world (used by the tests)."})
    output_dir: str = field(default="outputs/demo", metadata={"help": "Where results and stage outputs go."})
    cache_dir: str = field(default=".cache/persyn-demo", metadata={"help": "Trained teachers and student."})
    store_root: str = field(default="outputs/demo/store", metadata={"help": "The local artifact store."})
    recipes_dir: str = field(default="recipes/demo", metadata={"help": "The stage recipes the demo runs."})

    def __post_init__(self):
        if not 2 <= self.router_prompts <= self.num_prompts:
            raise ValueError(
                f"`router_prompts` must be in [2, num_prompts={self.num_prompts}], got {self.router_prompts}"
            )


class Demo:
    """One demo run: the world, then each stage's verb on its recipe."""

    def __init__(self, args: DemoArguments):
        self.args = args
        self.out = Path(args.output_dir)
        self.store = ArtifactStore(args.store_root)
        self.teachers = load_teachers(args.teachers)
        self.timings: dict[str, float] = {}

    def run_verb(self, verb: str, recipe: str, *positional: str, **overrides) -> None:
        """`persyn-hf <verb> [positional] --config recipes/demo/<recipe> --key value ...`, in this process."""
        module = importlib.import_module(VERBS[verb][0])
        argv = [
            *positional,
            "--config",
            str(Path(self.args.recipes_dir) / recipe),
            "--store_root",
            self.args.store_root,
        ]
        for key, value in overrides.items():
            argv += [f"--{key}", str(value)]
        module.main(*parse_args(module.make_parser(), argv))

    def timed(self, name: str, fn, *args, **kwargs):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        self.timings[name] = round(time.perf_counter() - start, 1)
        print(f"[persyn-hf demo] {name}: {self.timings[name]} s")
        return result

    # The world -------------------------------------------------------------------------------------

    def build_world(self) -> tuple[str, str]:
        """Train (or reuse) the tokenizer, teachers and student; write the prompts; returns (teachers YAML, student)."""
        args, cache = self.args, Path(self.args.cache_dir)
        tokenizer = world_tokenizer(cache, seed=args.seed)
        unknown = sorted({t.name for t in self.teachers} - set(TEACHER_RECIPES))
        if unknown:
            raise ValueError(f"Demo teachers {unknown} have no recipe; the demo world knows {sorted(TEACHER_RECIPES)}")
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

    def _scaled(self, recipe: LMRecipe) -> LMRecipe:
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
        self.timed(
            f"train_router_{strategy}",
            self.run_verb,
            "train-router",
            "router/config_demo.yaml",
            teachers=teachers,
            model_name_or_path=student,
            scores_repo_id=scores,
            router_repo_id=router,
            alpha=alpha,
            output_dir=self.out / "router-training" / strategy,
            **self._quick_training(),
        )
        assignments = f"demo/assignments-{strategy}"
        self.timed(
            f"route_{strategy}",
            self.run_verb,
            "route",
            "route/config_demo.yaml",
            router_repo_id=router,
            assignments_repo_id=assignments,
        )
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
            self.run_verb(
                "select",
                "select/config_demo.yaml",
                teachers=teachers,
                strategy=strategy,
                assignments_repo_id=f"demo/assignments-{strategy}",
            )
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
        self.run_verb(
            "eval",
            "eval/config_demo.yaml",
            model_name_or_path=f"demo/student-{strategy}",
            output_dir=self.out / "eval" / strategy,
        )
        return self._result(strategy)

    # Results ---------------------------------------------------------------------------------------

    def _quick_training(self) -> dict:
        return {"max_steps": 6} if self.args.quick else {}

    def generations_needed(self, strategy: str, num_teachers: int) -> int:
        """Teacher generations a strategy needs on its own (rejection-sampling attempts not counted)."""
        n, N, S = num_teachers, self.args.num_prompts, self.args.router_prompts
        if strategy in ROUTED or strategy == "car":
            return S * n + N  # parallel subset (to train the router / pick the teacher), then one teacher per prompt
        if strategy == "oracle":
            return N * n  # every teacher's answer to all of X
        return N  # strong, family_strong, mix: one teacher per prompt, chosen up front

    def router_hit_at_3(self) -> float | None:
        """Hit@3 of the router on its held-out prompts, as its card records it."""
        card = ModelCard.load(Path(self.store.location(ROUTERS["persyn"])) / "README.md")
        return card.data.persyn["metrics"].get("hit_at_3")

    def _result(self, strategy: str) -> dict:
        summary = json.loads((self.out / "eval" / strategy / "results.json").read_text())
        assigned = self.store.load_dataset(f"demo/assignments-{strategy}")["teacher"]
        teachers = [t.name for t in self.teachers]
        return {
            "strategy": strategy,
            "accuracy": summary["tasks"]["persyn_heldout"]["accuracy"],
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
        "router": {"hit_at_3": demo.router_hit_at_3()},
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
