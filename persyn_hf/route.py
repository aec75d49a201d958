"""The route stage (Route then Generate): every prompt of a prompt set to the teacher the router scores highest.

Reads a trained router (`persyn-hf train-router`) and the prompts, and writes the assignments: `prompt_id`,
`teacher` (the best-scored teacher) and `router_scores` (one score per teacher, in the router's teacher order).
`persyn-hf generate --mode routed` then has each teacher answer only its own prompts. `persyn-hf select --strategy
persyn` routes through this same path (`load_router` + `route_prompts`). Under `accelerate launch` the prompts are
split across the processes and gathered back in order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from persyn_hf.configs import DTYPES, INFERENCE_DTYPE, check_choice, check_positive, process_state
from persyn_hf.contracts import CONTRACTS, StageResult, prompt_text, validate
from persyn_hf.errors import DataError
from persyn_hf.store import ArtifactStore, data_file

if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.getLogger(__name__)


@dataclass
class RouteConfig:
    """What `persyn-hf route` reads and writes.

    Parameters:
        router_repo_id (`str`):
            The trained router (with its tokenizer), as saved by `persyn-hf train-router`: its repo id in the store
            (or on the Hub), or a local folder.
        prompts_repo_id (`str`):
            Artifact of the prompts to route (`prompt_id`, and `prompt` or `messages`).
        assignments_repo_id (`str`):
            Artifact the assignments are written to.
        prompts_config (`str`, *optional*, defaults to `"default"`):
            Dataset config of the prompts artifact.
        prompts_split (`str`, *optional*, defaults to `"train"`):
            Split of the prompts to route.
        assignments_config (`str`, *optional*, defaults to `"default"`):
            Dataset config the assignments are written to.
        prompt_column (`str`, *optional*, defaults to `"prompt"`):
            Column holding the prompt text (prompts with `messages` only are routed on their last user message).
        batch_size (`int`, *optional*, defaults to `64`):
            Prompts per router forward pass (prompts are sorted by length first).
        dtype (`str`, *optional*, defaults to `"auto"`):
            Dtype the router is loaded in (`persyn_hf.configs`: models that run load `auto`).
    """

    router_repo_id: str = field(metadata={"help": "The trained router: store repo id, Hub id or local folder."})
    prompts_repo_id: str = field(metadata={"help": "Artifact of the prompts to route."})
    assignments_repo_id: str = field(metadata={"help": "Artifact the assignments are written to."})
    prompts_config: str = field(default="default", metadata={"help": "Dataset config of the prompts."})
    prompts_split: str = field(default="train", metadata={"help": "Split of the prompts to route."})
    assignments_config: str = field(default="default", metadata={"help": "Dataset config of the assignments."})
    prompt_column: str = field(default="prompt", metadata={"help": "Column holding the prompt text."})
    batch_size: int = field(default=64, metadata={"help": "Prompts per router forward pass."})
    dtype: str = field(default=INFERENCE_DTYPE, metadata={"help": "Router dtype: auto, bfloat16, float16 or float32."})

    def __post_init__(self):
        check_positive(self, "batch_size")
        check_choice("dtype", self.dtype, DTYPES)


def prompt_texts(prompts: Dataset, prompt_column: str = "prompt") -> list[str]:
    """The text the router reads for each prompt: `prompt_column`, or, for prompts that also have `messages`, the
    prompt as the router's training rows read it (`persyn_hf.contracts.prompt_text`: a blank `prompt` falls back to
    the last user message)."""
    if "prompt_id" not in prompts.column_names:
        raise DataError(f"The prompts dataset has no `prompt_id` column (columns: {prompts.column_names}).")
    if prompt_column == "prompt" and "messages" in prompts.column_names:
        columns = [column for column in ("prompt_id", "prompt", "messages") if column in prompts.column_names]
        texts = [prompt_text(row) for row in prompts.select_columns(columns).to_list()]
    elif prompt_column in prompts.column_names:
        texts = prompts[prompt_column]
    else:
        raise DataError(
            f"The prompts dataset has no `{prompt_column}` column (columns: {prompts.column_names}): set "
            "`prompt_column` to the column holding the prompt text."
        )
    bad = next((i for i, text in enumerate(texts) if not isinstance(text, str)), None)
    if bad is not None:
        raise DataError(
            f"`{prompt_column}` of row {bad} is {type(texts[bad]).__name__}, not a string: the router reads the "
            "prompt text alone (no chat template)."
        )
    return texts


def load_router(location: str, dtype: str = INFERENCE_DTYPE):
    """The router and its tokenizer from a folder or a Hub id, in `dtype`, on this process's device, in eval mode."""
    from transformers import AutoModel, AutoTokenizer

    from persyn_hf.router import register

    register()
    router = AutoModel.from_pretrained(location, dtype=dtype).to(process_state().device).eval()
    return router, AutoTokenizer.from_pretrained(location)


def route_prompts(router, tokenizer, prompts: Dataset, batch_size: int = 64, prompt_column: str = "prompt") -> Dataset:
    """The assignments of a prompt set: one row per prompt, in the prompts' order.

    Columns: `prompt_id`, `teacher` (the router's best-scored teacher) and `router_scores` (one float per teacher,
    in `router.config.teachers` order). Under `accelerate launch`, every process routes a contiguous share of the
    prompts on its own device and all processes get the whole dataset back.
    """
    from accelerate.utils import gather_object
    from datasets import Dataset

    if len(prompts) == 0:
        raise DataError("The prompts dataset is empty: nothing to route.")
    texts = prompt_texts(prompts, prompt_column)
    state = process_state()
    if state.is_main_process:
        logger.info(f"Routing {len(prompts)} prompts over {state.num_processes} process(es)")
    with state.split_between_processes(list(range(len(prompts)))) as indices:
        teachers, scores = router.route(
            [texts[i] for i in indices], tokenizer, batch_size=batch_size, show_progress=state.is_local_main_process
        )
        rows = [(indices[j], teachers[j], scores[j].float().tolist()) for j in range(len(indices))]
    rows = gather_object(rows) if state.use_distributed else rows
    rows.sort(key=lambda row: row[0])
    prompt_ids = prompts["prompt_id"]
    return Dataset.from_dict(
        {
            "prompt_id": [prompt_ids[i] for i, _, _ in rows],
            "teacher": [teacher for _, teacher, _ in rows],
            "router_scores": [scores for _, _, scores in rows],
        },
        features=CONTRACTS["assignments"].features(prompt_id=prompts.features["prompt_id"]),
    )


def allocation(assignments: Dataset, teachers: list[str]) -> dict[str, int]:
    """Prompts per teacher, every teacher listed (in `teachers` order)."""
    assigned = assignments["teacher"]
    return {name: assigned.count(name) for name in teachers}


def run(config: RouteConfig, store: ArtifactStore | None = None) -> StageResult:
    """Route the prompt set with the trained router; returns the assignments and `{"allocation": ...}`."""
    from persyn_hf.router import PersynRouterConfig

    store = store or ArtifactStore()
    store.check_output(config.assignments_repo_id, "assignments_repo_id", files=[data_file(config.assignments_config)])
    location = store.resolve_model(config.router_repo_id, "router_repo_id", model_type=PersynRouterConfig.model_type)
    prompts = store.load_dataset(
        config.prompts_repo_id, config.prompts_config, config.prompts_split, contract="prompts"
    )
    prompt_texts(prompts, config.prompt_column)
    router, tokenizer = load_router(location, config.dtype)
    assignments = route_prompts(router, tokenizer, prompts, config.batch_size, config.prompt_column)
    validate(assignments, "assignments")
    saved = store.save_dataset_from_main(
        config.assignments_repo_id, assignments, config_name=config.assignments_config
    )
    return StageResult(assignments, saved, {"allocation": allocation(assignments, router.config.teachers)})
