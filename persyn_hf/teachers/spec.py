"""Teacher specs: declared once in YAML, referenced by `name` everywhere else."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

BACKENDS = ("tgi", "openai", "local")
# Generation parameters a teacher may set; each backend maps them onto its own API.
GENERATION_KEYS = ("max_new_tokens", "temperature", "top_p", "top_k", "do_sample", "repetition_penalty", "stop")


@dataclass(frozen=True)
class TeacherSpec:
    """One teacher model and how to reach it.

    Parameters:
        name: Unique short name used in every dataset column and config (`teacher`).
        model_id: Hub id of the model (provenance, cards, the `model` field of OpenAI requests).
        family: Model family, e.g. `"Qwen2.5"`; used by the Family-Strong baseline and the charts.
        size_b: Size in billions of parameters (activated parameters for MoE models).
        long_cot: Whether the teacher writes long chains of thought (R1-style).
        backend: One of `tgi`, `openai`, `local`.
        base_url: Endpoint of a `tgi` or `openai` backend.
        model_path: Path or Hub id of the weights for the `local` backend (defaults to `model_id`).
        generation: Generation parameters (`max_new_tokens`, `temperature`, `top_p`, ...).
        max_concurrency: Most requests in flight to this teacher at once.
        backend_args: Options of the backend's config class (`TGIConfig`, `OpenAIConfig`, `LocalConfig` in
            `persyn_hf.teachers.backends`), e.g. `{"route": "chat"}` or `{"batch_size": 16}`.
        samples: Samples per math prompt for rejection sampling; `None` follows the size rule of
            `SynthesisConfig` (4 under 72B, 2 for 72B-or-larger and long-CoT teachers).
    """

    name: str
    model_id: str
    family: str
    size_b: float
    long_cot: bool = False
    backend: str = "local"
    base_url: str | None = None
    model_path: str | None = None
    generation: dict = field(default_factory=dict)
    max_concurrency: int = 8
    backend_args: dict = field(default_factory=dict)
    samples: int | None = None


FIELDS = [f.name for f in dataclasses.fields(TeacherSpec)]
REQUIRED = [
    f.name
    for f in dataclasses.fields(TeacherSpec)
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
]


def _problems(index: int, entry: object) -> list[str]:
    """Everything wrong with one YAML entry, each problem with its fix."""
    where = f"teachers[{index}]"
    if not isinstance(entry, dict):
        return [f"{where} must be a mapping of teacher fields, got {type(entry).__name__}"]
    where = f"{where} ({entry.get('name', '?')})"
    problems = [f"{where}: unknown field {key!r}; valid fields: {FIELDS}" for key in entry if key not in FIELDS]
    problems += [f"{where}: missing required field {key!r}" for key in REQUIRED if key not in entry]
    backend = entry.get("backend", "local")
    if backend not in BACKENDS:
        problems.append(f"{where}: `backend` must be one of {list(BACKENDS)}, got {backend!r}")
    if backend in ("tgi", "openai") and not entry.get("base_url"):
        problems.append(f"{where}: backend {backend!r} needs `base_url`")
    size_b = entry.get("size_b", 1)
    if not isinstance(size_b, (int, float)) or isinstance(size_b, bool) or size_b <= 0:
        problems.append(f"{where}: `size_b` must be a positive number, got {entry.get('size_b')!r}")
    concurrency = entry.get("max_concurrency", 1)
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        problems.append(f"{where}: `max_concurrency` must be a positive integer, got {concurrency!r}")
    generation = entry.get("generation", {})
    if not isinstance(generation, dict):
        problems.append(f"{where}: `generation` must be a mapping, got {generation!r}")
    else:
        problems += [
            f"{where}: unknown generation parameter {key!r}; valid parameters: {list(GENERATION_KEYS)}"
            for key in generation
            if key not in GENERATION_KEYS
        ]
    backend_args = entry.get("backend_args", {})
    if not isinstance(backend_args, dict):
        problems.append(f"{where}: `backend_args` must be a mapping, got {backend_args!r}")
    elif backend in BACKENDS:
        from persyn_hf.teachers.backends import BACKEND_CONFIGS  # lazy: backends imports this module

        valid = [f.name for f in dataclasses.fields(BACKEND_CONFIGS[backend])]
        problems += [
            f"{where}: unknown `backend_args` key {key!r} for backend {backend!r}; valid keys: {valid}"
            for key in backend_args
            if key not in valid
        ]
    samples = entry.get("samples")
    if samples is not None and (not isinstance(samples, int) or isinstance(samples, bool) or samples < 1):
        problems.append(f"{where}: `samples` must be a positive integer or null, got {samples!r}")
    if not isinstance(entry.get("long_cot", False), bool):
        problems.append(f"{where}: `long_cot` must be true or false, got {entry.get('long_cot')!r}")
    return problems


def load_teachers(source: str | Path | list[dict]) -> list[TeacherSpec]:
    """Read and validate teacher specs from a YAML file (a list, or a mapping with a `teachers` list).

    Raises a `ValueError` listing every problem at once.
    """
    entries = source
    if isinstance(source, (str, Path)):
        entries = yaml.safe_load(Path(source).read_text())
        if isinstance(entries, dict):
            entries = entries.get("teachers")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"Teacher specs must be a non-empty list of teachers, got {entries!r} from {source!r}")
    problems = [problem for i, entry in enumerate(entries) for problem in _problems(i, entry)]
    names = [entry.get("name") for entry in entries if isinstance(entry, dict)]
    problems += [
        f"teacher name {name!r} is declared {names.count(name)} times; names must be unique"
        for name in sorted({n for n in names if names.count(n) > 1}, key=str)
    ]
    if problems:
        raise ValueError("Invalid teacher specs:\n  - " + "\n  - ".join(problems))
    return [TeacherSpec(**entry) for entry in entries]
