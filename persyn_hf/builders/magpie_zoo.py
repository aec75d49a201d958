"""Magpie-Zoo: the instruction-tuning prompts of PerSyn with the 19 teachers' precomputed responses.

[Magpie-Align/Magpie-100K-Generator-Zoo](https://huggingface.co/datasets/Magpie-Align/Magpie-100K-Generator-Zoo)
holds 100K instructions, each answered (greedy decoding) by the 19 teachers of the paper's Table 8 (left). Its
columns are `uuid`, `instruction`, and one column per teacher, named after the model (e.g. `gemma-2-2b-it`),
each a struct with the response (`content`) and its reward-model scores (`ArmoRM-Llama3-8B-v0.1`,
`Skywork-Reward-Llama-3.1-8B`, `Skywork-Reward-Gemma-2-27B`).

This builder samples the training prompts (paper: 50K) and, among them, the router subset (paper: 2.5K) with a
seed, and writes them as the pipeline's contracts: config `prompts` (`prompt_id`, `prompt`, `source`) and config
`generations` (one row per prompt and teacher, with the chosen reward as `quality`, ready for the `precomputed`
quality scorer), each with a `train` and a `router` split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from persyn_hf.builders import check_schema, load_source, sample_indices
from persyn_hf.contracts import CONTRACTS, StageResult, check_unique
from persyn_hf.errors import ConfigError, DataError
from persyn_hf.store import ArtifactStore, data_file
from persyn_hf.teachers.spec import TeacherSpec, load_teachers

if TYPE_CHECKING:
    from datasets import Dataset, Features

MAGPIE_ZOO_ID = "Magpie-Align/Magpie-100K-Generator-Zoo"
MAGPIE_ZOO_REWARDS = ("ArmoRM-Llama3-8B-v0.1", "Skywork-Reward-Llama-3.1-8B", "Skywork-Reward-Gemma-2-27B")


def generations_features() -> Features:
    """The generations contract plus the published reward, as `quality` (for the `precomputed` quality scorer)."""
    from datasets import Features, Value

    return Features({**CONTRACTS["generations"].features(), "quality": Value("float64")})


@dataclass
class MagpieZooConfig:
    """Build the Magpie-Zoo prompts and parallel generations.

    Parameters:
        source (`str`):
            Local copy of Magpie-100K-Generator-Zoo: a parquet or JSON file, or a downloaded snapshot folder.
        teachers (`str`, *optional*, defaults to `"recipes/magpie_zoo/teachers.yaml"`):
            Teacher specs; each teacher's `name` is its column in the source.
        output_repo_id (`str`, *optional*, defaults to `"persyn/magpie-zoo"`):
            Dataset repo (or local-store folder) written.
        reward_field (`str`, *optional*, defaults to `"Skywork-Reward-Llama-3.1-8B"`):
            The reward of each teacher's struct that becomes the `quality` column.
        num_train_prompts (`int`, *optional*, defaults to `50000`):
            Prompts sampled for training (paper: 50K).
        num_router_prompts (`int`, *optional*, defaults to `2500`):
            Of those, prompts in the router subset (paper: 2.5K).
        sample_seed (`int`, *optional*, defaults to `42`):
            Seed of both samples.
    """

    source: str = field(metadata={"help": "Local copy of Magpie-100K-Generator-Zoo (parquet/JSON file or folder)."})
    teachers: str = field(
        default="recipes/magpie_zoo/teachers.yaml", metadata={"help": "Teacher specs; `name` = source column."}
    )
    output_repo_id: str = field(default="persyn/magpie-zoo", metadata={"help": "Dataset repo written."})
    reward_field: str = field(
        default="Skywork-Reward-Llama-3.1-8B",
        metadata={
            "help": f"Reward field of the teacher structs that becomes `quality`: one of {list(MAGPIE_ZOO_REWARDS)}."
        },
    )
    num_train_prompts: int = field(default=50_000, metadata={"help": "Prompts sampled for training."})
    num_router_prompts: int = field(default=2_500, metadata={"help": "Of those, prompts in the router subset."})
    sample_seed: int = field(default=42, metadata={"help": "Seed of the prompt samples."})

    def __post_init__(self):
        if not 0 < self.num_router_prompts <= self.num_train_prompts:
            raise ConfigError(
                f"`num_router_prompts` must be in [1, num_train_prompts={self.num_train_prompts}], "
                f"got {self.num_router_prompts}: the router subset is drawn from the training prompts."
            )


def check_teacher_columns(source: Dataset, teachers: list[TeacherSpec], reward_field: str) -> None:
    """Each teacher column must be a struct with the response (`content`) and `reward_field`."""
    problems = []
    for spec in teachers:
        feature = source.features[spec.name]
        fields = list(feature) if isinstance(feature, dict) else []
        missing = [key for key in ("content", reward_field) if key not in fields]
        if missing:
            problems.append(f"{spec.name!r} lacks {missing} (has {fields or type(feature).__name__})")
    if problems:
        raise DataError(
            "Teacher columns must be structs with `content` and the reward `reward_field`: "
            + "; ".join(problems)
            + f". Choose `reward_field` among {list(MAGPIE_ZOO_REWARDS)}."
        )


def _generation_rows(batch: dict, teachers: list[str], reward_field: str) -> dict:
    """A batch of Magpie-Zoo rows -> one generations row per (prompt, teacher), teachers in spec order."""
    rows = {name: [] for name in CONTRACTS["generations"].columns}
    rows["quality"] = []
    for i, prompt_id in enumerate(batch["uuid"]):
        for teacher in teachers:
            answer = batch[teacher][i] or {}
            rows["prompt_id"].append(prompt_id)
            rows["teacher"].append(teacher)
            rows["response"].append(answer.get("content"))
            rows["quality"].append(answer.get(reward_field))
    size = len(rows["prompt_id"])
    # Precomputed responses: one greedy sample each; no finish reason, verdict or token counts were published.
    rows.update(finish_reason=[None] * size, num_samples=[1] * size, correct=[None] * size)
    rows.update(prompt_tokens=[None] * size, completion_tokens=[None] * size)
    return rows


def run(config: MagpieZooConfig, store: ArtifactStore | None = None) -> StageResult:
    """Sample Magpie-Zoo into prompts and generations (train and router splits) with their card."""
    from datasets import Dataset

    from persyn_hf.cards import hub_link, parallel_dataset_card

    store = store or ArtifactStore()
    store.check_output(
        config.output_repo_id,
        "output_repo_id",
        files=[data_file(name, split) for name in ("prompts", "generations") for split in ("train", "router")],
    )
    teachers = load_teachers(config.teachers)
    names = [spec.name for spec in teachers]
    source = load_source(config.source)
    check_schema(
        source.column_names,
        required=["uuid", "instruction", *names],
        allowed=["uuid", "instruction", *names],
        source=f"Magpie-Zoo source {config.source!r}",
        fix=f"Expected `uuid`, `instruction` and one column per teacher of {config.teachers!r}; a teacher column "
        "that is not in the specs is unexpected: declare the teacher there, or drop the column.",
    )
    check_teacher_columns(source, teachers, config.reward_field)
    check_unique(source["uuid"], "uuid", f"Magpie-Zoo source {config.source!r}")
    indices = sample_indices(len(source), config.num_train_prompts, config.sample_seed, "num_train_prompts")
    sample = source.select(indices)

    prompts = Dataset.from_dict(
        {"prompt_id": sample["uuid"], "prompt": sample["instruction"], "source": [MAGPIE_ZOO_ID] * len(sample)}
    )
    generations = sample.map(
        _generation_rows,
        batched=True,
        remove_columns=sample.column_names,
        features=generations_features(),
        fn_kwargs={"teachers": names, "reward_field": config.reward_field},
        desc="Magpie-Zoo -> generations",
    )
    # The router subset is the first `num_router_prompts` of the sample; generations keep prompt order.
    router_prompts = prompts.select(range(config.num_router_prompts))
    router_generations = generations.select(range(config.num_router_prompts * len(teachers)))

    card = parallel_dataset_card(
        repo_id=config.output_repo_id,
        pretty_name="Magpie-Zoo for PerSyn",
        source_dataset=MAGPIE_ZOO_ID,
        seed=config.sample_seed,
        teachers=teachers,
        generations=generations,
        num_prompts=len(prompts),
        num_router_prompts=config.num_router_prompts,
        responses_note=(
            f"Responses: the teachers' greedy responses as published in {hub_link(MAGPIE_ZOO_ID, 'dataset')}; "
            f"`quality` is their `{config.reward_field}` reward."
        ),
        subsets=[
            {"name": "prompts", "splits": "`train`, `router`", "row": "a prompt (`prompt_id`, `prompt`, `source`)"},
            {"name": "generations", "splits": "`train`, `router`", "row": "a (prompt, teacher) response"},
        ],
    )
    store.save_dataset(config.output_repo_id, prompts, card=card, config_name="prompts", split="train")
    store.save_dataset(config.output_repo_id, router_prompts, config_name="prompts", split="router")
    store.save_dataset(config.output_repo_id, generations, config_name="generations", split="train")
    location = store.save_dataset(config.output_repo_id, router_generations, config_name="generations", split="router")
    summary = {"num_prompts": len(prompts), "num_router_prompts": len(router_prompts), "teachers": names}
    return StageResult(generations, location, summary)
