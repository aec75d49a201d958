"""Score every teacher response: quality, the student's learnability and their mix (`persyn-hf score`, Eq. 1-2).

Reads the generations (`persyn-hf generate`) and their prompts from the artifact store, scores each response
with the chosen quality scorer and the student, and writes the scores dataset: `prompt_id`, `teacher`,
`quality`, `learnability`, `reward`. Learnability (`persyn_hf.learnability`) scores exactly the tokens the sft stage
trains on; a response it cannot score gets NaN, and the count per reason is printed.

# Instruction data: a reward model for quality, one process
```bash
persyn-hf score --config recipes/Qwen2.5-1.5B-Instruct/score/config_instruct.yaml
```

# Math data: math-verify correctness for quality, the responses split across 8 GPUs
```bash
accelerate launch --config_file recipes/accelerate_configs/ddp.yaml --num_processes 8 -m persyn_hf.scripts.score \
    --config recipes/Qwen2.5-1.5B-Instruct/score/config_math.yaml
```

# Learnability computed by a vLLM server serving the student (prefix caching off: exact prompt log-probabilities)
```bash
vllm serve Qwen/Qwen2.5-1.5B-Instruct --no-enable-prefix-caching &
persyn-hf score --config recipes/Qwen2.5-1.5B-Instruct/score/config_math.yaml \
    --learnability_backend openai --learnability_base_url http://localhost:8000
```

# Any recipe, with overrides (here: the "w/o learnability" mix and a local store)
```bash
persyn-hf score --config recipes/Qwen2.5-1.5B-Instruct/score/config_instruct.yaml \
    --alpha 0.0 --scores_repo_id my-user/scores-wo-learnability --store_root artifacts
```
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from datasets import Dataset

from persyn_hf.cli import parse_args
from persyn_hf.learnability import LearnabilityConfig, LearnabilityScores, prepare_student, score_learnability
from persyn_hf.pairs import prompt_columns
from persyn_hf.rewards import QUALITY_SCORERS, ScoringConfig, mix_rewards, require_columns
from persyn_hf.store import ArtifactStore, StoreArguments


@dataclass
class ScoreScriptArguments:
    """What `persyn-hf score` reads and writes.

    Parameters:
        generations_repo_id (`str`):
            Artifact of the teachers' responses (`persyn-hf generate`).
        prompts_repo_id (`str`):
            Artifact of the prompts the responses answer (`prompt_id`, `prompt` or `messages`, `answer` for math).
        student (`str`):
            Path or Hub id of the student model whose learnability is measured (its chat template renders prompts).
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
    student: str = field(metadata={"help": "Path or Hub id of the student model."})
    scores_repo_id: str = field(metadata={"help": "Artifact the scores are written to."})
    generations_config: str = field(default="default", metadata={"help": "Dataset config of the generations."})
    prompts_config: str = field(default="default", metadata={"help": "Dataset config of the prompts."})
    generations_split: str = field(default="train", metadata={"help": "Split of the generations to score."})
    prompts_split: str = field(default="train", metadata={"help": "Split of the prompts holding the scored ones."})


def scoring_rows(generations: Dataset, prompts: Dataset) -> Dataset:
    """The generations with their prompt as chat `messages` (and the gold `answer` when the prompts have one)."""
    require_columns(generations, ["prompt_id", "teacher", "response"], "generations")
    text_column = prompt_columns(prompts)[1]
    by_id = {row["prompt_id"]: row for row in prompts}
    unknown = sorted({p for p in generations["prompt_id"] if p not in by_id}, key=str)
    if unknown:
        raise ValueError(
            f"{len(unknown)} prompt_id(s) of the generations are not in the prompts dataset (first: {unknown[:3]}): "
            "pass the prompts dataset the generations were made from."
        )

    def messages(prompt_id):
        row = by_id[prompt_id]
        return row["messages"] if text_column == "messages" else [{"role": "user", "content": row["prompt"]}]

    rows = generations.add_column("messages", [messages(p) for p in generations["prompt_id"]])
    if "answer" in prompts.column_names and "answer" not in generations.column_names:
        rows = rows.add_column("answer", [by_id[p]["answer"] for p in generations["prompt_id"]])
    return rows


def score_responses(
    rows: Dataset,
    student: str,
    config: ScoringConfig,
    learnability: LearnabilityConfig,
    device="cpu",
    show_progress=True,
) -> tuple[list[float], LearnabilityScores]:
    """(quality, learnability) of every row: the configured quality scorer, then Eq. 1 with the student (whose
    tokenizer, template and length bound are checked first, so that a bad student fails before the quality work)."""
    prepare_student(learnability, student)
    quality = QUALITY_SCORERS[config.quality_scorer](rows, config, device=device, show_progress=show_progress)
    learnability_scores = score_learnability(
        learnability,
        student,
        rows["messages"],
        rows["response"],
        batch_size=config.batch_size,
        max_tokens_per_batch=config.max_tokens_per_batch,
        dtype=config.dtype,
        device=device,
        show_progress=show_progress,
    )
    return quality, learnability_scores


def main(
    script_args: ScoreScriptArguments,
    scoring: ScoringConfig,
    learnability: LearnabilityConfig,
    store_args: StoreArguments,
):
    from accelerate import PartialState
    from accelerate.utils import gather_object

    state = PartialState()
    store = ArtifactStore.from_args(store_args)
    generations = store.load_dataset(
        script_args.generations_repo_id, script_args.generations_config, script_args.generations_split
    )
    prompts = store.load_dataset(script_args.prompts_repo_id, script_args.prompts_config, script_args.prompts_split)
    rows = scoring_rows(generations, prompts)  # every process validates, so bad input fails before any work
    with state.split_between_processes(list(range(len(rows)))) as shard:
        quality, learned = score_responses(
            rows.select(shard),
            script_args.student,
            scoring,
            learnability,
            state.device,
            show_progress=state.is_local_main_process,
        )
        scored = list(zip(shard, quality, learned.scores, learned.nan_reasons))
    scored = sorted(gather_object(scored))
    if state.is_main_process:
        scores = Dataset.from_dict(
            {
                "prompt_id": rows["prompt_id"],
                "teacher": rows["teacher"],
                "quality": [q for _, q, _, _ in scored],
                "learnability": [lrn for _, _, lrn, _ in scored],
            }
        )
        scores = mix_rewards(scores, scoring.alpha, scoring.normalization)
        location = store.save_dataset(script_args.scores_repo_id, scores)
        print(f"Wrote {len(scores)} scores to {location}")
        print(LearnabilityScores([lrn for _, _, lrn, _ in scored], [why for *_, why in scored]).summary())
    state.wait_for_everyone()


def make_parser():
    from trl import TrlParser

    return TrlParser((ScoreScriptArguments, ScoringConfig, LearnabilityConfig, StoreArguments))


if __name__ == "__main__":
    main(*parse_args(make_parser(), sys.argv[1:]))
