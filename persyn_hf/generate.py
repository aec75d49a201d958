"""The generate stage: teachers answer prompts, in parallel (Generate then Select) or as routed (Route then Generate).

- `mode="parallel"`: every teacher answers every prompt (the router's training subset, PerSyn-Math);
- `mode="routed"`: each teacher answers only the prompts an assignments dataset gives it.

Math prompts (a non-empty `answer`) go through rejection sampling (paper, appendix A.1): k samples per teacher,
4 under 72B and 2 for 72B-or-larger and long-CoT teachers, each verified with math-verify; one correct sample is
kept, else one incorrect sample at random (seeded). Every sample is stored durably as it arrives
(`persyn_hf.teachers.results`), so a re-run with the same `results_dir` resumes where the last one stopped.

```python
from persyn_hf import generate
from persyn_hf.store import ArtifactStore, check_writable, data_file

result = generate.run(
    generate.GenerateArguments(prompts_repo_id="me/prompts", teachers="teachers.yaml", generations_repo_id="me/gens"),
    generate.SynthesisConfig(mode="parallel"),
    store=ArtifactStore("artifacts"),
)
print(result.summary["cost"])
```
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import random
import shlex
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from persyn_hf.configs import check_choice, check_positive, renamed
from persyn_hf.contracts import CONTRACTS, StageResult, prompt_messages, validate
from persyn_hf.cost import CostReport, TeacherCost
from persyn_hf.errors import ConfigError, DataError, PersynError
from persyn_hf.store import ArtifactStore, check_writable, data_file
from persyn_hf.teachers.pool import Failure, PoolConfig, TeacherPool, run_coroutine
from persyn_hf.teachers.results import ResultStore
from persyn_hf.teachers.spec import TeacherSpec, load_teachers
from persyn_hf.verify import verify_answer

if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.getLogger(__name__)

MODES = ("parallel", "routed")


@dataclass
class GenerateArguments:
    """What `persyn-hf generate` reads and writes.

    Parameters:
        prompts_repo_id (`str`): Repo id of the prompts dataset (`prompt_id`, `prompt` or `messages`, `answer`).
        teachers (`str`): Teachers YAML (`recipes/teachers/*.yaml`).
        generations_repo_id (`str`): Repo id the generations dataset is saved to.
        prompts_config, prompts_split: Config and split of the prompts dataset.
        assignments_repo_id (`str`, *optional*): Repo id of the assignments (`prompt_id`, `teacher`); routed mode.
        assignments_config, assignments_split: Config and split of the assignments dataset.
        generations_config (`str`, *optional*, defaults to `"default"`): Config the generations are saved to.
        max_prompts (`int`, *optional*): Keep this many prompts, drawn at random with `seed` (e.g. the router's
            2.5K subset).
    """

    prompts_repo_id: str = field(metadata={"help": "Repo id of the prompts dataset."})
    teachers: str = field(metadata={"help": "Teachers YAML, e.g. recipes/teachers/tgi.yaml."})
    generations_repo_id: str = field(metadata={"help": "Repo id the generations dataset is saved to."})
    prompts_config: str = field(default="default", metadata={"help": "Config of the prompts dataset."})
    prompts_split: str = field(default="train", metadata={"help": "Split of the prompts dataset."})
    assignments_repo_id: str | None = field(
        default=None, metadata={"help": "Repo id of the assignments (`prompt_id`, `teacher`), for --mode routed."}
    )
    assignments_config: str = field(default="default", metadata={"help": "Config of the assignments dataset."})
    assignments_split: str = field(default="train", metadata={"help": "Split of the assignments dataset."})
    generations_config: str = field(default="default", metadata={"help": "Config the generations are saved to."})
    max_prompts: int | None = field(
        default=None, metadata={"help": "Keep this many prompts, drawn at random with `seed`."}
    )

    def __post_init__(self):
        if self.max_prompts is not None:
            check_positive(self, "max_prompts")


@dataclass
class SynthesisConfig(PoolConfig):
    """How teachers answer prompts. Subclasses `PoolConfig` (concurrency, time-outs, retries).

    Parameters:
        mode (`str`, *optional*, defaults to `"parallel"`):
            `"parallel"`: every teacher answers every prompt; `"routed"`: each answers its assigned prompts.
        samples_small (`int`, *optional*, defaults to `4`):
            Samples per math prompt from a teacher under `large_teacher_size_b` that is not long-CoT.
        samples_large (`int`, *optional*, defaults to `2`):
            Samples per math prompt from a teacher of `large_teacher_size_b` or more, or a long-CoT one.
        large_teacher_size_b (`float`, *optional*, defaults to `72.0`):
            Size (billions of parameters) from which a teacher counts as large.
        stop_at_first_correct (`bool`, *optional*, defaults to `False`):
            Stop sampling a math prompt at its first correct sample: fewer generations, the same rule for which
            prompts get a correct answer. The paper draws all samples.
        math_verify_timeout_s (`float`, *optional*, defaults to `5.0`):
            Time limit of one math-verify check; a check that runs out counts as incorrect.
        verify_workers (`int`, *optional*, defaults to `2`):
            math-verify checks run at once, each in its own worker process (a check takes milliseconds).
        seed (`int`, *optional*, defaults to `42`):
            Seed of the sampling requests, of the choice among kept samples and of the retry jitter.
        results_dir (`str`, *optional*):
            Directory of the durable results store; a re-run with the same directory resumes. `None`: a
            temporary directory (no resume).
        allow_incomplete (`bool`, *optional*, defaults to `False`):
            Return the rows that were done when some are not (the failures are in the cost report) instead of
            raising `SynthesisError`. With no row done at all, `run` writes nothing and raises all the same.
        verify_timeout_s (`float`, *optional*):
            Deprecated name of `math_verify_timeout_s`.
    """

    mode: str = field(default="parallel", metadata={"help": "`parallel` or `routed`.", "choices": list(MODES)})
    samples_small: int = field(default=4, metadata={"help": "Samples per math prompt from teachers under 72B."})
    samples_large: int = field(
        default=2, metadata={"help": "Samples per math prompt from 72B-or-larger and long-CoT teachers."}
    )
    large_teacher_size_b: float = field(default=72.0, metadata={"help": "Size (B) from which a teacher is large."})
    stop_at_first_correct: bool = field(
        default=False, metadata={"help": "Stop sampling a math prompt at its first correct sample."}
    )
    math_verify_timeout_s: float = field(
        default=5.0, metadata={"help": "Time limit of one math-verify check (s); overrunning counts as incorrect."}
    )
    verify_workers: int = field(default=2, metadata={"help": "math-verify checks run at once (one process each)."})
    seed: int = field(default=42, metadata={"help": "Seed of sampling, sample choice and retry jitter."})
    results_dir: str | None = field(
        default=None, metadata={"help": "Durable results store; re-running with it resumes. None: temporary."}
    )
    allow_incomplete: bool = field(
        default=False, metadata={"help": "Return the rows done when some are not, instead of raising."}
    )
    verify_timeout_s: float | None = field(default=None, metadata={"help": "Deprecated: use `math_verify_timeout_s`."})

    def __post_init__(self):
        super().__post_init__()
        renamed(self, "verify_timeout_s", "math_verify_timeout_s", default=5.0)
        check_choice("mode", self.mode, MODES)
        check_positive(self, "samples_small", "samples_large", "verify_workers")


class SynthesisError(PersynError):
    """Some prompts were left undone; `failures` lists them. What was done is in the results store.

    The message groups them by teacher and cause, each cause with its first error, one line each.
    """

    def __init__(self, message: str, failures: list[Failure]):
        ValueError.__init__(self, message)  # keeps its lines: one per teacher
        self.failures = failures


@dataclass
class Job:
    """One prompt for one teacher: its messages, its gold answer (math) and the request seed of each sample to draw
    (`request_seed`: a resumed run asks for exactly what the first one would have)."""

    prompt_id: Any
    messages: list[dict]
    answer: str | None
    seeds: list[int]

    @property
    def num_samples(self) -> int:
        return len(self.seeds)

    def request(self, index: int) -> str:
        """What sample `index` answers: its messages, the gold answer it is checked against and its seed, hashed.
        Stored with the sample, so a results store whose prompt ids now name other prompts is caught."""
        payload = json.dumps([self.messages, self.answer, self.seeds[index]], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def num_samples(spec: TeacherSpec, config: SynthesisConfig) -> int:
    """Samples per math prompt for `spec`: its own `samples`, else the paper's size / long-CoT rule."""
    if spec.samples is not None:
        return spec.samples
    large = spec.size_b >= config.large_teacher_size_b or spec.long_cot
    return config.samples_large if large else config.samples_small


def request_seed(seed: int, prompt_id, teacher: str, sample_index: int) -> int:
    """A stable per-sample seed, so that a resumed run asks for exactly what the first one would have."""
    digest = hashlib.sha256(f"{seed}:{prompt_id}:{teacher}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") >> 1


def _answer(row: dict) -> str | None:
    answer = row.get("answer")
    return None if answer is None or str(answer).strip() == "" else str(answer)


def plan_jobs(
    prompts: Dataset, teachers: list[TeacherSpec], config: SynthesisConfig, assignments: Dataset | None = None
) -> dict[str, list[Job]]:
    """Each teacher's jobs, in prompt order: all prompts (parallel) or its assigned ones (routed)."""
    validate(prompts, "prompts")
    names = [spec.name for spec in teachers]
    if config.mode == "parallel":
        if assignments is not None:
            raise ConfigError("`assignments` are for mode='routed'; drop them or set `mode='routed'`.")
        teacher_of = None
    else:
        if assignments is None:
            raise ConfigError(
                "mode='routed' needs `assignments` (`prompt_id`, `teacher`), e.g. from `persyn-hf route`."
            )
        teacher_of = _assignment_map(assignments, set(prompts["prompt_id"]), names)
    jobs = {name: [] for name in names}
    samples = {spec.name: num_samples(spec, config) for spec in teachers}
    columns = [column for column in ("prompt_id", "prompt", "messages", "answer") if column in prompts.column_names]
    for row in prompts.select_columns(columns).to_list():  # far faster than iterating the dataset row by row
        answer, prompt_id = _answer(row), row["prompt_id"]
        targets = names if teacher_of is None else [teacher_of[prompt_id]] if prompt_id in teacher_of else []
        if targets:
            messages = prompt_messages(row)
        for name in targets:
            count = samples[name] if answer is not None else 1
            seeds = [request_seed(config.seed, prompt_id, name, index) for index in range(count)]
            jobs[name].append(Job(prompt_id, messages, answer, seeds))
    return jobs


def _assignment_map(assignments: Dataset, prompt_ids: set, names: list[str]) -> dict:
    validate(assignments, "assignments")
    teacher_of = dict(zip(assignments["prompt_id"], assignments["teacher"]))
    unknown = sorted({t for t in teacher_of.values() if t not in names}, key=str)
    if unknown:
        raise DataError(f"Assignments name teachers {unknown} that are not in the teacher specs {names}.")
    missing = [p for p in teacher_of if p not in prompt_ids]
    if missing:
        raise DataError(f"{len(missing)} assigned prompt ids are not in the prompts dataset, e.g. {missing[:5]}.")
    unassigned = len(prompt_ids) - len(teacher_of)
    if unassigned:
        logger.warning("%d of %d prompts have no assignment and are not generated.", unassigned, len(prompt_ids))
    return teacher_of


def select_sample(samples: list[dict], seed: int, prompt_id, teacher: str) -> dict:
    """One correct sample if any, else one incorrect, chosen at random (seeded per prompt and teacher)."""
    candidates = [sample for sample in samples if sample["correct"]] or samples
    if len(candidates) == 1:  # no draw needed (seeding a generator costs more than the rest of the row)
        return candidates[0]
    return random.Random(f"{seed}:{prompt_id}:{teacher}").choice(candidates)


def _correct(samples: list[dict]) -> bool | None:
    verdicts = [sample["correct"] for sample in samples]
    if any(verdicts):
        return True
    return False if False in verdicts else None


async def _generate(jobs, teachers, config, store) -> list[Failure]:
    async def answer(spec: TeacherSpec, job: Job) -> None:
        for index in range(job.num_samples):
            record = store.get(job.prompt_id, spec.name, index)
            if record is None:
                completion = await pool.request(spec.name, job.messages, job.seeds[index])
                correct = None
                if job.answer is not None:
                    correct = await loop.run_in_executor(
                        verifiers, verify_answer, job.answer, completion.text, config.math_verify_timeout_s
                    )
                record = {"prompt_id": job.prompt_id, "teacher": spec.name, "sample_index": index,
                          "request": job.request(index), **vars(completion), "correct": correct}  # fmt: skip
                store.append(record)
            if config.stop_at_first_correct and record["correct"]:
                return

    pending = {name: [job for job in teacher_jobs if _stored(store, job, name, config) is None]
               for name, teacher_jobs in jobs.items()}  # fmt: skip
    loop = asyncio.get_running_loop()
    active = [spec for spec in teachers if pending[spec.name]]
    with ThreadPoolExecutor(config.verify_workers, thread_name_prefix="math-verify") as verifiers:
        async with TeacherPool(active, config, seed=config.seed) as pool:
            return await pool.run(pending, answer)


def check_stored_requests(store: ResultStore, jobs: dict[str, list[Job]], directory: str) -> None:
    """Refuse a results store whose samples answer other requests under the same keys: prompt ids reused for other
    prompts or gold answers, or another `seed`. (A sample stored without its request is taken as it is.)"""
    stale = [
        (job.prompt_id, teacher)
        for teacher, teacher_jobs in jobs.items()
        for job in teacher_jobs
        for index in range(job.num_samples)
        if (record := store.get(job.prompt_id, teacher, index)) is not None
        and record.get("request") not in (None, job.request(index))
    ]
    if stale:
        prompt_id, teacher = stale[0]
        raise DataError(
            f"{len(stale)} samples stored in results_dir {directory!r} answer other prompts, gold answers or `seed` "
            f"than this run asks under the same ids (e.g. prompt {prompt_id!r}, teacher {teacher!r}): use another "
            "`results_dir`, or delete that folder to generate again."
        )


def _stored(store: ResultStore, job: Job, teacher: str, config: SynthesisConfig) -> list[dict] | None:
    """The samples of a complete job: all k, or (with `stop_at_first_correct`) up to the first correct one."""
    samples = []
    for index in range(job.num_samples):
        record = store.get(job.prompt_id, teacher, index)
        if record is None:
            return None
        samples.append(record)
        if config.stop_at_first_correct and record["correct"]:
            break
    return samples


def _rows_and_costs(jobs, teachers, config, store, prompt_ids) -> tuple[list[dict], list[TeacherCost]]:
    """Output rows in prompt order, then teacher order, and what each teacher spent on them."""
    costs = {spec.name: TeacherCost(spec.name) for spec in teachers}
    math_prompts = {job.prompt_id for teacher_jobs in jobs.values() for job in teacher_jobs if job.answer is not None}
    order = {prompt_id: [] for prompt_id in prompt_ids}
    for spec in teachers:
        cost = costs[spec.name]
        cost.rows_needed = len(jobs[spec.name])
        cost.gts_generations = len(prompt_ids) + len(math_prompts) * (num_samples(spec, config) - 1)
        for job in jobs[spec.name]:
            stored = [store.get(job.prompt_id, spec.name, i) for i in range(job.num_samples)]
            for record in filter(None, stored):
                cost.generations += 1
                cost.prompt_tokens += record["prompt_tokens"] or 0
                cost.completion_tokens += record["completion_tokens"] or 0
            samples = _stored(store, job, spec.name, config)
            if samples is None:
                continue
            chosen = select_sample(samples, config.seed, job.prompt_id, spec.name)
            cost.rows += 1
            order[job.prompt_id].append(
                {
                    "prompt_id": job.prompt_id,
                    "teacher": spec.name,
                    "response": chosen["text"],
                    "finish_reason": chosen["finish_reason"],
                    "num_samples": len(samples),
                    "correct": _correct(samples),
                    "prompt_tokens": chosen["prompt_tokens"],
                    "completion_tokens": chosen["completion_tokens"],
                }
            )
    return [row for prompt_rows in order.values() for row in prompt_rows], list(costs.values())


def synthesize(
    prompts: Dataset,
    teachers: list[TeacherSpec],
    config: SynthesisConfig,
    assignments: Dataset | None = None,
) -> tuple[Dataset, CostReport]:
    """Teachers answer prompts; returns the generations dataset (one row per prompt and teacher) and its cost.

    Works from plain code and from inside a running event loop (a notebook).

    Args:
        prompts: `prompt_id`, `prompt` (str) or `messages`, optional `answer` (math: rejection sampling).
        teachers: The teacher specs (`load_teachers`).
        config: Mode, rejection sampling, results store, concurrency and retries.
        assignments: `prompt_id`, `teacher` (mode `"routed"` only).

    Raises:
        SynthesisError: some (prompt, teacher) pairs are undone and `config.allow_incomplete` is off; the samples
            that were generated are in `config.results_dir`, and a re-run with it does only the rest.
    """
    from datasets import Dataset, DatasetInfo
    from datasets.table import InMemoryTable

    if config.results_dir is not None:
        check_writable(config.results_dir, f"`results_dir` {config.results_dir!r}", "choose another `results_dir`")
    jobs = plan_jobs(prompts, teachers, config, assignments)
    planned = {job.prompt_id for teacher_jobs in jobs.values() for job in teacher_jobs}
    prompt_ids = [prompt_id for prompt_id in prompts.select_columns(["prompt_id"]).to_dict()["prompt_id"]
                  if prompt_id in planned]  # fmt: skip
    with (
        tempfile.TemporaryDirectory(prefix="persyn-results-") as scratch,
        ResultStore(config.results_dir or scratch, teachers) as store,
    ):
        check_stored_requests(store, jobs, config.results_dir)
        failures = run_coroutine(_generate(jobs, teachers, config, store))
        rows, costs = _rows_and_costs(jobs, teachers, config, store, prompt_ids)
    keys = ((spec.name, job.prompt_id) for spec in teachers for job in jobs[spec.name])
    order = {key: i for i, key in enumerate(keys)}
    failures.sort(key=lambda failure: order[failure.teacher, failure.prompt_id])  # teacher order, then prompt order
    report = CostReport(config.mode, len(prompt_ids), costs, failures)
    if failures and not config.allow_incomplete:
        raise SynthesisError(_failure_message(failures, teachers, report, config), failures)
    if failures:
        logger.warning(_failure_message(failures, teachers, report, config))
    features = CONTRACTS["generations"].features(prompt_id=prompts.features["prompt_id"])
    # the rows already hold the contract's types: one Arrow table, not `Dataset.from_list` (3x the CPU, to re-encode)
    table = InMemoryTable.from_pylist(rows, schema=features.arrow_schema)
    return Dataset(table, info=DatasetInfo(features=features)), report


def cost_report_file(generations_config: str) -> str:
    """The file of the generations artifact that holds the cost report of `generations_config`."""
    return f"cost_report-{generations_config}.json"


def resolve_local_weights(teachers: list[TeacherSpec], store: ArtifactStore) -> list[TeacherSpec]:
    """The teachers, each `local` one with its `model_path` resolved as every model is (a folder, a model of the
    store, or a Hub id): weights that cannot be found stop the stage before any model loads."""

    def resolved(spec: TeacherSpec) -> TeacherSpec:
        path = store.resolve_model(spec.model_path or spec.model_id, f"{spec.name}.model_path", hub_ids=True)
        return replace(spec, model_path=path)

    return [resolved(spec) if spec.backend == "local" else spec for spec in teachers]


def _failure_message(
    failures: list[Failure], teachers: list[TeacherSpec], report: CostReport, config: SynthesisConfig
) -> str:
    """The undone (prompt, teacher) pairs, grouped by teacher and then by cause, each cause with its first error."""
    specs = {spec.name: spec for spec in teachers}
    needed = {cost.teacher: cost.rows_needed for cost in report.teachers}
    lines = [f"{len(failures)} of {report.rows_needed} (prompt, teacher) pairs were left undone:"]
    for teacher in dict.fromkeys(f.teacher for f in failures):
        spec, mine = specs[teacher], [f for f in failures if f.teacher == teacher]
        where = f"{spec.backend} at {spec.base_url}" if spec.base_url else spec.backend
        lines.append(f"  - {teacher} ({where}): {len(mine)} of {needed[teacher]} undone")
        for cause in dict.fromkeys(f.cause for f in mine):
            group = [f for f in mine if f.cause == cause]
            ids = ", ".join(str(f.prompt_id) for f in group[:5]) + (", ..." if len(group) > 5 else "")
            lines.append(f"      {len(group)} x {group[0].error} (prompts {ids})")
    if config.results_dir:
        lines.append(
            f"What was done is kept in results_dir {config.results_dir!r}: once the teachers are fixed, running "
            "again with it generates only what is missing."
        )
    else:
        lines.append("Set `results_dir` to keep what was done across runs.")
    return "\n".join(lines)


def resume_command(args: GenerateArguments, synthesis: SynthesisConfig, store: ArtifactStore) -> str:
    """The `persyn-hf generate` command line of this run: every field that differs from its default."""
    words = ["persyn-hf", "generate"]
    for config in (args, synthesis):
        for spec in dataclasses.fields(config):
            value = getattr(config, spec.name)
            if spec.default is dataclasses.MISSING or value != spec.default:
                words += [f"--{spec.name}", str(value).lower() if isinstance(value, bool) else str(value)]
    words += ["--store_root", str(store.root)] + ["--hub", "true"] * store.hub + ["--private", "true"] * store.private
    return shlex.join(words)


def run(args: GenerateArguments, synthesis: SynthesisConfig, store: ArtifactStore | None = None) -> StageResult:
    """Teachers answer the prompts; saves the generations and the cost report beside them.

    Returns the generations, where they were saved, and `{"cost": <cost report as a dict>, "report": <as a table>}`
    (the CLI prints the table).
    """
    store = store or ArtifactStore()
    store.check_output(
        args.generations_repo_id,
        "generations_repo_id",
        files=[data_file(args.generations_config), cost_report_file(args.generations_config)],
    )
    teachers = resolve_local_weights(load_teachers(args.teachers), store)
    prompts = store.load_dataset(args.prompts_repo_id, args.prompts_config, args.prompts_split, contract="prompts")
    if args.max_prompts is not None and args.max_prompts < len(prompts):
        prompts = prompts.shuffle(seed=synthesis.seed).select(range(args.max_prompts))
    assignments = None
    if args.assignments_repo_id is not None:
        assignments = store.load_dataset(
            args.assignments_repo_id, args.assignments_config, args.assignments_split, contract="assignments"
        )
    if synthesis.results_dir is None:  # resumable by default, also when pushing to the Hub
        synthesis.results_dir = str(
            Path(store.root, ".persyn-results", args.generations_repo_id, args.generations_config)
        )
    resume = f"Resume with:\n  {resume_command(args, synthesis, store)}"
    try:
        generations, report = synthesize(prompts, teachers, synthesis, assignments)
    except SynthesisError as error:
        raise SynthesisError(f"{error}\n{resume}", error.failures) from None
    if report.failures and not len(generations):
        message = _failure_message(report.failures, teachers, report, synthesis)
        raise SynthesisError(f"{message}\nNo row was done, so nothing was written.\n{resume}", report.failures)
    if not report.complete:
        logger.warning(resume)
    location = store.save_dataset(args.generations_repo_id, generations, config_name=args.generations_config)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "cost_report.json")
        path.write_text(json.dumps(report.to_dict(), indent=2, default=str))
        store.save_files(args.generations_repo_id, {cost_report_file(args.generations_config): path})
    return StageResult(generations, location, {"cost": report.to_dict(), "report": str(report)})
