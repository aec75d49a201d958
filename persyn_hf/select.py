"""The select stage: each prompt to a teacher, by a strategy chosen by name (paper §2, §3.1 and appendix A.6).

Every strategy maps `(prompts, scores, teachers, config)` to assignments: one row per prompt with `prompt_id`,
`teacher` and `router_scores` (the router's π(x) for `persyn`, an empty list for the others).

| name | teacher of each prompt | needs |
|---|---|---|
| `persyn` | argmax of the trained router's scores π(x), through the route stage | `router_repo_id` |
| `oracle` | argmax of the true reward r (Eq. 2) | scores |
| `persyn_wo_quality` | argmax of r recomputed with α = 1 (learnability only) | scores |
| `persyn_wo_learnability` | argmax of r recomputed with α = 0 (quality only) | scores |
| `strong` | one teacher for all: `strong_teacher`, else the highest mean quality | scores if unnamed |
| `family_strong` | one teacher for all: `family_strong_teacher`, else the largest teacher of `student_family` | teacher specs |
| `mix` | a uniformly random teacher, seeded | — |
| `car` | one teacher for all: the highest compatibility-adjusted reward (Xu et al., 2025) | scores |

Argmax ties go to the teacher listed first in the teacher specs.

The two ablations here are their Generate-then-Select form, for prompts that every teacher answered. Their
Route-then-Generate form, as `persyn-hf demo` runs them, trains a router on rewards without one term:
`persyn-hf score --alpha 1` (or `0`) on the router's subset, `persyn-hf train-router`, then `persyn-hf route`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from persyn_hf.configs import DTYPES, INFERENCE_DTYPE, check_choice, check_positive, renamed
from persyn_hf.contracts import CONTRACTS, StageResult, validate
from persyn_hf.errors import ConfigError, DataError
from persyn_hf.pairs import reward_table
from persyn_hf.rewards import NORMALIZATIONS, mix_rewards, normalize_per_prompt
from persyn_hf.store import ArtifactStore, data_file
from persyn_hf.teachers.spec import TeacherSpec, load_teachers

if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.getLogger(__name__)
CAR_QUALITIES = ("raw", "normalized")


@dataclass
class SelectArguments:
    """What `persyn-hf select` reads and writes.

    Parameters:
        prompts_repo_id (`str`):
            Artifact of the prompts to assign.
        teachers (`str`):
            YAML file of the teacher specs (their order breaks ties; `family` and `size_b` feed `family_strong`).
        assignments_repo_id (`str`):
            Artifact the assignments are written to.
        scores_repo_id (`str` or `None`, *optional*, defaults to `None`):
            Artifact of the scores (`persyn-hf score`), for `oracle`, the ablations, `car` and an unnamed `strong`.
        prompts_config (`str`, *optional*, defaults to `"default"`):
            Dataset config of the prompts artifact.
        prompts_split (`str`, *optional*, defaults to `"train"`):
            Split of the prompts artifact.
    """

    prompts_repo_id: str = field(metadata={"help": "Artifact of the prompts to assign."})
    teachers: str = field(metadata={"help": "YAML file of the teacher specs."})
    assignments_repo_id: str = field(metadata={"help": "Artifact the assignments are written to."})
    scores_repo_id: str | None = field(
        default=None, metadata={"help": "Artifact of the scores (persyn-hf score), for strategies that need them."}
    )
    prompts_config: str = field(default="default", metadata={"help": "Dataset config of the prompts."})
    prompts_split: str = field(default="train", metadata={"help": "Split of the prompts."})


@dataclass
class SelectionConfig:
    """How prompts are assigned to teachers.

    Parameters:
        strategy (`str`, *optional*, defaults to `"persyn"`):
            Name of the strategy in `STRATEGIES`.
        router_repo_id (`str` or `None`, *optional*, defaults to `None`):
            The trained PerSyn router, for `persyn`: a folder, or its repo id in the artifact store (or on the Hub).
        batch_size (`int`, *optional*, defaults to `64`):
            Prompts per router forward pass, for `persyn` (as `persyn-hf route`).
        dtype (`str`, *optional*, defaults to `"auto"`):
            Dtype the router is loaded in, for `persyn` (as `persyn-hf route`).
        strong_teacher (`str` or `None`, *optional*, defaults to `None`):
            The teacher of `strong`; when unset, the teacher with the highest mean quality in the scores. The paper's
            (Tables 11-12): Llama-3.1-405B-Instruct for instruction tuning, DeepSeek-R1 for math.
        student_family (`str` or `None`, *optional*, defaults to `None`):
            The student's model family (as in the teacher specs' `family`), for `family_strong`.
        family_strong_teacher (`str` or `None`, *optional*, defaults to `None`):
            The teacher of `family_strong`; when unset, the largest teacher (`size_b`) of `student_family`. The paper
            picks by hand (Table 11: Llama-3.1-70B-Instruct, not the 405B, for Llama students).
        car_beta (`float`, *optional*, defaults to `1.0`):
            Weight β of the student's loss in the compatibility-adjusted reward, for `car`: with β = 1 every nat of
            mean loss per token adds the reward once more to the divisor; β = 0 ranks by quality alone.
        car_quality (`str`, *optional*, defaults to `"raw"`):
            The reward CAR averages: `raw` (the quality as scored, as Xu et al. define CAR) or `normalized` (min-max
            across the teachers of each prompt, which keeps the ratio meaningful for reward models with negative
            logits).
        normalization (`str`, *optional*, defaults to `"minmax"`):
            Per-prompt normalisation used when rewards are recomputed (ablations); `car_quality: normalized` is
            always min-max.
        seed (`int`, *optional*, defaults to `42`):
            Seed of `mix`.
        router (`str`, *optional*): Deprecated name of `router_repo_id`.
        router_batch_size (`int`, *optional*): Deprecated name of `batch_size`.
    """

    strategy: str = field(default="persyn", metadata={"help": "Strategy name (see `persyn_hf.select`)."})
    router_repo_id: str | None = field(
        default=None,
        metadata={"help": "The PerSyn router (persyn): a folder or its repo id in the store / on the Hub."},
    )
    batch_size: int = field(default=64, metadata={"help": "Prompts per router forward pass (persyn)."})
    dtype: str = field(default=INFERENCE_DTYPE, metadata={"help": "Router dtype (persyn): auto, float32, ..."})
    strong_teacher: str | None = field(
        default=None, metadata={"help": "Teacher of `strong`; unset: the highest mean quality in the scores."}
    )
    student_family: str | None = field(
        default=None, metadata={"help": "Student's model family as in the teacher specs (family_strong)."}
    )
    family_strong_teacher: str | None = field(
        default=None, metadata={"help": "Teacher of `family_strong`; unset: the largest of `student_family`."}
    )
    car_beta: float = field(default=1.0, metadata={"help": "Weight of the student's loss in CAR (car)."})
    car_quality: str = field(default="raw", metadata={"help": "Reward CAR averages: raw or normalized."})
    normalization: str = field(
        default="minmax", metadata={"help": "Per-prompt normalisation of the ablations: minmax or zscore."}
    )
    seed: int = field(default=42, metadata={"help": "Seed of `mix`."})
    router: str | None = field(default=None, metadata={"help": "Deprecated: use `router_repo_id`."})
    router_batch_size: int | None = field(default=None, metadata={"help": "Deprecated: use `batch_size`."})

    def __post_init__(self):
        renamed(self, "router", "router_repo_id")
        renamed(self, "router_batch_size", "batch_size", default=64)
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"Unknown `strategy` {self.strategy!r}; choose one of {list(STRATEGIES)}")
        check_choice("normalization", self.normalization, NORMALIZATIONS)
        check_choice("car_quality", self.car_quality, CAR_QUALITIES)
        check_choice("dtype", self.dtype, DTYPES)
        check_positive(self, "batch_size")
        if self.strategy == "persyn" and not self.router_repo_id:
            raise ConfigError(
                "`strategy: persyn` needs `router_repo_id` (the path or repo id of a trained PerSyn router)."
            )
        if self.strategy == "family_strong" and not (self.student_family or self.family_strong_teacher):
            raise ConfigError(
                "`strategy: family_strong` needs `student_family` (e.g. 'Qwen2.5') or `family_strong_teacher`."
            )
        if self.car_beta < 0:
            raise ConfigError(f"`car_beta` must be >= 0, got {self.car_beta}")


def make_assignments(prompts: Dataset, prompt_ids: list, teachers: list[str]) -> Dataset:
    """The assignments dataset of a strategy without router scores (`router_scores` are empty lists)."""
    from datasets import Dataset

    features = CONTRACTS["assignments"].features(prompt_id=prompts.features["prompt_id"])
    return Dataset.from_dict(
        {"prompt_id": prompt_ids, "teacher": teachers, "router_scores": [[] for _ in prompt_ids]}, features=features
    )


def _one_teacher_for_all(prompts: Dataset, teacher: str) -> Dataset:
    return make_assignments(prompts, prompts["prompt_id"], [teacher] * len(prompts))


def _require_scores(scores: Dataset | None, strategy: str, columns: tuple[str, ...]) -> Dataset:
    """`scores`, checked to hold the `columns` a strategy reads."""
    if scores is None:
        raise ConfigError(f"Strategy {strategy!r} needs the scores dataset (`scores`, written by `persyn-hf score`).")
    validate(scores, "scores", required=("prompt_id", "teacher", *columns))
    return scores


def _declared(name: str, teachers: list[TeacherSpec], field_name: str) -> str:
    names = [t.name for t in teachers]
    if name not in names:
        raise ConfigError(f"`{field_name}` {name!r} is not a declared teacher; choose one of {names}")
    return name


def best_teachers(prompts: Dataset, scores: Dataset, teachers: list[str], column: str = "reward") -> Dataset:
    """Assign each prompt of `prompts` to the teacher with the highest finite `column` in `scores`.

    Ties go to the teacher listed first in `teachers`. Prompts without any finite score cannot be assigned and are
    left out, counted in a warning.
    """
    table = reward_table(scores, teachers, column)
    chosen_ids, chosen = [], []
    for prompt_id in prompts["prompt_id"]:
        rewards = np.array(table.get(prompt_id, [math.nan]))
        if np.isnan(rewards).all():
            continue
        chosen_ids.append(prompt_id)
        chosen.append(teachers[int(np.nanargmax(rewards))])  # first maximum: teacher-order tie-break
    if len(chosen) < len(prompts):
        logger.warning(
            f"{len(prompts) - len(chosen)} of {len(prompts)} prompts have no finite `{column}`: unassigned."
        )
    if not chosen:
        raise DataError(f"No prompt has a finite `{column}` in the scores: nothing can be assigned.")
    return make_assignments(prompts, chosen_ids, chosen)


def oracle(prompts, scores, teachers: list[TeacherSpec], config: SelectionConfig) -> Dataset:
    """The optimal teacher of each prompt under the true reward r of Eq. 2 (needs every teacher's response)."""
    return best_teachers(prompts, _require_scores(scores, "oracle", ("reward",)), [t.name for t in teachers])


def _ablation(alpha: float, strategy: str):
    def select(prompts, scores, teachers: list[TeacherSpec], config: SelectionConfig) -> Dataset:
        remixed = mix_rewards(
            _require_scores(scores, strategy, ("quality", "learnability")), alpha, config.normalization
        )
        return best_teachers(prompts, remixed, [t.name for t in teachers])

    select.__doc__ = f"Oracle-style argmax of r recomputed with α = {alpha:g} on the parallel scores."
    return select


def mean_per_teacher(scores: Dataset, teachers: list[str], values: list[float]) -> np.ndarray:
    """Mean of the finite `values` (one per score row) of each teacher, NaN for a teacher without any."""
    sums, counts = np.zeros(len(teachers)), np.zeros(len(teachers))
    index = {name: i for i, name in enumerate(teachers)}
    for teacher, value in zip(scores["teacher"], values):
        if teacher in index and value is not None and math.isfinite(value):
            sums[index[teacher]] += value
            counts[index[teacher]] += 1
    return np.divide(sums, counts, out=np.full(len(teachers), math.nan), where=counts > 0)


def _argmax_teacher(values: np.ndarray, teachers: list[str], what: str) -> str:
    if np.isnan(values).all():
        raise DataError(f"No teacher has a finite {what} in the scores.")
    return teachers[int(np.nanargmax(values))]


def strong(prompts, scores, teachers: list[TeacherSpec], config: SelectionConfig) -> Dataset:
    """Every prompt to one strongest teacher: `strong_teacher`, else the highest mean raw quality in the scores."""
    names = [t.name for t in teachers]
    if config.strong_teacher is not None:
        return _one_teacher_for_all(prompts, _declared(config.strong_teacher, teachers, "strong_teacher"))
    scores = _require_scores(scores, "strong (without `strong_teacher`)", ("quality",))
    mean_quality = mean_per_teacher(scores, names, scores["quality"])
    return _one_teacher_for_all(prompts, _argmax_teacher(mean_quality, names, "quality"))


def family_strong(prompts, scores, teachers: list[TeacherSpec], config: SelectionConfig) -> Dataset:
    """Every prompt to the strongest teacher of the student's family: `family_strong_teacher`, else the largest
    teacher (`size_b`, the first listed on a tie) of `student_family`."""
    if config.family_strong_teacher is not None:
        return _one_teacher_for_all(
            prompts, _declared(config.family_strong_teacher, teachers, "family_strong_teacher")
        )
    family = [t for t in teachers if t.family == config.student_family]
    if not family:
        families = sorted({t.family for t in teachers})
        raise ConfigError(
            f"No teacher of `student_family` {config.student_family!r}; the teachers' families: {families}"
        )
    sizes = np.array([t.size_b for t in family])
    return _one_teacher_for_all(prompts, family[int(np.argmax(sizes))].name)


def mix(prompts, scores, teachers: list[TeacherSpec], config: SelectionConfig) -> Dataset:
    """Each prompt to a teacher drawn uniformly at random (seeded), mixing weak and strong teachers."""
    draws = np.random.default_rng(config.seed).integers(len(teachers), size=len(prompts))
    return make_assignments(prompts, prompts["prompt_id"], [teachers[i].name for i in draws])


def car(prompts, scores, teachers: list[TeacherSpec], config: SelectionConfig) -> Dataset:
    """Every prompt to the one teacher with the highest compatibility-adjusted reward (Xu et al., 2025).

    For teacher m, over the scored prompts it answered:

        CAR(m) = r̄(m) / (1 + β · L̄(m))

    - r̄(m): mean reward of m's responses, raw as scored (`car_quality: raw`, Xu et al.'s definition; a reward
      model with negative logits makes the ratio favour high loss, so a negative mean is warned about), or
      normalised across the teachers of each prompt (`car_quality: normalized`, in [0, 1]);
    - L̄(m) = −mean learnability: the student's mean per-token negative log-likelihood of m's responses, i.e. its
      SFT loss on them, the compatibility risk of Xu et al.;
    - β = `car_beta` trades quality against compatibility: β = 0 ranks by quality alone, larger β favours teachers
      whose responses the student already finds likely.
    """
    names = [t.name for t in teachers]
    scores = _require_scores(scores, "car", ("quality", "learnability"))
    quality = scores["quality"]
    if config.car_quality == "normalized":
        quality = normalize_per_prompt(scores["prompt_id"], quality, "minmax").tolist()
    mean_quality = mean_per_teacher(scores, names, quality)
    if np.nanmin(mean_quality) < 0:
        logger.warning("CAR: some teachers' mean raw quality is negative; consider `car_quality: normalized`.")
    mean_loss = -mean_per_teacher(scores, names, scores["learnability"])
    compatibility_adjusted = mean_quality / (1.0 + config.car_beta * mean_loss)
    logger.info(f"CAR per teacher: {dict(zip(names, compatibility_adjusted.round(4).tolist()))}")
    return _one_teacher_for_all(prompts, _argmax_teacher(compatibility_adjusted, names, "quality and learnability"))


def persyn(prompts, scores, teachers: list[TeacherSpec], config: SelectionConfig) -> Dataset:
    """Each prompt to argmax π(x) of the trained PerSyn router ("Route then Generate"), as `persyn-hf route` does."""
    from persyn_hf.route import load_router, route_prompts

    router, tokenizer = load_router(config.router_repo_id, config.dtype)
    assignments = route_prompts(router, tokenizer, prompts, batch_size=config.batch_size)
    unknown = sorted(set(assignments["teacher"]) - {t.name for t in teachers})
    if unknown:
        raise ConfigError(
            f"The router {config.router_repo_id!r} routes to teacher(s) {unknown} that the teacher specs do not "
            "declare: use the teacher specs the router was trained with."
        )
    return assignments


# name -> strategy(prompts, scores or None, teacher specs, config) -> assignments
STRATEGIES = {
    "persyn": persyn,
    "oracle": oracle,
    "strong": strong,
    "family_strong": family_strong,
    "mix": mix,
    "car": car,
    "persyn_wo_quality": _ablation(1.0, "persyn_wo_quality"),
    "persyn_wo_learnability": _ablation(0.0, "persyn_wo_learnability"),
}


def select_teachers(prompts: Dataset, scores: Dataset | None, teachers: list[TeacherSpec], config: SelectionConfig):
    """Run `config.strategy` on `prompts` and return the assignments."""
    validate(prompts, "prompts")
    return STRATEGIES[config.strategy](prompts, scores, teachers, config)


def run(args: SelectArguments, selection: SelectionConfig, store: ArtifactStore | None = None) -> StageResult:
    """Assign the prompts with the configured strategy; returns the assignments and `{"allocation": ...}`.

    Under `accelerate launch` every process assigns every prompt (`persyn` routes them split across the processes)
    and only the main process writes."""
    from persyn_hf.route import allocation
    from persyn_hf.router import PersynRouterConfig

    store = store or ArtifactStore()
    store.check_output(args.assignments_repo_id, "assignments_repo_id", files=[data_file()])
    teachers = load_teachers(args.teachers)
    prompts = store.load_dataset(args.prompts_repo_id, args.prompts_config, args.prompts_split, contract="prompts")
    scores = store.load_dataset(args.scores_repo_id, contract="scores") if args.scores_repo_id else None
    if selection.router_repo_id is not None:
        selection.router_repo_id = store.resolve_model(
            selection.router_repo_id, "router_repo_id", model_type=PersynRouterConfig.model_type
        )
    assignments = select_teachers(prompts, scores, teachers, selection)
    location = store.save_dataset_from_main(args.assignments_repo_id, assignments)
    summary = {"strategy": selection.strategy, "allocation": allocation(assignments, [t.name for t in teachers])}
    return StageResult(assignments, location, summary)
