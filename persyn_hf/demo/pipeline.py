"""`persyn-hf demo`: the whole method on the demo world, stage by stage, through the stages' Python API.

Every stage runs the recipe in `persyn_hf/demo/recipes/<stage>/` (the repository's `recipes/demo/`), parsed as
strictly as `persyn-hf <verb> --config ...` parses it, with this run's paths filled in, through the stage's `run`;
only the world (problems, teachers, student) is made here. The run:

1. the world: tokenizer, teachers and student trained locally (cached), the prompt set X, its router subset X_sub
   and a held-out split;
2. Route then Generate: every teacher answers X_sub, which is scored for the student; routers trained on the
   scores with α = 0.4 (PerSyn), 1 (without quality) and 0 (without learnability) route X, and the routed teachers
   answer their prompts;
3. Generate then Select for the comparisons: every teacher answers X (the Oracle, and the router's agreement with
   it); Strong, Family-Strong, Mix and CAR are selected;
4. for every strategy, the personalized dataset is built and the student fine-tuned on it with `seeds` seeds, each
   evaluated on the held-out split, problem by problem;
5. the report (`results.json`, the printed tables, PNG charts): accuracy over seeds, PerSyn against every other
   strategy paired by problem, the router against chance and the majority class and against the Oracle, the
   allocation, and the generation cost; `full` adds the α sweep, the router's data-size curve and, per teacher and
   kind of problem, the Eq. 2 reward against what the student gains from that teacher's answers.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from persyn_hf.configs import check_choice
from persyn_hf.cost import generate_then_select, paradigm_costs, route_then_generate
from persyn_hf.demo import analysis
from persyn_hf.errors import ConfigError
from persyn_hf.route import allocation
from persyn_hf.scripts import VERBS
from persyn_hf.scripts.parser import load_recipe
from persyn_hf.select import mean_per_teacher
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
# The settings of the paper whose generation cost the report compares: (prompts, teachers, router subset).
PAPER_SETTINGS = {"Magpie-Zoo (instruction)": (50_000, 19, 2_500), "PerSyn-Math": (10_000, 15, 2_500)}
QUICK_STEPS = 60  # training steps of each world model with `quick`
# Where a `quick` run goes unless told otherwise: never into the full world's folders.
QUICK_FOLDERS = {
    "output_dir": ("outputs/demo", "outputs/demo-quick"),
    "cache_dir": (".cache/persyn-demo", ".cache/persyn-demo-quick"),
    "store_root": ("outputs/demo/store", "outputs/demo-quick/store"),
}


@dataclass
class DemoArguments:
    """The demo world and where its run goes.

    Parameters:
        num_prompts (`int`): Size of the prompt set X the students are distilled on.
        router_prompts (`int`): Size of the subset X_sub every teacher answers, to train the router.
        test_prompts (`int`): Size of the held-out split the students are evaluated on.
        heldout_split (`str`): The stream of problems that held-out split is drawn from: `test` (what the demo
            reports) or `dev` (to design a world against, leaving `test` unseen).
        seeds (`int`): Student seeds: every strategy's student is fine-tuned and evaluated once per seed.
        full (`bool`): Also the α sweep, the router's data-size curve and the reward-against-gain analysis.
        alphas (`list[float]`): The α values of the sweep (`full`).
        subset_fractions (`list[float]`): Shares of X_sub's training prompts for the data-size curve (`full`).
        teachers (`str`, *optional*): Teachers YAML (default: the demo world's); each teacher's `model_path` is the
            model the demo trains from its recipe (`persyn_hf.demo.models.TEACHER_RECIPES`).
        seed (`int`): Seed of the world (problems, sampling, training); student seeds are `seed`, `seed + 1`, ...
        quick (`bool`): A quick run that only shows the plumbing works: world models of `QUICK_STEPS` steps, a few
            SFT and router steps (for the tests); its accuracies mean nothing. Its default folders are
            `outputs/demo-quick` and `.cache/persyn-demo-quick`.
        output_dir (`str`): Where `results.json`, the charts and the stage outputs go.
        cache_dir (`str`): Where the trained tokenizer, teachers and student are kept between runs.
        store_root (`str`): The local artifact store every stage writes to.
        recipes_dir (`str`, *optional*): The folder of the stage recipes the demo runs (default: the packaged ones).
    """

    num_prompts: int = field(default=600, metadata={"help": "Size of the prompt set X."})
    router_prompts: int = field(default=200, metadata={"help": "Size of X_sub, answered by every teacher."})
    test_prompts: int = field(default=1000, metadata={"help": "Size of the held-out evaluation split."})
    heldout_split: str = field(
        default="test", metadata={"help": "Problems the held-out split is drawn from: test, or dev to design on."}
    )
    seeds: int = field(default=3, metadata={"help": "Student seeds per strategy."})
    full: bool = field(default=False, metadata={"help": "Also the α sweep, data-size curve and reward/gain."})
    alphas: list[float] = field(
        default_factory=lambda: [0.0, 0.2, 0.4, 0.6, 0.8, 1.0], metadata={"help": "α values of the sweep (full)."}
    )
    subset_fractions: list[float] = field(
        default_factory=lambda: [0.25, 0.5, 0.75, 1.0],
        metadata={"help": "Shares of X_sub's training prompts for the data-size curve (full)."},
    )
    teachers: str | None = field(default=None, metadata={"help": "Teachers YAML (default: the demo world's)."})
    seed: int = field(default=42, metadata={"help": "Seed of the world; student seeds follow it."})
    quick: bool = field(default=False, metadata={"help": "A quick plumbing run: few training steps (the tests)."})
    output_dir: str = field(default="outputs/demo", metadata={"help": "Where results and stage outputs go."})
    cache_dir: str = field(default=".cache/persyn-demo", metadata={"help": "Trained teachers and student."})
    store_root: str = field(default="outputs/demo/store", metadata={"help": "The local artifact store."})
    recipes_dir: str | None = field(
        default=None, metadata={"help": "The stage recipes the demo runs (default: the packaged ones)."}
    )

    def __post_init__(self):
        self.recipes_dir = self.recipes_dir or str(RECIPES_DIR)
        for name, (default, quick) in QUICK_FOLDERS.items():
            if self.quick and getattr(self, name) == default:
                setattr(self, name, quick)
        if not Path(self.recipes_dir).is_dir():
            raise ConfigError(
                f"`recipes_dir` {self.recipes_dir!r} is not a folder: give the folder of the stage recipes."
            )
        self.teachers = self.teachers or str(Path(self.recipes_dir) / "teachers.yaml")
        if not 2 <= self.router_prompts <= self.num_prompts:
            raise ConfigError(
                f"`router_prompts` must be in [2, num_prompts={self.num_prompts}], got {self.router_prompts}"
            )
        check_choice("heldout_split", self.heldout_split, ("test", "dev"))
        if self.seeds < 1:
            raise ConfigError(f"`seeds` must be at least 1, got {self.seeds}")


@dataclass
class Distilled:
    """A strategy's outcome: its assignments, what it cost, and each seed's student judged problem by problem."""

    strategy: str
    assignments: object
    generations: int
    routed: bool = False  # assigned by a router trained on the scores (`demo/router-<strategy>`)
    verdicts: list[dict[str, bool]] = field(default_factory=list)  # one {prompt_id: correct} per seed

    def accuracies(self) -> list[float]:
        return [sum(run.values()) / len(run) for run in self.verdicts]


class Demo:
    """One demo run: the world, then each stage's verb on its recipe, then the report."""

    def __init__(self, args: DemoArguments):
        self.args = args
        self.out = Path(args.output_dir)
        self.store = ArtifactStore(args.store_root)
        for name in ("output_dir", "store_root"):  # before the world is trained: minutes of work
            check_writable(getattr(args, name), f"`{name}` {getattr(args, name)!r}", f"choose another `{name}`")
        self.specs = load_teachers(args.teachers)
        self.names = [spec.name for spec in self.specs]
        self.timings: dict[str, float] = {}
        self.teachers_file = self.student = ""
        self.results_dir: Path | None = None  # the teachers' answers of this world (`build_world`)
        self.router_summary: dict = {}  # what training the PerSyn router reported: metrics, training prompts

    def stage(self, verb: str, recipe: str, *positional: str, **overrides):
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

    def build_world(self) -> None:
        """Train (or reuse) the tokenizer, teachers and student; write the teachers YAML and the prompts."""
        from persyn_hf.demo.models import (
            STUDENT_RECIPE,
            TEACHER_RECIPES,
            fingerprint,
            pretrain_student,
            train_teacher,
            world_tokenizer,
        )
        from persyn_hf.demo.world import make_problems, problems_dataset

        args, cache = self.args, Path(self.args.cache_dir)
        tokenizer = world_tokenizer(cache, seed=args.seed)
        unknown = sorted(set(self.names) - set(TEACHER_RECIPES))
        if unknown:
            raise ConfigError(
                f"Demo teachers {unknown} have no recipe; the demo world knows {sorted(TEACHER_RECIPES)}"
            )
        resolved = []
        for spec in self.specs:
            path = train_teacher(tokenizer, self._scaled(TEACHER_RECIPES[spec.name]), cache / "teachers")
            resolved.append({**dataclasses.asdict(spec), "model_path": path})
        self.student = pretrain_student(tokenizer, self._scaled(STUDENT_RECIPE), cache / "student")
        # the teachers' answers are kept per world, so a run of another world never meets this one's
        self.results_dir = self.out / f"generation-results-{fingerprint(args.seed, resolved)}"
        self.out.mkdir(parents=True, exist_ok=True)
        self.teachers_file = str(self.out / "teachers.yaml")
        Path(self.teachers_file).write_text(yaml.safe_dump({"teachers": resolved}, sort_keys=False))

        train = problems_dataset(make_problems(args.num_prompts, args.seed, split="train"))
        self.store.save_dataset("demo/prompts", train)
        subset = train.shuffle(seed=args.seed).select(range(args.router_prompts))
        self.store.save_dataset("demo/prompts", subset, config_name="router")
        held_out = make_problems(args.test_prompts, args.seed, args.heldout_split, exclude=set(train["prompt"]))
        test = problems_dataset(held_out)
        self.store.save_dataset("demo/prompts", test, config_name="heldout", split="test")

    def _scaled(self, recipe):
        """`recipe`, or with `quick` a recipe of `QUICK_STEPS` steps: a world that only shows the plumbing works."""
        return dataclasses.replace(recipe, steps=QUICK_STEPS) if self.args.quick else recipe

    def _quick_training(self) -> dict:
        return {"max_steps": 6} if self.args.quick else {}

    # The method ------------------------------------------------------------------------------------

    def generate(self, recipe: str, **overrides):
        return self.stage(
            "generate",
            f"generate/{recipe}",
            teachers=self.teachers_file,
            results_dir=self.results_dir,
            **overrides,
        )

    def score(self, recipe: str, scores: str, alpha: float):
        return self.stage("score", f"score/{recipe}", student=self.student, alpha=alpha, scores_repo_id=scores)

    def train_router(self, name: str, scores: str, **overrides):
        return self.stage(
            "train-router",
            "router/config_demo.yaml",
            teachers=self.teachers_file,
            model_name_or_path=self.student,
            scores_repo_id=scores,
            router_repo_id=f"demo/router-{name}",
            output_dir=self.out / "router-training" / name,
            **{**self._quick_training(), **overrides},
        )

    def route_then_generate(self, name: str, alpha: float) -> Distilled:
        """Score X_sub with reward mix `alpha`, train a router on it, route X, and generate the routed answers."""
        scores = subset_scores(alpha)
        self.timed(f"score_router_subset_{name}", self.score, "config_router_subset.yaml", scores, alpha)
        trained = self.timed(f"train_router_{name}", self.train_router, name, scores)
        if name == "persyn":
            self.router_summary = trained.summary
        routed = self.timed(
            f"route_{name}",
            self.stage,
            "route",
            "route/config_demo.yaml",
            router_repo_id=f"demo/router-{name}",
            assignments_repo_id=f"demo/assignments-{name}",
        )
        self.timed(
            f"generate_routed_{name}",
            self.generate,
            "config_routed.yaml",
            assignments_repo_id=f"demo/assignments-{name}",
            generations_config=f"routed-{name}",
        )
        needed = route_then_generate(self.args.num_prompts, len(self.names), self.args.router_prompts)
        return Distilled(name, routed.artifact, needed, routed=True)

    def select(self, strategy: str, name: str | None = None, **overrides) -> Distilled:
        """Assign X with a strategy that needs no router."""
        name = name or strategy
        selected = self.stage(
            "select",
            "select/config_demo.yaml",
            teachers=self.teachers_file,
            strategy=strategy,
            assignments_repo_id=f"demo/assignments-{name}",
            **overrides,
        )
        N, n, S = self.args.num_prompts, len(self.names), self.args.router_prompts
        needed = {"oracle": generate_then_select(N, n), "car": route_then_generate(N, n, S)}.get(strategy, N)
        return Distilled(name, selected.artifact, needed)

    def distill(self, outcome: Distilled, generations_config: str) -> Distilled:
        """Build the strategy's personalized dataset, then fine-tune and evaluate the student once per seed."""
        self.stage(
            "build",
            "build/config_personalized.yaml",
            "personalized",
            teachers=self.teachers_file,
            student=self.student,
            strategy=outcome.strategy,
            assignments_repo_id=f"demo/assignments-{outcome.strategy}",
            generations_config=generations_config,
        )
        routed = {"router_repo_id": f"demo/router-{outcome.strategy}"} if outcome.routed else {}
        for seed in range(self.args.seed, self.args.seed + self.args.seeds):
            student = f"demo/student-{outcome.strategy}-seed{seed}"
            self.stage(
                "sft",
                "sft/config_demo.yaml",
                model_name_or_path=self.student,
                dataset_config=outcome.strategy,
                student_repo_id=student,
                output_dir=self.out / "sft" / outcome.strategy,
                seed=seed,
                **routed,
                **self._quick_training(),
            )
            evaluated = self.stage(
                "eval",
                "eval/config_demo.yaml",
                model_name_or_path=student,
                output_dir=self.out / "eval" / outcome.strategy / f"seed{seed}",
            )
            outcome.verdicts.append(evaluated.summary["problems"]["persyn_heldout"])
        return outcome

    def run(self) -> dict:
        """Every stage, then the report."""
        self.timed("world", self.build_world)
        self.timed("generate_router_subset", self.generate, "config_router_subset.yaml")
        outcomes = {name: self.route_then_generate(name, alpha) for name, alpha in ROUTED.items()}
        self.timed("generate_parallel", self.generate, "config_parallel.yaml")
        self.timed("score_parallel", self.score, "config_parallel.yaml", "demo/scores-parallel", ROUTED["persyn"])
        for strategy in ("oracle", "strong", "mix", "family_strong"):
            outcomes[strategy] = self.select(strategy)
        outcomes["car"] = self.select("car", scores_repo_id=subset_scores(ROUTED["persyn"]))
        for name in STRATEGIES:
            config = f"routed-{name}" if name in ROUTED else "parallel"
            self.timed(f"distill_{name}", self.distill, outcomes[name], config)
        report = self.report([outcomes[name] for name in STRATEGIES])
        if self.args.full:
            report["alpha_sweep"] = self.timed("alpha_sweep", self.alpha_sweep, outcomes)
            report["data_size"] = self.timed("data_size_curve", self.data_size_curve)
            points = self.timed("reward_and_gain", self.reward_and_gain)
            report["reward_and_gain"] = points
            report["reward_gain_correlation"] = analysis.rank_correlation(
                [p["reward"] for p in points], [p["gain"] for p in points]
            )
        return report

    # Analyses --------------------------------------------------------------------------------------

    def report(self, outcomes: list[Distilled]) -> dict:
        """The comparison of the strategies, the router's quality, the cost."""
        persyn, kinds = outcomes[0], self.heldout_kinds()
        rows = [
            {
                "strategy": outcome.strategy,
                "accuracy": analysis.seed_summary(outcome.accuracies()),
                "accuracy_by_kind": by_kind(outcome.verdicts, kinds),
                "generations": outcome.generations,
                "assigned": allocation(outcome.assignments, self.names),
                "allocation": {
                    t: n / len(outcome.assignments) for t, n in allocation(outcome.assignments, self.names).items()
                },
            }
            for outcome in outcomes
        ]
        paired = [
            {"strategy": outcome.strategy, **analysis.paired_difference(persyn.verdicts, outcome.verdicts)}
            for outcome in outcomes[1:]
        ]
        oracle = next(outcome for outcome in outcomes if outcome.strategy == "oracle")
        return {
            "results": rows,
            "persyn_minus": paired,
            "router": {**self.router_summary["metrics"], **self.router_baselines()},
            "router_vs_oracle": {
                "persyn": rows[0]["accuracy"],
                "oracle": next(row["accuracy"] for row in rows if row["strategy"] == "oracle"),
                "agreement": agreement(persyn.assignments, oracle.assignments),
            },
            "cost": {
                "this world": paradigm_costs(self.args.num_prompts, len(self.names), self.args.router_prompts),
                **{name: paradigm_costs(*setting) for name, setting in PAPER_SETTINGS.items()},
            },
        }

    def router_baselines(self) -> dict:
        """Chance and majority-class Hit@k on the PerSyn router's held-out subset prompts (as `train-router` splits
        them)."""
        from persyn_hf.pairs import router_rows
        from persyn_hf.train_router import split_rows

        recipe = yaml.safe_load((Path(self.args.recipes_dir) / "router/config_demo.yaml").read_text())
        scores = self.store.load_dataset(subset_scores(ROUTED["persyn"]))
        rows = router_rows(scores, self.store.load_dataset("demo/prompts", "router"), self.names)
        train, held_out = split_rows(rows, recipe["eval_size"], recipe["seed"])
        baselines = analysis.router_baselines(
            np.array(train["teacher_rewards"], dtype=float), np.array(held_out["teacher_rewards"], dtype=float)
        )
        baselines["majority_teacher"] = self.names[baselines["majority_teacher"]]
        return baselines

    def alpha_sweep(self, outcomes: dict[str, Distilled]) -> list[dict]:
        """Student accuracy of PerSyn with routers trained at each α (paper Fig. 4); α = 0.4, 1 and 0 are PerSyn and
        its two ablations, already run."""
        done = {alpha: outcomes[name] for name, alpha in ROUTED.items()}
        sweep = []
        for alpha in self.args.alphas:
            outcome = done.get(alpha)
            if outcome is None:
                name = f"persyn_alpha_{alpha:g}"
                outcome = self.distill(self.route_then_generate(name, alpha), f"routed-{name}")
            sweep.append({"alpha": alpha, "accuracy": analysis.seed_summary(outcome.accuracies())})
        return sweep

    def data_size_curve(self) -> list[dict]:
        """The router's Hit@1 and Hit@3 on the same held-out subset prompts when trained on a share of the others
        (paper Fig. 5)."""
        scores = subset_scores(ROUTED["persyn"])
        curve = []
        for fraction in self.args.subset_fractions:
            train_prompts = max(1, round(fraction * self.router_summary["num_train_prompts"]))
            trained = self.train_router(f"size-{train_prompts}", scores, max_train_prompts=train_prompts)
            metrics = trained.summary["metrics"]
            curve.append(
                {"train_prompts": train_prompts, "hit_at_1": metrics["hit_at_1"], "hit_at_3": metrics["hit_at_3"]}
            )
        return curve

    def heldout_kinds(self) -> dict[str, str]:
        """prompt_id -> kind of every held-out problem (empty when the world's problems have no kind)."""
        heldout = self.store.load_dataset("demo/prompts", "heldout", "test")
        return dict(zip(heldout["prompt_id"], heldout["kind"])) if "kind" in heldout.column_names else {}

    def reward_and_gain(self) -> list[dict]:
        """Per teacher and kind of problem: the mean Eq. 2 reward of its answers on X, the held-out accuracy of the
        student that learnt from that teacher alone (mean over the seeds), and its gain over the student before
        fine-tuning (`base`)."""
        base = self.stage(
            "eval", "eval/config_demo.yaml", model_name_or_path=self.student, output_dir=self.out / "eval" / "base"
        ).summary["problems"]["persyn_heldout"]
        kinds = self.heldout_kinds()
        base_by_kind = by_kind([base], kinds)
        rewards = mean_reward_by_teacher_and_kind(
            self.store.load_dataset("demo/scores-parallel"), self.store.load_dataset("demo/prompts"), self.names
        )
        points = []
        for teacher in self.names:
            outcome = self.distill(self.select("strong", f"teacher-{teacher}", strong_teacher=teacher), "parallel")
            gained = by_kind(outcome.verdicts, kinds)
            for kind, accuracy in gained.items():
                points.append(
                    {
                        "teacher": teacher,
                        "kind": kind,
                        "reward": rewards[teacher, kind],
                        "accuracy": accuracy,
                        "base": base_by_kind[kind],
                        "gain": accuracy - base_by_kind[kind],
                    }
                )
        return points


def subset_scores(alpha: float) -> str:
    """The repo id of X_sub's scores with reward mix `alpha`, which a router is trained on."""
    return f"demo/scores-router-alpha-{alpha:g}"


def by_kind(verdicts: list[dict[str, bool]], kinds: dict[str, str]) -> dict[str, float]:
    """Mean accuracy over seeds per kind of problem (`{"all": ...}` when the problems have no kind)."""
    groups: dict[str, list[float]] = {}
    for run in verdicts:
        for prompt_id, correct in run.items():
            groups.setdefault(kinds.get(prompt_id, "all"), []).append(float(correct))
    return {kind: float(np.mean(values)) for kind, values in sorted(groups.items())}


def agreement(ours, theirs) -> float:
    """Share of the prompts both assignments cover that they give to the same teacher."""
    mine = dict(zip(ours["prompt_id"], ours["teacher"]))
    shared = [(mine[p], t) for p, t in zip(theirs["prompt_id"], theirs["teacher"]) if p in mine]
    return sum(a == b for a, b in shared) / len(shared)


def mean_reward_by_teacher_and_kind(scores, prompts, teachers: list[str]) -> dict[tuple[str, str], float]:
    """The mean Eq. 2 reward of each teacher's answers on each kind of problem (`"all"` when there are no kinds)."""
    kinds = dict(zip(prompts["prompt_id"], prompts["kind"])) if "kind" in prompts.column_names else {}
    kind_of = [kinds.get(prompt_id, "all") for prompt_id in scores["prompt_id"]]
    means = {}
    for kind in sorted(set(kind_of)):
        rows = scores.select([i for i, k in enumerate(kind_of) if k == kind])
        means.update({(t, kind): float(m) for t, m in zip(teachers, mean_per_teacher(rows, teachers, rows["reward"]))})
    return means


# Printing --------------------------------------------------------------------------------------------------------


def results_table(report: dict) -> str:
    """Table 2 of the demo: accuracy over seeds (mean ± std, then each seed), generations, allocation."""
    teachers = list(report["results"][0]["allocation"])
    lines = [
        f"| strategy | accuracy (mean ± std) | seeds | generations | {' | '.join(teachers)} |",
        "|" + "---|" * (4 + len(teachers)),
    ]
    for row in report["results"]:
        accuracy = row["accuracy"]
        seeds = " ".join(f"{value:.3f}" for value in accuracy["seeds"])
        shares = " | ".join(f"{row['allocation'][t]:.0%}" for t in teachers)
        lines.append(
            f"| {row['strategy']} | {accuracy['mean']:.3f} ± {accuracy['std']:.3f} | {seeds} | "
            f"{row['generations']} | {shares} |"
        )
    return "\n".join(lines)


def paired_table(report: dict) -> str:
    lines = ["| PerSyn minus | difference | 95% CI (bootstrap over seeds and problems) |", "|---|---|---|"]
    for row in report["persyn_minus"]:
        lines.append(
            f"| {row['strategy']} | {row['difference']:+.3f} | [{row['ci95'][0]:+.3f}, {row['ci95'][1]:+.3f}] |"
        )
    return "\n".join(lines)


def run_demo(args: DemoArguments) -> dict:
    """Run the demo; print the tables and write `results.json` and the charts to `output_dir`."""
    from persyn_hf.cards import allocation_chart

    demo = Demo(args)
    start = time.perf_counter()
    report = demo.run()
    report["wall_time_s"] = {**demo.timings, "total": round(time.perf_counter() - start, 1)}
    report["world"] = {**dataclasses.asdict(args), "teachers": [dataclasses.asdict(spec) for spec in demo.specs]}
    (demo.out / "results.json").write_text(json.dumps(report, indent=2))
    allocation_chart(
        report["results"][0]["assigned"], demo.specs, demo.out / "allocation_persyn.png", "PerSyn allocation (demo)"
    )
    router = report["router"]
    print(results_table(report))
    print(paired_table(report))
    print(
        f"router on held-out subset prompts: Hit@1 {router.get('hit_at_1', float('nan')):.3f} (chance "
        f"{router['chance_hit_at_1']:.3f}, majority {router['majority_hit_at_1']:.3f}), Hit@3 "
        f"{router.get('hit_at_3', float('nan')):.3f} (chance {router['chance_hit_at_3']:.3f}, majority "
        f"{router['majority_hit_at_3']:.3f}); agreement with the Oracle on X: "
        f"{report['router_vs_oracle']['agreement']:.3f}"
    )
    if args.full:
        print(full_analyses(report, demo.out))
    if args.quick:
        print("A quick run: its models are barely trained, so these numbers only show that every stage ran.")
    print(f"wall time: {report['wall_time_s']['total']} s; results in {demo.out / 'results.json'}")
    return report


def full_analyses(report: dict, out: Path) -> str:
    """The `full` run's charts (α sweep, data-size curve, reward against gain) and their tables."""
    sweep, curve, points = report["alpha_sweep"], report["data_size"], report["reward_and_gain"]
    alphas = [row["alpha"] for row in sweep]
    accuracy = {"PerSyn": [row["accuracy"]["mean"] for row in sweep]}
    accuracy["PerSyn std"] = [row["accuracy"]["std"] for row in sweep]
    analysis.line_chart(alphas, accuracy, out / "alpha_sweep.png", "Student accuracy per α", "α", "accuracy")
    sizes = [row["train_prompts"] for row in curve]
    hits = {"Hit@1": [row["hit_at_1"] for row in curve], "Hit@3": [row["hit_at_3"] for row in curve]}
    analysis.line_chart(sizes, hits, out / "router_data_size.png", "Router vs training prompts", "prompts", "hit")
    shown = [{"x": p["reward"], "y": p["gain"], "label": p["teacher"], "group": p["kind"]} for p in points]
    analysis.scatter_chart(
        shown, out / "reward_vs_gain.png", "Eq. 2 reward vs what the student gains", "reward", "gain"
    )
    lines = ["| α | accuracy (mean ± std) |", "|---|---|"]
    lines += [f"| {row['alpha']:g} | {row['accuracy']['mean']:.3f} ± {row['accuracy']['std']:.3f} |" for row in sweep]
    lines += ["", "| router training prompts | Hit@1 | Hit@3 |", "|---|---|---|"]
    lines += [f"| {row['train_prompts']} | {row['hit_at_1']:.3f} | {row['hit_at_3']:.3f} |" for row in curve]
    lines += ["", "| teacher | kind | mean Eq. 2 reward | accuracy | gain over the untuned student |"]
    lines += ["|---|---|---|---|---|"]
    lines += [
        f"| {p['teacher']} | {p['kind']} | {p['reward']:.3f} | {p['accuracy']:.3f} | {p['gain']:+.3f} |"
        for p in points
    ]
    correlation = report["reward_gain_correlation"]
    lines.append(f"Spearman correlation of reward and gain over teacher x kind: {correlation:.2f}")
    return "\n".join(lines)
