"""PerSyn-Math: math problems from OpenR1-Math-220K, each answered by every math teacher with rejection sampling.

The builder samples `num_problems` problems (paper: 10K) from a local copy of
[open-r1/OpenR1-Math-220k](https://huggingface.co/datasets/open-r1/OpenR1-Math-220k) with a seed, has every
teacher answer every problem through the teacher pool (`mode: parallel`; math prompts go through rejection
sampling, each sample checked with math-verify against the gold `answer`), and writes three configs:

- `default`: one row per problem (`prompt_id`, `problem`, `answer`, `source`) and one column per teacher, a
  struct with its kept response (`content`), its correctness, the samples drawn and the finish reason;
- `prompts`: the prompts contract (`prompt_id`, `prompt`, `answer`, `source`);
- `generations`: the generations contract, one row per (problem, teacher), for `persyn-hf score`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from persyn_hf.builders import check_schema, load_source, sample_indices, teacher_names_in_specs
from persyn_hf.contracts import StageResult, check_unique
from persyn_hf.errors import ConfigError
from persyn_hf.generate import SynthesisConfig, resolve_local_weights, synthesize
from persyn_hf.store import ArtifactStore, data_file
from persyn_hf.teachers.spec import load_teachers

if TYPE_CHECKING:
    from datasets import Dataset

OPENR1_MATH_ID = "open-r1/OpenR1-Math-220k"
OPENR1_MATH_REQUIRED = ("problem", "answer", "uuid", "source")
# Every column of OpenR1-Math-220k (configs `default` and `extended`).
OPENR1_MATH_COLUMNS = (
    "problem",
    "solution",
    "answer",
    "problem_type",
    "question_type",
    "source",
    "uuid",
    "is_reasoning_complete",
    "generations",
    "correctness_math_verify",
    "correctness_llama",
    "finish_reasons",
    "correctness_count",
    "messages",
)


@dataclass
class PersynMathConfig:
    """Build PerSyn-Math, the parallel-response math dataset.

    Parameters:
        source (`str`):
            Local copy of OpenR1-Math-220K: a parquet or JSON file, or a downloaded snapshot folder.
        teachers (`str`, *optional*, defaults to `"recipes/persyn_math/teachers.yaml"`):
            Teacher specs of the math teachers.
        output_repo_id (`str`, *optional*, defaults to `"persyn/persyn-math"`):
            Dataset repo (or local-store folder) written.
        num_problems (`int`, *optional*, defaults to `10000`):
            Problems sampled (paper: 10K).
        sample_seed (`int`, *optional*, defaults to `42`):
            Seed of the problem sample (the synthesis has its own `seed`).
    """

    source: str = field(metadata={"help": "Local copy of OpenR1-Math-220K (parquet/JSON file or folder)."})
    teachers: str = field(default="recipes/persyn_math/teachers.yaml", metadata={"help": "Math teacher specs."})
    output_repo_id: str = field(default="persyn/persyn-math", metadata={"help": "Dataset repo written."})
    num_problems: int = field(default=10_000, metadata={"help": "Problems sampled."})
    sample_seed: int = field(default=42, metadata={"help": "Seed of the problem sample."})


def sample_problems(config: PersynMathConfig) -> Dataset:
    """The sampled problems as a prompts dataset (`prompt_id`, `prompt`, `answer`, `source`)."""
    from datasets import Dataset

    source = load_source(config.source)
    check_schema(
        source.column_names,
        required=OPENR1_MATH_REQUIRED,
        allowed=OPENR1_MATH_COLUMNS,
        source=f"OpenR1-Math source {config.source!r}",
        fix=f"Give a copy of {OPENR1_MATH_ID} (it needs {list(OPENR1_MATH_REQUIRED)}).",
    )
    check_unique(source["uuid"], "uuid", f"OpenR1-Math source {config.source!r}")
    sample = source.select(sample_indices(len(source), config.num_problems, config.sample_seed, "num_problems"))
    return Dataset.from_dict(
        {
            "prompt_id": sample["uuid"],
            "prompt": sample["problem"],
            "answer": sample["answer"],
            "source": sample["source"],
        }
    )


def parallel_responses(prompts: Dataset, generations: Dataset, teachers: list[str]) -> Dataset:
    """One row per problem, one struct column per teacher (`None` where a teacher left the problem undone)."""
    from datasets import Dataset

    kept = {(row["prompt_id"], row["teacher"]): row for row in generations}
    columns = {"prompt_id": prompts["prompt_id"], "problem": prompts["prompt"]}
    columns.update(answer=prompts["answer"], source=prompts["source"])
    for teacher in teachers:
        columns[teacher] = [
            None
            if (row := kept.get((prompt_id, teacher))) is None
            else {
                "content": row["response"],
                "correct": row["correct"],
                "num_samples": row["num_samples"],
                "finish_reason": row["finish_reason"],
            }
            for prompt_id in prompts["prompt_id"]
        ]
    return Dataset.from_dict(columns)


def run(config: PersynMathConfig, synthesis: SynthesisConfig, store: ArtifactStore | None = None) -> StageResult:
    """Sample problems, have every teacher answer them, and save PerSyn-Math with its card."""
    from persyn_hf.cards import parallel_dataset_card

    store = store or ArtifactStore()
    store.check_output(
        config.output_repo_id,
        "output_repo_id",
        files=[data_file(name) for name in ("default", "prompts", "generations")],
    )
    if synthesis.mode != "parallel":
        raise ConfigError(
            f"PerSyn-Math needs every teacher on every problem: set `mode: parallel`, not {synthesis.mode!r}."
        )
    teachers = resolve_local_weights(load_teachers(config.teachers), store)
    names = [spec.name for spec in teachers]
    prompts = sample_problems(config)
    generations, cost = synthesize(prompts, teachers, synthesis)
    teacher_names_in_specs(generations.unique("teacher"), names, "the generations", config.teachers)

    card = parallel_dataset_card(
        repo_id=config.output_repo_id,
        pretty_name="PerSyn-Math",
        source_dataset=OPENR1_MATH_ID,
        seed=config.sample_seed,
        teachers=teachers,
        generations=generations,
        num_prompts=len(prompts),
        responses_note=f"Responses: generated by each teacher with synthesis seed `{synthesis.seed}`.",
        generation_parameters=True,
        rejection_sampling=(
            f"{synthesis.samples_small} from teachers under {synthesis.large_teacher_size_b:g}B, "
            f"{synthesis.samples_large} from larger and long-CoT teachers"
            + (", stopping at the first correct sample" if synthesis.stop_at_first_correct else "")
        ),
        cost=cost.to_dict(),
        subsets=[
            {"name": "default", "splits": "`train`", "row": "a problem, with every teacher's kept response"},
            {"name": "prompts", "splits": "`train`", "row": "a problem (`prompt_id`, `prompt`, `answer`, `source`)"},
            {"name": "generations", "splits": "`train`", "row": "a (problem, teacher) kept response"},
        ],
    )
    location = store.save_dataset(config.output_repo_id, parallel_responses(prompts, generations, names), card=card)
    store.save_dataset(config.output_repo_id, prompts, config_name="prompts")
    store.save_dataset(config.output_repo_id, generations, config_name="generations")
    return StageResult(generations, location, {"num_prompts": len(prompts), "cost": cost.to_dict()})
