"""Strategies that assign each prompt to a teacher (paper §2, §3.1 and appendix A.6), chosen by name.

Every strategy maps `(prompts, scores, teachers, config)` to assignments: one row per prompt with `prompt_id`,
`teacher` and `router_scores` (the router's π(x) for `persyn`, an empty list for the others).

| name | teacher of each prompt | needs |
|---|---|---|
| `persyn` | argmax of the trained router's scores π(x) | `router` |
| `oracle` | argmax of the true reward r (Eq. 2) | scores |
| `persyn_wo_quality` | argmax of r recomputed with α = 1 (learnability only) | scores |
| `persyn_wo_learnability` | argmax of r recomputed with α = 0 (quality only) | scores |
| `strong` | one teacher for all: `strong_teacher`, else the highest mean quality | scores if unnamed |
| `family_strong` | one teacher for all: the largest teacher of `student_family` | teacher specs |
| `mix` | a uniformly random teacher, seeded | — |
| `car` | one teacher for all: the highest compatibility-adjusted reward | scores |

Argmax ties go to the teacher listed first in the teacher specs.

The two ablations here are their Generate-then-Select form, for prompts that every teacher answered. Their
Route-then-Generate form, as `persyn-hf demo` runs them, trains a router on rewards without one term:
`persyn-hf score --alpha 1` (or `0`) on the router's subset, `persyn-hf train-router`, then `persyn-hf route`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
from datasets import Dataset, Features, List, Value

from persyn_hf.pairs import prompt_columns, reward_table
from persyn_hf.rewards import NORMALIZATIONS, mix_rewards, normalize_per_prompt, require_columns
from persyn_hf.teachers import TeacherSpec

logger = logging.getLogger(__name__)


@dataclass
class SelectionConfig:
    """How prompts are assigned to teachers.

    Parameters:
        strategy (`str`, *optional*, defaults to `"persyn"`):
            Name of the strategy in `STRATEGIES`.
        router (`str` or `None`, *optional*, defaults to `None`):
            The trained PerSyn router, for `persyn`: a folder, or its repo id in the artifact store (or on the Hub).
        router_batch_size (`int`, *optional*, defaults to `64`):
            Prompts per router forward pass, for `persyn`.
        strong_teacher (`str` or `None`, *optional*, defaults to `None`):
            The teacher of `strong`; when unset, the teacher with the highest mean quality in the scores.
        student_family (`str` or `None`, *optional*, defaults to `None`):
            The student's model family (as in the teacher specs' `family`), for `family_strong`.
        car_beta (`float`, *optional*, defaults to `1.0`):
            Weight β of the student's loss in the compatibility-adjusted reward, for `car`.
        normalization (`str`, *optional*, defaults to `"minmax"`):
            Per-prompt normalisation used when rewards are recomputed (ablations) and for `car`'s quality.
        seed (`int`, *optional*, defaults to `42`):
            Seed of `mix`.
    """

    strategy: str = field(default="persyn", metadata={"help": "Strategy name (see `persyn_hf.strategies`)."})
    router: str | None = field(
        default=None,
        metadata={"help": "The PerSyn router (persyn): a folder or its repo id in the store / on the Hub."},
    )
    router_batch_size: int = field(default=64, metadata={"help": "Prompts per router forward pass (persyn)."})
    strong_teacher: str | None = field(
        default=None, metadata={"help": "Teacher of `strong`; unset: the highest mean quality in the scores."}
    )
    student_family: str | None = field(
        default=None, metadata={"help": "Student's model family as in the teacher specs (family_strong)."}
    )
    car_beta: float = field(default=1.0, metadata={"help": "Weight of the student's loss in CAR (car)."})
    normalization: str = field(
        default="minmax", metadata={"help": "Per-prompt normalisation for ablations and CAR: minmax or zscore."}
    )
    seed: int = field(default=42, metadata={"help": "Seed of `mix`."})

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"Unknown `strategy` {self.strategy!r}; choose one of {list(STRATEGIES)}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"`normalization` must be one of {list(NORMALIZATIONS)}, got {self.normalization!r}")
        if self.strategy == "persyn" and not self.router:
            raise ValueError("`strategy: persyn` needs `router` (the path or Hub id of a trained PerSyn router).")
        if self.strategy == "family_strong" and not self.student_family:
            raise ValueError("`strategy: family_strong` needs `student_family` (e.g. 'Qwen2.5').")
        if self.car_beta < 0:
            raise ValueError(f"`car_beta` must be >= 0, got {self.car_beta}")


def make_assignments(prompt_ids: list, teachers: list[str], router_scores: list[list[float]] | None = None) -> Dataset:
    """The assignments dataset: `prompt_id`, `teacher`, `router_scores` (empty lists when not given)."""
    features = Features(
        {
            "prompt_id": Value("int64") if prompt_ids and isinstance(prompt_ids[0], int) else Value("string"),
            "teacher": Value("string"),
            "router_scores": List(Value("float64")),
        }
    )
    scores = router_scores if router_scores is not None else [[] for _ in prompt_ids]
    return Dataset.from_dict(
        {"prompt_id": prompt_ids, "teacher": teachers, "router_scores": scores}, features=features
    )


def _one_teacher_for_all(prompts: Dataset, teacher: str) -> Dataset:
    return make_assignments(prompts["prompt_id"], [teacher] * len(prompts))


def _require_scores(scores: Dataset | None, strategy: str) -> Dataset:
    if scores is None:
        raise ValueError(f"Strategy {strategy!r} needs the scores dataset (`scores`, written by `persyn-hf score`).")
    return scores


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
        raise ValueError(f"No prompt has a finite `{column}` in the scores: nothing can be assigned.")
    return make_assignments(chosen_ids, chosen)


def oracle(prompts, scores, teachers: list[TeacherSpec], config: SelectionConfig) -> Dataset:
    """The optimal teacher of each prompt under the true reward r of Eq. 2 (needs every teacher's response)."""
    return best_teachers(prompts, _require_scores(scores, "oracle"), [t.name for t in teachers])


def _ablation(alpha: float, strategy: str):
    def select(prompts, scores, teachers: list[TeacherSpec], config: SelectionConfig) -> Dataset:
        remixed = mix_rewards(_require_scores(scores, strategy), alpha, config.normalization)
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
        raise ValueError(f"No teacher has a finite {what} in the scores.")
    return teachers[int(np.nanargmax(values))]


def strong(prompts, scores, teachers: list[TeacherSpec], config: SelectionConfig) -> Dataset:
    """Every prompt to one strongest teacher: `strong_teacher`, else the highest mean raw quality in the scores."""
    names = [t.name for t in teachers]
    if config.strong_teacher is not None:
        if config.strong_teacher not in names:
            raise ValueError(
                f"`strong_teacher` {config.strong_teacher!r} is not a declared teacher; choose one of {names}"
            )
        return _one_teacher_for_all(prompts, config.strong_teacher)
    scores = _require_scores(scores, "strong (without `strong_teacher`)")
    require_columns(scores, ["teacher", "quality"], "scores")
    mean_quality = mean_per_teacher(scores, names, scores["quality"])
    return _one_teacher_for_all(prompts, _argmax_teacher(mean_quality, names, "quality"))


def family_strong(prompts, scores, teachers: list[TeacherSpec], config: SelectionConfig) -> Dataset:
    """Every prompt to the largest teacher (`size_b`) of the student's family."""
    family = [t for t in teachers if t.family == config.student_family]
    if not family:
        families = sorted({t.family for t in teachers})
        raise ValueError(
            f"No teacher of `student_family` {config.student_family!r}; the teachers' families: {families}"
        )
    sizes = np.array([t.size_b for t in family])
    return _one_teacher_for_all(prompts, family[int(np.argmax(sizes))].name)


def mix(prompts, scores, teachers: list[TeacherSpec], config: SelectionConfig) -> Dataset:
    """Each prompt to a teacher drawn uniformly at random (seeded), mixing weak and strong teachers."""
    draws = np.random.default_rng(config.seed).integers(len(teachers), size=len(prompts))
    return make_assignments(prompts["prompt_id"], [teachers[i].name for i in draws])


def car(prompts, scores, teachers: list[TeacherSpec], config: SelectionConfig) -> Dataset:
    """Every prompt to the one teacher with the highest compatibility-adjusted reward (Xu et al., 2025).

    For teacher m, over the scored prompts it answered:

        CAR(m) = Q̄(m) / (1 + β · L̄(m))

    - Q̄(m): mean quality of m's responses, each normalised across the teachers of its prompt (min-max by
      default, as in Eq. 2), so that it lies in [0, 1] and the ratio rewards quality for any reward model scale
      (raw reward-model logits may be negative, which would turn the ratio upside down);
    - L̄(m) = −mean learnability: the student's mean per-token negative log-likelihood of m's responses, i.e. its
      SFT loss on them, the compatibility risk of Xu et al.;
    - β = `car_beta` (default 1.0) trades quality against compatibility: β = 0 ranks by quality alone, larger β
      favours teachers whose responses the student already finds likely.
    """
    names = [t.name for t in teachers]
    scores = _require_scores(scores, "car")
    require_columns(scores, ["prompt_id", "teacher", "quality", "learnability"], "scores")
    quality = normalize_per_prompt(scores["prompt_id"], scores["quality"], config.normalization)
    mean_quality = mean_per_teacher(scores, names, quality.tolist())
    mean_loss = -mean_per_teacher(scores, names, scores["learnability"])
    compatibility_adjusted = mean_quality / (1.0 + config.car_beta * mean_loss)
    logger.info(f"CAR per teacher: {dict(zip(names, compatibility_adjusted.round(4).tolist()))}")
    return _one_teacher_for_all(prompts, _argmax_teacher(compatibility_adjusted, names, "quality and learnability"))


def persyn(prompts, scores, teachers: list[TeacherSpec], config: SelectionConfig) -> Dataset:
    """Each prompt to argmax π(x) of the trained PerSyn router ("Route then Generate")."""
    from transformers import AutoModel, AutoTokenizer

    import persyn_hf  # noqa: F401  (registers the router with AutoModel)
    from persyn_hf.routing import route_prompts

    router = AutoModel.from_pretrained(config.router)
    tokenizer = AutoTokenizer.from_pretrained(config.router)
    assignments = route_prompts(router, tokenizer, prompts, batch_size=config.router_batch_size)
    unknown = sorted(set(assignments["teacher"]) - {t.name for t in teachers})
    if unknown:
        raise ValueError(
            f"The router {config.router!r} routes to teacher(s) {unknown} that the teacher specs do not declare: "
            "use the teacher specs the router was trained with."
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
    prompt_columns(prompts)
    return STRATEGIES[config.strategy](prompts, scores, teachers, config)
