"""Route then Generate: assign every prompt of a prompt set to the teacher the router scores highest."""

from __future__ import annotations

from accelerate import PartialState
from accelerate.utils import gather_object
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from persyn_hf.pairs import prompt_text
from persyn_hf.router import PersynRouterModel


def prompt_texts(prompts: Dataset, prompt_column: str = "prompt") -> list[str]:
    """The text the router reads for each prompt: `prompt_column`, or, for prompts given as `messages` only, the
    last user message (as in the router's training rows, `persyn_hf.pairs.router_rows`)."""
    if "prompt_id" not in prompts.column_names:
        raise ValueError(f"The prompts dataset has no `prompt_id` column (columns: {prompts.column_names}).")
    if prompt_column in prompts.column_names:
        texts = prompts[prompt_column]
    elif prompt_column == "prompt" and "messages" in prompts.column_names:
        texts = [prompt_text(row) for row in prompts]
    else:
        raise ValueError(
            f"The prompts dataset has no `{prompt_column}` column (columns: {prompts.column_names}): set "
            "`prompt_column` to the column holding the prompt text."
        )
    bad = next((i for i, text in enumerate(texts) if not isinstance(text, str)), None)
    if bad is not None:
        raise ValueError(
            f"`{prompt_column}` of row {bad} is {type(texts[bad]).__name__}, not a string: the router reads the "
            "prompt text alone (no chat template)."
        )
    return texts


def route_prompts(
    router: PersynRouterModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Dataset,
    batch_size: int = 32,
    prompt_column: str = "prompt",
) -> Dataset:
    """The assignments of a prompt set: one row per prompt, in the prompts' order.

    Columns: `prompt_id`, `teacher` (the router's best-scored teacher) and `router_scores` (one float per teacher,
    in `router.config.teachers` order). Under `accelerate launch`, every process routes a contiguous share of the
    prompts on its own device and all processes get the whole dataset back.
    """
    if len(prompts) == 0:
        raise ValueError("The prompts dataset is empty: nothing to route.")
    texts = prompt_texts(prompts, prompt_column)
    state = PartialState()
    if state.use_distributed:
        router.to(state.device)
    with state.split_between_processes(list(range(len(prompts)))) as indices:
        teachers, scores = router.route(
            [texts[i] for i in indices], tokenizer, batch_size=batch_size, show_progress=state.is_local_main_process
        )
        rows = [(indices[j], teachers[j], scores[j].tolist()) for j in range(len(indices))]
    rows = gather_object(rows) if state.use_distributed else rows
    rows.sort(key=lambda row: row[0])
    prompt_ids = prompts["prompt_id"]
    return Dataset.from_dict(
        {
            "prompt_id": [prompt_ids[i] for i, _, _ in rows],
            "teacher": [teacher for _, teacher, _ in rows],
            "router_scores": [scores for _, _, scores in rows],
        }
    )
