"""Teacher specs: declared once in YAML, referenced by `name` everywhere else.

A spec says which model a teacher is (`model_id`, `family`, `size_b`, `long_cot`), how to reach it (`backend`,
`base_url` / `model_path`, and the backend's own options in `backend_args`) and how it generates. Every rule about a
spec lives here, checked once when the specs are loaded; the backends only read them.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from persyn_hf.errors import ArtifactNotFoundError, ConfigError, check_utf8

BACKENDS = ("tgi", "openai", "local")
# Generation parameters a teacher may set; each backend maps them onto its own API.
GENERATION_KEYS = ("max_new_tokens", "temperature", "top_p", "top_k", "do_sample", "repetition_penalty", "stop")
HTTP_CLIENTS = ("aiohttp", "huggingface_hub")
TGI_ROUTES = ("generate", "chat")


@dataclass
class TGIConfig:
    """Options of the `tgi` backend (a teacher's `backend_args`).

    Parameters:
        route (`str`, *optional*, defaults to `"generate"`):
            `"generate"`: TGI's `/generate` with the prompt rendered by the teacher's chat template here;
            `"chat"`: TGI's Messages API (`/v1/chat/completions`), rendered by the server.
        model (`str`, *optional*):
            The `model` field of `route: chat` requests; defaults to the teacher's `model_id`. TGI serves one model
            and ignores the field; vLLM and SGLang answer only to a name they serve (`GET /v1/models` lists them).
        tokenizer (`str`, *optional*):
            Tokenizer whose chat template renders prompts for `route="generate"`; defaults to the teacher's
            `model_path`, then its `model_id`.
        api_key_env (`str`, *optional*):
            Environment variable holding the bearer token to send, read when the run starts and never written
            anywhere. Unset: the placeholder `"EMPTY"` is sent.
        hf_token (`bool`, *optional*, defaults to `False`):
            Send the Hugging Face token (`HF_TOKEN` or `hf auth login`), e.g. for Inference Endpoints.
        http_client (`str`, *optional*, defaults to `"aiohttp"`):
            `"aiohttp"`: one keep-alive `aiohttp` session per teacher (about 5x less client CPU per request);
            `"huggingface_hub"`: `huggingface_hub.AsyncInferenceClient`.
    """

    route: str = "generate"
    model: str | None = None
    tokenizer: str | None = None
    api_key_env: str | None = None
    hf_token: bool = False
    http_client: str = "aiohttp"


@dataclass
class OpenAIConfig:
    """Options of the `openai` backend (a teacher's `backend_args`).

    Parameters:
        api_key_env (`str`, *optional*):
            Environment variable holding the API key, read when the run starts and never written anywhere. Unset:
            the placeholder `"EMPTY"` is sent.
        model (`str`, *optional*):
            The `model` field of each request; defaults to the teacher's `model_id`. Set it when the server knows
            the model by another name (vLLM's `--served-model-name`); `GET /v1/models` lists the names it serves.
        http_client (`str`, *optional*, defaults to `"aiohttp"`):
            `"aiohttp"` or `"huggingface_hub"` (`AsyncInferenceClient`), as for `tgi`.
    """

    api_key_env: str | None = None
    model: str | None = None
    http_client: str = "aiohttp"


@dataclass
class LocalConfig:
    """Options of the `local` backend (a teacher's `backend_args`).

    Parameters:
        batch_size (`int`, *optional*, defaults to `8`):
            Most prompts generated in one batch; requests waiting while a batch runs form the next one.
        device (`str`, *optional*, defaults to `"auto"`):
            `"auto"` (CUDA when available, else CPU), or any torch device.
        dtype (`str`, *optional*, defaults to `"auto"`):
            Weights dtype, as `from_pretrained(dtype=...)` takes it.
    """

    batch_size: int = 8
    device: str = "auto"
    dtype: str = "auto"


BACKEND_CONFIGS = {"tgi": TGIConfig, "openai": OpenAIConfig, "local": LocalConfig}


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
        generation: Generation parameters (`max_new_tokens`, `temperature`, `top_p`, ...). A `stop` string is one
            stop sequence: it is kept as a one-element list, the form every backend takes.
        max_concurrency: Most requests in flight to this teacher at once.
        backend_args: Options of the backend's config class (`TGIConfig`, `OpenAIConfig`, `LocalConfig`), e.g.
            `{"route": "chat"}` or `{"batch_size": 16}`.
        samples: Samples per math prompt for rejection sampling; `None` follows the size rule of the generate
            stage (4 under 72B, 2 for 72B-or-larger and long-CoT teachers).
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

    def __post_init__(self):
        if isinstance(self.generation, dict) and isinstance(self.generation.get("stop"), str):
            object.__setattr__(self, "generation", {**self.generation, "stop": [self.generation["stop"]]})

    def options(self):
        """The backend's options (`TGIConfig`, `OpenAIConfig` or `LocalConfig`) from `backend_args`, checked."""
        problems = backend_problems(self.backend, self.backend_args)
        if problems:
            raise ConfigError(f"Teacher {self.name!r}: " + "; ".join(problems))
        return BACKEND_CONFIGS[self.backend](**self.backend_args)


FIELDS = [f.name for f in dataclasses.fields(TeacherSpec)]
REQUIRED = [
    f.name
    for f in dataclasses.fields(TeacherSpec)
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
]


def _is_positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


TYPE_NAMES = {str: "a string", bool: "true or false", int: "an integer", type(None): "null"}


def _has_type(value, types: tuple[type, ...]) -> bool:
    return any(isinstance(value, t) and not (t is int and isinstance(value, bool)) for t in types)


def backend_problems(backend: str, backend_args: dict) -> list[str]:
    """Everything wrong with a backend's options: unknown keys, values of the wrong type, values out of range."""
    hints = typing.get_type_hints(BACKEND_CONFIGS[backend])
    types = {name: typing.get_args(hint) or (hint,) for name, hint in hints.items()}  # `str | None`: (str, None)
    problems = [
        f"unknown `backend_args` key {key!r} for backend {backend!r}; valid keys: {list(types)}"
        for key in backend_args
        if key not in types
    ]
    mistyped = [key for key, value in backend_args.items() if key in types and not _has_type(value, types[key])]
    problems += [
        f"`backend_args.{key}` must be {' or '.join(TYPE_NAMES[t] for t in types[key])}, got {backend_args[key]!r}"
        for key in mistyped
    ]
    args = {key: value for key, value in backend_args.items() if key not in mistyped}
    if args.get("route", "generate") not in TGI_ROUTES and backend == "tgi":
        problems.append(f"`backend_args.route` must be 'generate' or 'chat', got {args['route']!r}")
    if args.get("http_client", "aiohttp") not in HTTP_CLIENTS:
        problems.append(f"`backend_args.http_client` must be one of {list(HTTP_CLIENTS)}, got {args['http_client']!r}")
    if backend == "local" and not _is_positive_int(args.get("batch_size", 1)):
        problems.append(f"`backend_args.batch_size` must be a positive integer, got {args['batch_size']!r}")
    return problems


def _problems(index: int, entry: object) -> list[str]:
    """Everything wrong with one YAML entry, each problem with its fix."""
    where = f"teachers[{index}]"
    if not isinstance(entry, dict):
        return [f"{where} must be a mapping of teacher fields, got {type(entry).__name__}"]
    where = f"{where} ({entry.get('name', '?')})"
    problems = [f"unknown field {key!r}; valid fields: {FIELDS}" for key in entry if key not in FIELDS]
    problems += [f"missing required field {key!r}" for key in REQUIRED if key not in entry]
    backend = entry.get("backend", "local")
    if backend not in BACKENDS:
        problems.append(f"`backend` must be one of {list(BACKENDS)}, got {backend!r}")
    if backend in ("tgi", "openai") and not entry.get("base_url"):
        problems.append(f"backend {backend!r} needs `base_url`")
    size_b = entry.get("size_b", 1)
    if not isinstance(size_b, (int, float)) or isinstance(size_b, bool) or size_b <= 0:
        problems.append(f"`size_b` must be a positive number, got {entry.get('size_b')!r}")
    if not _is_positive_int(entry.get("max_concurrency", 1)):
        problems.append(f"`max_concurrency` must be a positive integer, got {entry.get('max_concurrency')!r}")
    generation = entry.get("generation", {})
    if not isinstance(generation, dict):
        problems.append(f"`generation` must be a mapping, got {generation!r}")
    else:
        problems += [
            f"unknown generation parameter {key!r}; valid parameters: {list(GENERATION_KEYS)}"
            for key in generation
            if key not in GENERATION_KEYS
        ]
        stop = generation.get("stop", [])
        if not isinstance(stop, str) and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
            problems.append(f"`generation.stop` must be a string or a list of strings, got {stop!r}")
    backend_args = entry.get("backend_args", {})
    if not isinstance(backend_args, dict):
        problems.append(f"`backend_args` must be a mapping, got {backend_args!r}")
    elif backend in BACKENDS:
        problems += backend_problems(backend, backend_args)
    samples = entry.get("samples")
    if samples is not None and not _is_positive_int(samples):
        problems.append(f"`samples` must be a positive integer or null, got {samples!r}")
    if not isinstance(entry.get("long_cot", False), bool):
        problems.append(f"`long_cot` must be true or false, got {entry.get('long_cot')!r}")
    return [f"{where}: {problem}" for problem in problems]


def _read_entries(path: Path):
    if not path.is_file():
        raise ArtifactNotFoundError(
            f"The teachers file {str(path)!r} does not exist: give the path of a teachers YAML."
        )
    check_utf8(path, "The teachers file", ConfigError)
    try:
        entries = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"The teachers file {str(path)!r} is not valid YAML: {error}") from None
    return entries.get("teachers") if isinstance(entries, dict) else entries


def load_teachers(source: str | Path | list[dict]) -> list[TeacherSpec]:
    """Read and validate teacher specs from a YAML file (a list, or a mapping with a `teachers` list).

    Raises a `ConfigError` listing every problem at once, numbered.
    """
    entries = _read_entries(Path(source)) if isinstance(source, (str, Path)) else source
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"Teacher specs must be a non-empty list of teachers, got {entries!r} from {source!r}")
    problems = [problem for i, entry in enumerate(entries) for problem in _problems(i, entry)]
    names = [entry.get("name") for entry in entries if isinstance(entry, dict)]
    problems += [
        f"teacher name {name!r} is declared {names.count(name)} times; names must be unique"
        for name in sorted({n for n in names if names.count(n) > 1}, key=str)
    ]
    if problems:
        where = f" in {str(source)!r}" if isinstance(source, (str, Path)) else ""
        listed = " ".join(f"({number}) {problem};" for number, problem in enumerate(problems, start=1))
        raise ConfigError(f"Invalid teacher specs{where} ({len(problems)} problems): {listed[:-1]}")
    return [TeacherSpec(**entry) for entry in entries]
