"""The eval stage: a student on lm-eval tasks, persyn-hf's own beside lm-eval's registry.

`lm_eval.simple_evaluate` runs the `hf` model on a local folder (or a Hub id in Hub mode), with the model's
chat template and greedy decoding as the tasks define it. persyn-hf ships two tasks of its own in
`persyn_hf/eval_tasks/`: `persyn_heldout`, a held-out split of prompts with gold answers (the demo world's
test split, or any `prompt_id`/`prompt`/`answer` dataset), and `svamp`; both check answers with math-verify
through an `evaluate` metric. Results are written as JSON and printed as lm-eval's table.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path

from persyn_hf.configs import DTYPES, INFERENCE_DTYPE, check_choice, check_positive, renamed
from persyn_hf.contracts import StageResult
from persyn_hf.errors import ArtifactNotFoundError, ConfigError
from persyn_hf.eval_tasks import TASKS_DIR
from persyn_hf.store import ArtifactStore, check_writable
from persyn_hf.verify import CORRECT, INCORRECT, TIMEOUT, UNPARSEABLE_GOLD

VERDICTS = (CORRECT, INCORRECT, TIMEOUT, UNPARSEABLE_GOLD)

HELDOUT_TASK = "persyn_heldout"
RESULTS_FILE = "results.json"


@dataclass
class EvalArguments:
    """What to evaluate, on which tasks, and how.

    Parameters:
        model_name_or_path (`str`):
            The model: a local folder, a repo id in the artifact store (e.g. the student `persyn-hf sft` saved), or
            a Hub id with `hub: true`. A folder holding a LoRA adapter is evaluated on top of its base model.
        tasks (`list[str]`, *optional*, defaults to `["persyn_heldout"]`):
            lm-eval task names, persyn-hf's (`persyn_heldout`, `svamp`) or lm-eval's; `name|k` evaluates `name`
            with `k` few-shot examples instead of the task's default (e.g. `gsm8k|5`).
        heldout_repo_id (`str`, *optional*):
            The held-out split `persyn_heldout` reads: a repo id in the artifact store or a local dataset folder,
            with columns `prompt_id`, `prompt` and `answer` (str).
        heldout_config (`str`, *optional*, defaults to `"default"`):
            Config (subset) of `heldout_repo_id`.
        heldout_split (`str`, *optional*, defaults to `"test"`):
            Split of `heldout_repo_id`.
        apply_chat_template (`bool`, *optional*, defaults to `True`):
            Render each prompt with the model's chat template, as the student saw its training data.
        fewshot_as_multiturn (`bool`, *optional*, defaults to `True`):
            With a chat template, give few-shot examples as earlier turns of the conversation.
        max_gen_toks (`int`, *optional*):
            Maximum new tokens per answer for every generative task; unset keeps each task's own.
        batch_size (`int`, *optional*, defaults to `8`):
            Batch size of the `hf` model.
        device (`str`, *optional*):
            Device of the model; unset takes `cuda` when available, else `cpu`.
        dtype (`str`, *optional*, defaults to `"auto"`):
            Data type the model is loaded in (`persyn_hf.configs`: models that run load `auto`).
        limit (`int`, *optional*):
            Evaluate only the first `limit` examples of each task (for quick checks, never for reported numbers).
        seed (`int`, *optional*, defaults to `1234`):
            Seed of Python, NumPy, torch and few-shot sampling.
        output_dir (`str`, *optional*, defaults to `"eval_results"`):
            Directory the results JSON is written to, as `results.json`.
        log_samples (`bool`, *optional*, defaults to `False`):
            Also report each problem's verdict for persyn-hf's math-verify tasks (`{task: {prompt_id: correct}}`,
            under `problems` in the summary and `results.json`), e.g. for paired comparisons between students.
        heldout_dataset (`str`, *optional*): Deprecated name of `heldout_repo_id`.
    """

    model_name_or_path: str = field(
        metadata={"help": "A local folder, a repo id in the artifact store, or a Hub id with `hub: true`."}
    )
    tasks: list[str] = field(
        default_factory=lambda: [HELDOUT_TASK],
        metadata={"help": "lm-eval task names (persyn-hf's or lm-eval's); `name|k` sets k few-shot examples."},
    )
    heldout_repo_id: str | None = field(
        default=None,
        metadata={"help": "Held-out split for `persyn_heldout`: a repo id in the store or a local dataset folder."},
    )
    heldout_config: str = field(default="default", metadata={"help": "Config (subset) of `heldout_repo_id`."})
    heldout_split: str = field(default="test", metadata={"help": "Split of `heldout_repo_id`."})
    apply_chat_template: bool = field(
        default=True, metadata={"help": "Render each prompt with the model's chat template."}
    )
    fewshot_as_multiturn: bool = field(
        default=True, metadata={"help": "With a chat template, give few-shot examples as earlier turns."}
    )
    max_gen_toks: int | None = field(
        default=None, metadata={"help": "Maximum new tokens per answer for every generative task (unset: task's)."}
    )
    batch_size: int = field(default=8, metadata={"help": "Batch size of the `hf` model."})
    device: str | None = field(default=None, metadata={"help": "Device of the model (unset: cuda if available)."})
    dtype: str = field(default=INFERENCE_DTYPE, metadata={"help": "Data type the model is loaded in."})
    limit: int | None = field(
        default=None, metadata={"help": "Evaluate only the first `limit` examples of each task (quick checks)."}
    )
    seed: int = field(default=1234, metadata={"help": "Seed of Python, NumPy, torch and few-shot sampling."})
    output_dir: str = field(default="eval_results", metadata={"help": "Directory `results.json` is written to."})
    log_samples: bool = field(
        default=False, metadata={"help": "Also report each problem's verdict (persyn-hf's math-verify tasks)."}
    )
    heldout_dataset: str | None = field(default=None, metadata={"help": "Deprecated: use `heldout_repo_id`."})

    def __post_init__(self):
        renamed(self, "heldout_dataset", "heldout_repo_id")
        check_choice("dtype", self.dtype, DTYPES)
        check_positive(self, "batch_size")
        if isinstance(self.tasks, str):
            raise ConfigError(
                f"`tasks` must be a list of task names, e.g. `tasks: [{self.tasks}]`, got {self.tasks!r}."
            )
        for spec in self.tasks:
            parse_task_spec(spec)


def parse_task_spec(spec: str) -> tuple[str, int | None]:
    """`"gsm8k|5"` -> `("gsm8k", 5)`; `"ifeval"` -> `("ifeval", None)`."""
    name, _, shots = spec.partition("|")
    if not shots:
        return name, None
    if not shots.isdigit():
        raise ConfigError(f"`tasks` entry {spec!r}: the few-shot count after '|' must be an integer, e.g. 'gsm8k|5'.")
    return name, int(shots)


def own_tasks() -> list[str]:
    """The lm-eval tasks persyn-hf ships."""
    return sorted(path.stem for path in Path(TASKS_DIR).glob("*.yaml"))


def make_task_manager(task_names: list[str], metadata: dict | None = None):
    """lm-eval's `TaskManager` over persyn-hf's tasks, plus lm-eval's registry when a name is not persyn-hf's.

    Scanning lm-eval's registry takes seconds, so evaluating only on persyn-hf's tasks skips it. `metadata`
    reaches every task; `persyn_heldout` reads `heldout_dataset`, `heldout_config` and `heldout_split` from it.
    """
    from lm_eval.tasks import TaskManager

    include_defaults = not set(task_names) <= set(own_tasks())
    return TaskManager(include_path=TASKS_DIR, include_defaults=include_defaults, metadata=metadata)


def check_task_names(task_names: list[str], task_manager) -> None:
    """Raise a `ConfigError` for a name that is no task, group or tag `task_manager` knows."""
    for name in task_names:
        if name not in task_manager.all_tasks:
            close = difflib.get_close_matches(name, task_manager.all_tasks, n=3)
            raise ConfigError(
                f"`tasks` entry {name!r} is not an lm-eval task{f' (did you mean {close}?)' if close else ''}; "
                f"persyn-hf adds {own_tasks()}, and `lm-eval ls tasks` lists lm-eval's."
            )


def load_task(task_manager, name: str) -> dict:
    """lm-eval's task (or group) `name` with its data; data that cannot be downloaded is an `ArtifactNotFoundError`."""
    try:
        return task_manager.load(name)
    except ConnectionError as error:  # e.g. the Hub is offline and the task's data is not cached
        raise ArtifactNotFoundError(
            f"`tasks` entry {name!r} cannot get its data: {error}. Run it once with the Hub reachable (its data is "
            "cached then), or leave the task out."
        ) from error


def _model_args(location: str, dtype: str) -> dict:
    """`hf` model arguments; a LoRA adapter folder is loaded on top of its base model."""
    adapter_config = Path(location) / "adapter_config.json"
    if adapter_config.is_file():
        base = json.loads(adapter_config.read_text())["base_model_name_or_path"]
        return {"pretrained": base, "peft": location, "dtype": dtype}
    return {"pretrained": location, "dtype": dtype}


def summarize(results: dict) -> dict:
    """`{task: {metric: value, "num_fewshot": k, "num_samples": n}}` from lm-eval's results, stderr left out."""
    summary = {}
    for task, metrics in results["results"].items():
        row = {  # lm-eval's metric keys are "<metric>,<filter>"; "none" is no filter
            metric.removesuffix(",none"): value
            for metric, value in metrics.items()
            if "," in metric and "_stderr," not in metric
        }
        row["num_fewshot"] = results["n-shot"].get(task)
        row["num_samples"] = results["n-samples"].get(task, {}).get("effective")
        summary[task] = row
    return summary


def problem_verdicts(samples: dict[str, list[dict]]) -> dict[str, dict[str, bool]]:
    """`{task: {prompt_id: correct}}` from lm-eval's logged samples, for the tasks that keep math-verify's verdict per
    problem (`persyn_hf.eval_tasks`)."""
    return {
        task: {str(sample["doc"]["prompt_id"]): sample["accuracy"] == CORRECT for sample in task_samples}
        for task, task_samples in samples.items()
        if task_samples and sample_has_verdict(task_samples[0])
    }


def sample_has_verdict(sample: dict) -> bool:
    return "prompt_id" in sample["doc"] and sample.get("accuracy") in VERDICTS


def run(args: EvalArguments, store: ArtifactStore | None = None) -> StageResult:
    """Evaluate `args.model_name_or_path`; write `results.json` and return `{"model": ..., "tasks": {...}}` as the
    artifact and the summary (lm-eval's table under `"table"`). Processes other than the main one return an empty
    summary.
    """
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.utils import handle_non_serializable, make_table

    store = store or ArtifactStore()
    model_location = store.resolve_model(args.model_name_or_path, "model_name_or_path", hub_ids=True)
    check_writable(args.output_dir, f"`output_dir` {args.output_dir!r}", "choose another `output_dir`")
    specs = [parse_task_spec(spec) for spec in args.tasks]
    names = [name for name, _ in specs]
    metadata = None
    if HELDOUT_TASK in names:
        if args.heldout_repo_id is None:
            raise ConfigError(f"The `{HELDOUT_TASK}` task needs `heldout_repo_id`: the held-out split to evaluate on.")
        metadata = {
            "heldout_dataset": store.resolve(args.heldout_repo_id, "heldout_repo_id"),
            "heldout_config": args.heldout_config,
            "heldout_split": args.heldout_split,
        }
    task_manager = make_task_manager(names, metadata)
    check_task_names(names, task_manager)

    tasks = []
    for name, num_fewshot in specs:
        loaded = load_task(task_manager, name)
        if num_fewshot is not None:
            for task in loaded["tasks"].values():
                task.set_config(key="num_fewshot", value=num_fewshot)
        tasks.extend([loaded["groups"][name]] if name in loaded["groups"] else loaded["tasks"].values())

    results = simple_evaluate(
        model="hf",
        model_args=_model_args(model_location, args.dtype),
        tasks=tasks,
        task_manager=task_manager,
        batch_size=args.batch_size,
        device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
        limit=args.limit,
        apply_chat_template=args.apply_chat_template,
        fewshot_as_multiturn=args.fewshot_as_multiturn,
        gen_kwargs={"max_gen_toks": args.max_gen_toks} if args.max_gen_toks is not None else None,
        log_samples=args.log_samples,
        random_seed=args.seed,
        numpy_random_seed=args.seed,
        torch_random_seed=args.seed,
        fewshot_random_seed=args.seed,
    )
    output = Path(args.output_dir) / RESULTS_FILE
    if results is None:  # not the main process
        return StageResult({}, str(output), {})
    summary = {"model": args.model_name_or_path, "tasks": summarize(results)}
    if args.log_samples:
        summary["problems"] = problem_verdicts(results.pop("samples"))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({**summary, "lm_eval": results}, indent=2, default=handle_non_serializable))
    return StageResult(summary, str(output), {**summary, "table": make_table(results)})
