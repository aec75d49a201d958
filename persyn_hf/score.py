"""The score stage: every teacher response's quality, its learnability for the student, and their mix (Eq. 1-2).

Reads the generations and their prompts, scores each response with the chosen quality scorer and with the student
(`persyn_hf.learnability`), mixes both per prompt (`persyn_hf.rewards.mix_rewards`), and writes the scores dataset
(`prompt_id`, `teacher`, `quality`, `learnability`, `reward`) with a card that records α, the student and the
scorers: the router trained on these scores reads α from there. Under `accelerate launch` the responses are split
across the processes. Quality is kept on disk as soon as it is computed, so a run that fails later (e.g. loading the
student) reuses it when run again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from persyn_hf.configs import DTYPES, INFERENCE_DTYPE, check_choice, check_positive, process_state
from persyn_hf.contracts import CONTRACTS, StageResult, prompt_messages
from persyn_hf.errors import ConfigError, DataError
from persyn_hf.learnability import (
    ENGINE_ERROR,
    LearnabilityConfig,
    LearnabilityScores,
    prepare_student,
    score_learnability,
)
from persyn_hf.rewards import (
    NORMALIZATIONS,
    QUALITY_SCORERS,
    check_alpha,
    check_scorer_inputs,
    mix_rewards,
)
from persyn_hf.store import ArtifactStore, atomic_write, data_file

if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.getLogger(__name__)


@dataclass
class ScoreArguments:
    """What `persyn-hf score` reads and writes.

    Parameters:
        generations_repo_id (`str`):
            Artifact of the teachers' responses (`persyn-hf generate`).
        prompts_repo_id (`str`):
            Artifact of the prompts the responses answer (`prompt_id`, `prompt` or `messages`, `answer` for math).
        student (`str`):
            The student whose learnability is measured (its chat template renders prompts): a local folder, an
            artifact of the store, or a Hub id.
        scores_repo_id (`str`):
            Artifact the scores are written to.
        generations_config (`str`, *optional*, defaults to `"default"`):
            Dataset config of the generations artifact.
        prompts_config (`str`, *optional*, defaults to `"default"`):
            Dataset config of the prompts artifact.
        generations_split (`str`, *optional*, defaults to `"train"`):
            Split of the generations to score (e.g. `"router"` for the router subset of Magpie-Zoo).
        prompts_split (`str`, *optional*, defaults to `"train"`):
            Split of the prompts holding every scored prompt.
    """

    generations_repo_id: str = field(metadata={"help": "Artifact of the teachers' responses (persyn-hf generate)."})
    prompts_repo_id: str = field(metadata={"help": "Artifact of the prompts the responses answer."})
    student: str = field(metadata={"help": "The student: a local folder, a store artifact or a Hub id."})
    scores_repo_id: str = field(metadata={"help": "Artifact the scores are written to."})
    generations_config: str = field(default="default", metadata={"help": "Dataset config of the generations."})
    prompts_config: str = field(default="default", metadata={"help": "Dataset config of the prompts."})
    generations_split: str = field(default="train", metadata={"help": "Split of the generations to score."})
    prompts_split: str = field(default="train", metadata={"help": "Split of the prompts holding the scored ones."})


@dataclass
class ScoringConfig:
    """How responses are scored (paper §2.1).

    Parameters:
        quality_scorer (`str`, *optional*, defaults to `"reward_model"`):
            Name of the quality scorer in `QUALITY_SCORERS`: `reward_model`, `math_verify` or `precomputed`.
        reward_model (`str` or `None`, *optional*, defaults to `None`):
            Path or Hub id of an `AutoModelForSequenceClassification` reward model, for `reward_model`.
        quality_column (`str` or `None`, *optional*, defaults to `None`):
            Column of the generations that already holds the quality, for `precomputed`.
        reward_model_max_length (`int` or `None`, *optional*, defaults to `None`):
            Longest conversation the reward model scores, in tokens; a longer one gets no quality (NaN, counted).
            Defaults to the reward model's context (`max_position_embeddings` of its config).
        math_verify_timeout_s (`float`, *optional*, defaults to `5.0`):
            Time limit of one math-verify check, for `math_verify`; a check that overruns counts as not correct.
        alpha (`float`, *optional*, defaults to `0.4`):
            Weight of learnability in Eq. 2, r = (1-α)·quality + α·learnability. 0 and 1 are the paper's
            "w/o learnability" and "w/o quality" ablations. Recorded on the scores' card, where the router reads it.
        normalization (`str`, *optional*, defaults to `"minmax"`):
            Per-prompt normalisation across teachers before mixing: `minmax` or `zscore`.
        batch_size (`int`, *optional*, defaults to `16`):
            Most responses in one forward pass of the student or the reward model.
        max_tokens_per_batch (`int`, *optional*, defaults to `16384`):
            Most padded tokens in one forward pass; batches are length-bucketed so that padding stays small.
        dtype (`str`, *optional*, defaults to `"auto"`):
            Dtype the student and reward model are loaded in (`persyn_hf.configs`: models that run load `auto`).
    """

    quality_scorer: str = field(
        default="reward_model", metadata={"help": "Quality scorer: reward_model, math_verify or precomputed."}
    )
    reward_model: str | None = field(
        default=None, metadata={"help": "Path or Hub id of the reward model (quality_scorer=reward_model)."}
    )
    quality_column: str | None = field(
        default=None, metadata={"help": "Generations column holding the quality (quality_scorer=precomputed)."}
    )
    reward_model_max_length: int | None = field(
        default=None, metadata={"help": "Longest conversation the reward model scores (default: its context)."}
    )
    math_verify_timeout_s: float = field(
        default=5.0, metadata={"help": "Time limit of one math-verify check; overrunning counts as not correct."}
    )
    alpha: float = field(default=0.4, metadata={"help": "Weight of learnability in Eq. 2, in [0, 1]."})
    normalization: str = field(
        default="minmax", metadata={"help": "Per-prompt normalisation across teachers: minmax or zscore."}
    )
    batch_size: int = field(default=16, metadata={"help": "Most responses in one forward pass."})
    max_tokens_per_batch: int = field(default=16384, metadata={"help": "Most padded tokens in one forward pass."})
    dtype: str = field(default=INFERENCE_DTYPE, metadata={"help": "Model dtype: auto, float32, bfloat16 or float16."})

    def __post_init__(self):
        check_alpha(self.alpha)
        if self.quality_scorer not in QUALITY_SCORERS:
            raise ConfigError(
                f"Unknown `quality_scorer` {self.quality_scorer!r}; choose one of {list(QUALITY_SCORERS)}"
            )
        check_choice("normalization", self.normalization, NORMALIZATIONS)
        check_choice("dtype", self.dtype, DTYPES)
        check_positive(self, "batch_size", "max_tokens_per_batch")
        if self.reward_model_max_length is not None:
            check_positive(self, "reward_model_max_length")
        if self.quality_scorer == "reward_model" and not self.reward_model:
            raise ConfigError("`quality_scorer: reward_model` needs `reward_model` (a path or Hub id).")
        if self.quality_scorer == "precomputed" and not self.quality_column:
            raise ConfigError("`quality_scorer: precomputed` needs `quality_column` (the column holding the quality).")


def scoring_rows(generations: Dataset, prompts: Dataset) -> Dataset:
    """The generations with their prompt as chat `messages` (and the gold `answer` when the prompts have one)."""
    by_id = {row["prompt_id"]: row for row in prompts}
    unknown = sorted({p for p in generations["prompt_id"] if p not in by_id}, key=str)
    if unknown:
        raise DataError(
            f"{len(unknown)} prompt_id(s) of the generations are not in the prompts dataset (first: {unknown[:3]}): "
            "pass the prompts dataset the generations were made from."
        )
    rows = generations.add_column("messages", [prompt_messages(by_id[p]) for p in generations["prompt_id"]])
    if "answer" in prompts.column_names and "answer" not in generations.column_names:
        rows = rows.add_column("answer", [by_id[p]["answer"] for p in generations["prompt_id"]])
    return rows


def cached(cache: Path | None, kind: str, key: list, compute, keep=lambda value: True):
    """`compute()`, or what an earlier run stored in `cache` for the same `key` (JSON): scores already computed are
    never lost when a later step fails, and runs that only re-mix them (another α) do not compute them again.

    The file is written atomically; one that cannot be read (e.g. cut short by a full disk) is computed again. A
    value that `keep` refuses (scores a server failed to compute) is not stored: the next run computes it again."""
    digest = hashlib.sha256(json.dumps(key, default=str).encode()).hexdigest()[:16]
    path = cache / f"{kind}-{digest}.json" if cache is not None else None
    if path is not None and path.is_file():
        try:
            value = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            logger.warning("The %s scores stored in %s cannot be read (%s): computing them again.", kind, path, error)
        else:
            logger.info("Reusing the %s scores stored in %s", kind, path)
            return value
    value = compute()
    if path is not None and not keep(value):
        logger.warning("The %s scores are not kept: some failed on the server; run again to compute them.", kind)
    elif path is not None:
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(value)))
    return value


def model_fingerprint(location: str | None) -> list:
    """What a model's scores depend on: its name, and for a local folder when its files last changed."""
    if location is None or not Path(location).is_dir():
        return [location]
    return [str(Path(location).resolve()), sorted((p.name, p.stat().st_mtime_ns) for p in Path(location).iterdir())]


def score_responses(
    rows: Dataset,
    student: str,
    scoring: ScoringConfig,
    learnability: LearnabilityConfig,
    device="cpu",
    show_progress=True,
    cache: Path | None = None,
) -> tuple[list[float], LearnabilityScores]:
    """(quality, learnability) of every row: the configured quality scorer, then Eq. 1 with the student, whose
    tokenizer, template and length bound are checked first (a bad student fails before the quality work). Both are
    kept in `cache` as they are computed."""
    prepare_student(learnability, student)
    responses = [rows["prompt_id"], rows["teacher"], rows["response"]]
    quality_inputs = [
        rows[column] for column in ("messages", "answer", scoring.quality_column) if column in rows.column_names
    ]
    quality = cached(
        cache,
        "quality",
        [scoring.quality_scorer, model_fingerprint(scoring.reward_model), scoring.quality_column,
         scoring.math_verify_timeout_s, scoring.reward_model_max_length, scoring.dtype, *responses, *quality_inputs],
        lambda: QUALITY_SCORERS[scoring.quality_scorer](rows, scoring, device=device, show_progress=show_progress),
    )  # fmt: skip
    learned = cached(
        cache,
        "learnability",
        [model_fingerprint(student), dataclasses.asdict(learnability), scoring.dtype, rows["messages"], *responses],
        lambda: dataclasses.asdict(
            score_learnability(
                learnability,
                student,
                rows["messages"],
                rows["response"],
                batch_size=scoring.batch_size,
                max_tokens_per_batch=scoring.max_tokens_per_batch,
                dtype=scoring.dtype,
                device=device,
                show_progress=show_progress,
            )
        ),
        keep=lambda learned: ENGINE_ERROR not in learned["nan_reasons"],
    )
    return quality, LearnabilityScores(**learned)


def scores_card(args: ScoreArguments, scoring: ScoringConfig, scores: Dataset, summary: dict):
    """The scores' card: what was scored, for which student, how, and α (which the router's card repeats)."""
    from huggingface_hub import DatasetCard, DatasetCardData

    from persyn_hf.cards import hub_link
    from persyn_hf.templates import template_path

    persyn = {
        "artifact": "scores",
        "generations_repo_id": args.generations_repo_id,
        "student": args.student,
        "alpha": scoring.alpha,
        "normalization": scoring.normalization,
        "quality_scorer": scoring.quality_scorer,
        "reward_model": scoring.reward_model,
        **summary,
    }
    return DatasetCard.from_template(
        DatasetCardData(pretty_name=f"PerSyn scores for {args.student}", tags=["persyn", "rewards"], persyn=persyn),
        template_path=template_path("scores_card.md"),
        pretty_name=f"PerSyn scores for {args.student}",
        generations_link=hub_link(args.generations_repo_id, "dataset"),
        student_link=hub_link(args.student),
        teachers=sorted(set(scores["teacher"])),
        num_rows=len(scores),
        **persyn,
    )


def run(
    args: ScoreArguments,
    scoring: ScoringConfig,
    learnability: LearnabilityConfig | None = None,
    store: ArtifactStore | None = None,
) -> StageResult:
    """Score every response of the generations for the student; returns the scores, where they went and counts
    (responses without a quality, and without a learnability per reason).

    Every input is checked before any model is loaded; under `accelerate launch` only the main process writes.
    """
    from accelerate.utils import gather_object
    from datasets import Dataset

    store = store or ArtifactStore()
    learnability = learnability or LearnabilityConfig()
    state = process_state()
    store.check_output(args.scores_repo_id, "scores_repo_id", files=[data_file()])
    student = store.resolve_model(args.student, "student", hub_ids=True)
    reward_model = scoring.reward_model and store.resolve_model(scoring.reward_model, "reward_model", hub_ids=True)
    scorer = dataclasses.replace(scoring, reward_model=reward_model)  # the card keeps the name as given
    generations = store.load_dataset(
        args.generations_repo_id, args.generations_config, args.generations_split, contract="generations"
    )
    prompts = store.load_dataset(args.prompts_repo_id, args.prompts_config, args.prompts_split, contract="prompts")
    rows = scoring_rows(generations, prompts)
    check_scorer_inputs(rows, scorer)
    cache = Path(store.root, ".persyn-results", "scores")  # keyed by what was scored; kept when pushing too
    if state.is_main_process:
        logger.info(f"Scoring {len(rows)} responses over {state.num_processes} process(es)")
    with state.split_between_processes(list(range(len(rows)))) as shard:
        quality, learned = score_responses(
            rows.select(shard), student, scorer, learnability, state.device, state.is_local_main_process, cache
        )
        scored = list(zip(shard, quality, learned.scores, learned.nan_reasons))
    scored = sorted(gather_object(scored))
    learned = LearnabilityScores([lrn for _, _, lrn, _ in scored], [why for *_, why in scored])
    scores = Dataset.from_dict(
        {
            "prompt_id": rows["prompt_id"],
            "teacher": rows["teacher"],
            "quality": [q for _, q, _, _ in scored],
            "learnability": learned.scores,
        }
    )
    scores = mix_rewards(scores, scoring.alpha, scoring.normalization)
    scores = scores.cast(CONTRACTS["scores"].features(prompt_id=generations.features["prompt_id"]))
    summary = {
        "num_prompts": len(set(rows["prompt_id"])),
        "quality_missing": sum(1 for _, q, _, _ in scored if q is None or math.isnan(q)),
        "learnability_missing": learned.nan_counts,
        "learnability": learned.summary(),
        "count_end_of_turn": learnability.count_end_of_turn,
    }
    location = store.save_dataset_from_main(
        args.scores_repo_id, scores, card=scores_card(args, scoring, scores, summary)
    )
    return StageResult(scores, location, summary)
