"""Backends: one config and one client class per way of reaching a teacher, all returning a `Completion`.

- `tgi`: a text-generation-inference server, either its `/generate` route with the prompt rendered by the
  teacher's own chat template, or its Messages API;
- `openai`: any OpenAI-compatible `/v1/chat/completions` server (vLLM, SGLang, TGI's Messages API);
- `local`: in-process `transformers` generation, batched (the embedded default).

Every backend takes chat messages and returns the same record. Retries, time-outs and concurrency are the
pool's business (`persyn_hf.teachers.pool`); a backend makes exactly one attempt per call. A remote backend's
`probe()` checks, with one GET, that its endpoint speaks the backend's protocol and serves the teacher's model;
it raises an `EndpointError` saying what the server answered and what to fix.

The remote backends speak HTTP through one keep-alive `aiohttp` session per teacher by default, or through
`huggingface_hub.AsyncInferenceClient` (`backend_args: {http_client: huggingface_hub}`). Both send the same
requests; through the whole synthesis engine the first costs about 0.2 ms of client CPU per request against 1.0 ms
(`benchmarks/client_throughput.py`, 64 requests in flight), which is what lets one process keep hundreds of requests
in flight.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from dataclasses import dataclass, field

from persyn_hf.errors import ConfigError
from persyn_hf.teachers.spec import TeacherSpec

# Finish reasons are reported in the OpenAI vocabulary whatever the server says.
FINISH_REASONS = {"eos_token": "stop", "stop_sequence": "stop", "stop": "stop", "length": "length"}
NO_API_KEY = "EMPTY"  # the placeholder OpenAI-compatible servers accept when they need no key
PROMPT_BUCKET = 64  # the local backend left-pads prompts to a multiple of this many tokens
# `from_pretrained` is not thread-safe (it sets process-wide init contexts): local teachers load one at a time.
_LOAD_LOCK = threading.Lock()


@dataclass
class Completion:
    """One response of one teacher: the record every backend returns.

    Parameters:
        text: The generated text, without the prompt and without special tokens.
        finish_reason: `"stop"` (end of turn or a stop sequence) or `"length"` (ran into `max_new_tokens`).
        prompt_tokens: Tokens of the rendered prompt, `None` when the server does not say.
        completion_tokens: Tokens generated, end-of-turn token included, `None` when the server does not say.
        attempts: Requests it took, retries included (set by the pool).
    """

    text: str
    finish_reason: str
    prompt_tokens: int | None
    completion_tokens: int | None
    attempts: int = 1


def _api_key(spec: TeacherSpec, api_key_env: str | None, hf_token: bool = False) -> str:
    """The bearer token for a remote teacher; never the Hugging Face token unless asked for."""
    if hf_token:
        from huggingface_hub import get_token

        if get_token() is None:
            raise ConfigError(
                f"Teacher {spec.name!r} has `hf_token: true` but no token: set HF_TOKEN or `hf auth login`"
            )
        return get_token()
    if api_key_env is None:
        return NO_API_KEY
    if not os.environ.get(api_key_env):
        raise ConfigError(f"Teacher {spec.name!r}: environment variable {api_key_env!r} (`api_key_env`) is not set")
    return os.environ[api_key_env]


def tgi_parameters(generation: dict, seed: int | None) -> dict:
    """Map generation parameters onto TGI's `parameters` (TGI wants a positive temperature)."""
    parameters = {key: value for key, value in generation.items() if key != "temperature"}
    temperature = generation.get("temperature")
    if temperature:
        parameters["temperature"] = temperature
        parameters.setdefault("do_sample", True)
    elif temperature == 0:
        parameters["do_sample"] = False
    if parameters.get("do_sample") and seed is not None:
        parameters["seed"] = seed
    return parameters


def chat_parameters(generation: dict, seed: int | None) -> dict:
    """Map generation parameters onto chat-completion fields; extras go in the body (vLLM reads them).
    `do_sample: false` is greedy decoding, temperature 0, whatever temperature is also given."""
    parameters = {"seed": seed}
    extra = {}
    for key, value in generation.items():
        if key == "max_new_tokens":
            parameters["max_tokens"] = value
        elif key in ("temperature", "top_p", "stop"):
            parameters[key] = value
        elif key != "do_sample":
            extra[key] = value
    if not generation.get("do_sample", True):
        parameters["temperature"] = 0.0
    return {**parameters, "extra_body": extra or None}


def chat_url(base_url: str) -> str:
    """The chat-completions URL of a server, from its base URL with or without `/v1` (as `huggingface_hub`)."""
    base = base_url.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    return f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"


def models_url(base_url: str) -> str:
    """The `/v1/models` URL of an OpenAI-compatible server, from its base URL with or without `/v1`."""
    return chat_url(base_url).removesuffix("/chat/completions") + "/models"


def completions_url(base_url: str) -> str:
    """The (text) completions URL of a server, from its base URL in any of the forms `chat_url` takes."""
    return chat_url(base_url).removesuffix("/chat/completions") + "/completions"


class TeacherHTTPError(Exception):
    """An error answer from a teacher server."""

    def __init__(self, status: int, message: str, retry_after: float | None = None):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.retry_after = retry_after


class EndpointError(Exception):
    """A teacher's endpoint cannot serve it: what the server answered (`answer`), and how to fix that."""

    def __init__(self, answer: str, fix: str):
        super().__init__(f"{answer}. Fix: {fix}")
        self.answer = answer


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _message(payload) -> str:
    """The message inside a parsed error body, however deep (`{"error": {"message": ...}}`)."""
    if isinstance(payload, dict):
        for key in ("error", "detail", "message", "msg"):
            if payload.get(key):
                return _message(payload[key])
    if isinstance(payload, list):  # FastAPI's validation errors: [{"loc": [...], "msg": ...}, ...]
        return "; ".join(_message(item) for item in payload)
    return str(payload)


def error_message(body: bytes) -> str:
    """The message of an error answer in any common shape, on one line: `{"error": "..."}` (TGI),
    `{"error": {"message": "..."}}` (OpenAI, vLLM, SGLang), `{"detail": "..."}` (FastAPI), `{"message": "..."}`,
    or plain text."""
    text = body.decode(errors="replace").strip()
    try:
        message = _message(json.loads(text))
    except ValueError:
        message = text
    return _one_line(message)[:500] or "(empty body)"


class AiohttpClient:
    """TGI's `/generate` and the chat-completions API over one keep-alive `aiohttp` session per teacher."""

    def __init__(self, base_url: str, api_key: str, timeout_s: float, max_connections: int):
        self.base_url = base_url.rstrip("/")
        self.chat_url = chat_url(base_url)
        self.api_key = api_key
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.timeout_s, self.max_connections = timeout_s, max_connections
        self.session = None

    async def start(self) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.max_connections),
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            headers=self.headers,
        )

    async def _post(self, url: str, payload: dict) -> dict:
        async with self.session.post(url, json=payload) as response:
            body = await response.read()
            if response.status >= 400:
                retry_after = response.headers.get("Retry-After")
                retry_after = float(retry_after) if retry_after and retry_after.isdigit() else None
                raise TeacherHTTPError(response.status, error_message(body), retry_after)
        return json.loads(body)

    async def generate(self, prompt: str, parameters: dict) -> dict:
        return await self._post(
            f"{self.base_url}/generate", {"inputs": prompt, "parameters": {**parameters, "details": True}}
        )

    async def chat(self, messages: list[dict], parameters: dict) -> dict:
        fields = {key: value for key, value in parameters.items() if key != "extra_body" and value is not None}
        return await self._post(self.chat_url, {"messages": messages, **fields, **(parameters["extra_body"] or {})})

    async def completions(self, payload: dict) -> dict:
        return await self._post(completions_url(self.base_url), payload)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


class HubClient:
    """The same two calls through `huggingface_hub.AsyncInferenceClient`, answered in the same shape."""

    def __init__(self, base_url: str, api_key: str, timeout_s: float, max_connections: int):
        from huggingface_hub import AsyncInferenceClient

        self.api_key = api_key
        self.client = AsyncInferenceClient(base_url=base_url.rstrip("/"), api_key=api_key, timeout=timeout_s)

    async def start(self) -> None:
        from huggingface_hub import constants

        if constants.is_offline_mode():  # the Hub client then refuses every request, to any host
            raise ConfigError(
                f"`http_client: huggingface_hub` cannot reach {self.client.model} while HF_HUB_OFFLINE is set; "
                "use the default `http_client: aiohttp`, or unset HF_HUB_OFFLINE."
            )

    async def generate(self, prompt: str, parameters: dict) -> dict:
        output = await self.client.text_generation(prompt, details=True, **parameters)
        details = output.details
        return {
            "generated_text": output.generated_text,
            "details": {"finish_reason": details.finish_reason, "generated_tokens": details.generated_tokens},
        }

    async def chat(self, messages: list[dict], parameters: dict) -> dict:
        output = await self.client.chat_completion(messages, **parameters)
        choice, usage = output.choices[0], output.usage
        return {
            "choices": [{"message": {"content": choice.message.content}, "finish_reason": choice.finish_reason}],
            "usage": usage and {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens},
        }

    async def close(self) -> None:
        await self.client.close()


HTTP_CLIENT_CLASSES = {"aiohttp": AiohttpClient, "huggingface_hub": HubClient}


def _http_client(spec: TeacherSpec, config, request_timeout_s: float):
    api_key = _api_key(spec, config.api_key_env, getattr(config, "hf_token", False))
    client_class = HTTP_CLIENT_CLASSES[config.http_client]
    return client_class(spec.base_url, api_key, request_timeout_s, spec.max_concurrency)


def describe(error: BaseException) -> str:
    """An exception on one line, its type first (servers often put the useful part on later lines)."""
    if isinstance(error, TimeoutError) and not str(error):
        return "TimeoutError: no answer in time"
    response = getattr(error, "response", None)  # huggingface_hub's HTTP errors: the server's answer, as ours reads it
    if isinstance(getattr(response, "status_code", None), int) and not isinstance(error, TeacherHTTPError):
        try:
            return f"{type(error).__name__}: HTTP {response.status_code}: {error_message(response.content)}"
        except Exception:  # a streamed answer that was never read: the client's own text below
            pass
    return f"{type(error).__name__}: {_one_line(str(error))[:500]}"


NO_CONNECTION_FIX = "start the server, or correct `base_url` (scheme, host and port)"
NOT_READY_FIX = "the server answers but does not serve yet: wait until it is ready, or read its log"
CHAT_PROTOCOL_FIX = (
    "`backend: openai` (and `backend: tgi` with `route: chat`) needs an OpenAI-compatible server (vLLM, SGLang, "
    "TGI's Messages API) whose root or `/v1` is `base_url`; for TGI's `/generate` use `backend: tgi`"
)
TGI_PROTOCOL_FIX = (
    "`backend: tgi` with `route: generate` needs a text-generation-inference server at `base_url`; for vLLM, SGLang "
    "or another OpenAI-compatible server use `backend: openai`"
)


def _auth_fix(config) -> str:
    if getattr(config, "hf_token", False):
        return "the server refused the Hugging Face token: check that it grants access to this endpoint"
    if config.api_key_env:
        return f"the server refused the key in ${config.api_key_env} (`backend_args.api_key_env`): check it"
    return "the server wants an API key: set `backend_args.api_key_env` to the environment variable that holds it"


async def http_get(url: str, api_key: str, timeout_s: float) -> tuple[int, bytes]:
    """(status, body) of one GET sent with the teacher's bearer token, on a session of its own."""
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with (
        aiohttp.ClientSession(timeout=timeout, headers={"Authorization": f"Bearer {api_key}"}) as session,
        session.get(url) as response,
    ):
        return response.status, await response.read()


async def _get_json(url: str, api_key: str, timeout_s: float, config, protocol_fix: str):
    """The JSON a GET answers; an `EndpointError` for no connection, a refused key, a missing route, not JSON."""
    import aiohttp

    try:
        status, body = await http_get(url, api_key, timeout_s)
    except (OSError, TimeoutError, aiohttp.ClientError) as error:
        raise EndpointError(f"GET {url}: no answer ({describe(error)})", NO_CONNECTION_FIX) from error
    if status >= 400:
        fixes = {401: _auth_fix(config), 403: _auth_fix(config), 404: protocol_fix, 405: protocol_fix}
        raise EndpointError(f"GET {url}: HTTP {status}: {error_message(body)}", fixes.get(status, NOT_READY_FIX))
    try:
        return json.loads(body)
    except ValueError:
        raise EndpointError(f"GET {url} answered {error_message(body)[:100]!r}, not JSON", protocol_fix) from None


async def probe_chat_api(url: str, model: str, api_key: str, timeout_s: float, config) -> None:
    """Check that `GET /v1/models` answers an OpenAI model list that names `model` (TGI answers its one model
    instead of a list, and serves any `model` name)."""
    listing = await _get_json(url, api_key, timeout_s, config, CHAT_PROTOCOL_FIX)
    if isinstance(listing, dict) and isinstance(listing.get("data"), list):
        served = [entry.get("id") for entry in listing["data"] if isinstance(entry, dict)]
        if model not in served:
            raise EndpointError(
                f"GET {url} lists the models {served}, not {model!r}",
                f"set the teacher's `model_id`, or `backend_args.model`, to one of {served}",
            )
    elif not (isinstance(listing, dict) and listing.get("object") == "model"):
        raise EndpointError(f"GET {url} answered {str(listing)[:100]!r}, not a list of models", CHAT_PROTOCOL_FIX)


async def probe_tgi(url: str, api_key: str, timeout_s: float, config) -> None:
    """Check that `GET /info` answers TGI's endpoint info."""
    info = await _get_json(url, api_key, timeout_s, config, TGI_PROTOCOL_FIX)
    if not (isinstance(info, dict) and "model_id" in info):
        raise EndpointError(f"GET {url} answered {str(info)[:100]!r}, not TGI's endpoint info", TGI_PROTOCOL_FIX)


async def _chat(client, messages: list[dict], parameters: dict, seed: int | None) -> Completion:
    """One chat completion; `parameters`: `model` and `chat_parameters` (computed once per teacher)."""
    output = await client.chat(messages, {**parameters, "seed": seed})
    choice, usage = output["choices"][0], output.get("usage")
    return Completion(
        text=choice["message"]["content"] or "",
        finish_reason=FINISH_REASONS.get(choice["finish_reason"], choice["finish_reason"]),
        prompt_tokens=usage["prompt_tokens"] if usage else None,
        completion_tokens=usage["completion_tokens"] if usage else None,
    )


class TGIBackend:
    """A teacher served by text-generation-inference."""

    def __init__(self, spec: TeacherSpec, request_timeout_s: float):
        self.spec = spec
        self.config = spec.options()
        self.client = _http_client(spec, self.config, request_timeout_s)
        self.model = self.config.model or spec.model_id
        self.chat_parameters = {"model": self.model, **chat_parameters(spec.generation, None)}
        self.tokenizer = None

    async def start(self) -> None:
        await self.client.start()
        if self.config.route == "generate":
            from transformers import AutoTokenizer

            source = self.config.tokenizer or self.spec.model_path or self.spec.model_id
            try:
                self.tokenizer = await asyncio.to_thread(AutoTokenizer.from_pretrained, source)
            except (OSError, ValueError) as error:
                raise ConfigError(
                    f"Teacher {self.spec.name!r} (`tgi`, `route: generate`) renders its prompts with the tokenizer "
                    f"{source!r}, which does not load ({_one_line(str(error))[:300]}): set `backend_args.tokenizer` "
                    "to a local folder or a Hub id this machine can read, or use `route: chat`."
                ) from None

    async def probe(self, timeout_s: float) -> None:
        """Check the endpoint: TGI's `GET /info` (`route: generate`), or `GET /v1/models` (`route: chat`)."""
        if self.config.route == "chat":
            await probe_chat_api(
                models_url(self.spec.base_url), self.model, self.client.api_key, timeout_s, self.config
            )
        else:
            url = f"{self.spec.base_url.rstrip('/')}/info"
            await probe_tgi(url, self.client.api_key, timeout_s, self.config)

    async def generate(self, messages: list[dict], seed: int | None = None) -> Completion:
        if self.config.route == "chat":
            return await _chat(self.client, messages, self.chat_parameters, seed)
        prompt = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        output = await self.client.generate(prompt, tgi_parameters(self.spec.generation, seed))
        details = output["details"]
        return Completion(
            text=output["generated_text"],
            finish_reason=FINISH_REASONS.get(details["finish_reason"], details["finish_reason"]),
            prompt_tokens=len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"]),
            completion_tokens=details["generated_tokens"],
        )

    async def close(self) -> None:
        await self.client.close()


class OpenAIBackend:
    """A teacher behind any OpenAI-compatible chat-completions server."""

    def __init__(self, spec: TeacherSpec, request_timeout_s: float):
        self.spec = spec
        self.config = spec.options()
        self.client = _http_client(spec, self.config, request_timeout_s)
        self.model = self.config.model or spec.model_id
        self.chat_parameters = {"model": self.model, **chat_parameters(spec.generation, None)}

    async def start(self) -> None:
        await self.client.start()

    async def probe(self, timeout_s: float) -> None:
        """Check the endpoint: `GET /v1/models` must list the teacher's model."""
        await probe_chat_api(models_url(self.spec.base_url), self.model, self.client.api_key, timeout_s, self.config)

    async def generate(self, messages: list[dict], seed: int | None = None) -> Completion:
        return await _chat(self.client, messages, self.chat_parameters, seed)

    async def prompt_logprobs(self, token_ids: list[int]) -> list[dict | None]:
        """The server's log-probability of every token of `token_ids` given those before it (`/v1/completions`
        with `prompt_logprobs: 0`, vLLM's extension): `None` for the first, then `{token_id: {"logprob": ...}}`."""
        model = self.config.model or self.spec.model_id
        payload = {"model": model, "prompt": token_ids, "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0}
        output = await self.client.completions(payload)
        return output["choices"][0]["prompt_logprobs"]

    async def close(self) -> None:
        await self.client.close()


class SeededSampling:
    """Sampling with one seeded random stream per sequence: a logits processor for greedy `generate`.

    Each step warps the logits (temperature, top-k, top-p, as `generate` would) and adds Gumbel noise drawn from the
    sequence's own generator, so the argmax is a sample of the warped distribution (the Gumbel-max trick) that
    depends on that sequence's logits and seed only. A `None` seed draws a fresh one.
    """

    def __init__(self, seeds: list[int | None], temperature: float = 1.0, top_k: int | None = None, top_p=None):
        import torch
        from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        self.warpers = [TemperatureLogitsWarper(temperature)]
        if top_k:
            self.warpers.append(TopKLogitsWarper(top_k))
        if top_p is not None and top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p))
        self.generators = [torch.Generator() for _ in seeds]
        for generator, seed in zip(self.generators, seeds):
            if seed is None:
                generator.seed()
            else:
                generator.manual_seed(seed)

    @classmethod
    def from_generation(cls, generation: dict, seeds: list[int | None]) -> SeededSampling | None:
        """The sampler a teacher's generation parameters ask for (popping them from `generation`), or `None` for
        greedy decoding (`temperature: 0` or `do_sample: false`)."""
        temperature = generation.pop("temperature", None)
        do_sample = generation.pop("do_sample", bool(temperature))
        top_k, top_p = generation.pop("top_k", None), generation.pop("top_p", None)
        if not do_sample or temperature == 0:
            return None
        return cls(seeds, temperature or 1.0, top_k, top_p)

    def __call__(self, input_ids, scores):
        import torch

        for warper in self.warpers:
            scores = warper(input_ids, scores)
        uniform = torch.stack([torch.rand(scores.shape[-1], generator=g) for g in self.generators])
        return scores - torch.log(-torch.log(uniform.to(scores.device)))


@dataclass
class _Pending:
    prompt: str
    seed: int | None
    future: asyncio.Future = field(repr=False)
    bucket: int | None = None  # set by the batching loop: the tokenizer is not safe to share across threads


class LocalBackend:
    """A teacher run in-process with `transformers`, batching the requests that wait while a batch runs.

    Every batch has the same shape: `batch_size` rows (filled up with copies of its first prompt) and prompts
    left-padded to a multiple of `PROMPT_BUCKET` tokens, one bucket per batch. Matrix kernels round the same way for
    the same shapes, so a request's response depends on its prompt and its seed only, bit for bit, never on the
    requests it happened to be batched with. The pool's per-request time-out does not apply: a running batch cannot
    be interrupted.
    """

    def __init__(self, spec: TeacherSpec, request_timeout_s: float | None = None):
        self.spec = spec
        self.config = spec.options()
        self.model = self.tokenizer = None
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task | None = None
        self._lock = threading.Lock()

    async def start(self) -> None:
        await asyncio.to_thread(self.load)
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._serve())

    async def probe(self, timeout_s: float) -> None:
        """Nothing to check: `start` loaded the weights."""

    def load(self) -> None:
        """Load the tokenizer and weights (blocking)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source = self.spec.model_path or self.spec.model_id
        device = self.config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        with _LOAD_LOCK:
            self.tokenizer = AutoTokenizer.from_pretrained(source, padding_side="left")
            self.model = AutoModelForCausalLM.from_pretrained(source, dtype=self.config.dtype).to(device).eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def render(self, messages: list[dict]) -> str:
        """The prompt as the teacher's chat template renders it, ready for the assistant's turn."""
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def bucket(self, prompt: str) -> int:
        """The length bucket of a rendered prompt: its token count in units of `PROMPT_BUCKET`, rounded up."""
        return -(-len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"]) // PROMPT_BUCKET)

    async def generate(self, messages: list[dict], seed: int | None = None) -> Completion:
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(self.render(messages), seed, future))
        return await future

    async def _serve(self) -> None:
        waiting: list[_Pending] = []
        while True:
            if not waiting:
                waiting.append(await self._queue.get())
            while not self._queue.empty():
                waiting.append(self._queue.get_nowait())
            waiting = [pending for pending in waiting if not pending.future.done()]  # drop cancelled callers
            if not waiting:
                continue
            for pending in waiting:  # here, never while a batch runs: one thread uses the tokenizer at a time
                pending.bucket = pending.bucket or self.bucket(pending.prompt)
            batch = [pending for pending in waiting if pending.bucket == waiting[0].bucket][: self.config.batch_size]
            waiting = [pending for pending in waiting if all(pending is not chosen for chosen in batch)]
            try:
                completions = await asyncio.to_thread(
                    self.generate_rendered, [p.prompt for p in batch], self.spec.generation, [p.seed for p in batch]
                )
            except Exception as error:  # every caller of the batch sees the error
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(error)
                continue
            for pending, completion in zip(batch, completions):
                if not pending.future.done():
                    pending.future.set_result(completion)

    def generate_rendered(self, prompts: list[str], generation: dict, seeds: list[int | None]) -> list[Completion]:
        """One response per already rendered prompt in one `model.generate` call of the backend's fixed shape
        (thread-safe). Each prompt samples from its own seeded stream (`SeededSampling`)."""
        import torch

        generation = dict(generation)
        stop = generation.pop("stop", None)
        filler = max(self.config.batch_size - len(prompts), 0)
        sampling = SeededSampling.from_generation(generation, [*seeds, *[0] * filler])
        with self._lock, torch.inference_mode():  # the tokenizer and the model serve one thread at a time
            inputs = self.tokenizer(
                [*prompts, *[prompts[0]] * filler],
                return_tensors="pt",
                padding=True,
                pad_to_multiple_of=PROMPT_BUCKET,
                add_special_tokens=False,
            ).to(self.model.device)
            output = self.model.generate(
                **inputs,
                **generation,
                do_sample=False,
                logits_processor=[sampling] if sampling is not None else None,
                stop_strings=stop,
                tokenizer=self.tokenizer if stop else None,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        generated = output[: len(prompts), inputs["input_ids"].shape[1] :].tolist()
        prompt_lengths = inputs["attention_mask"][: len(prompts)].sum(dim=1).tolist()
        return [
            self._completion(tokens, prompt_tokens, stop) for tokens, prompt_tokens in zip(generated, prompt_lengths)
        ]

    def _completion(self, tokens: list[int], prompt_tokens: int, stop: list[str] | None) -> Completion:
        eos_ids = self.model.generation_config.eos_token_id
        eos_ids = set(eos_ids if isinstance(eos_ids, list) else [eos_ids])
        end = next((i for i, token in enumerate(tokens) if token in eos_ids), None)
        kept = tokens if end is None else tokens[:end]
        kept = [token for token in kept if token != self.tokenizer.pad_token_id]
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        finish_reason = "length" if end is None else "stop"
        cut = min((text.find(s) for s in stop or () if s in text), default=-1)
        if cut >= 0:
            text, finish_reason = text[:cut], "stop"
        completion_tokens = len(kept) + (end is not None)
        return Completion(text, finish_reason, int(prompt_tokens), completion_tokens)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None


BACKENDS = {"tgi": TGIBackend, "openai": OpenAIBackend, "local": LocalBackend}


def make_backend(spec: TeacherSpec, request_timeout_s: float):
    """The backend object for `spec`; call `await backend.start()` before `generate`."""
    return BACKENDS[spec.backend](spec, request_timeout_s)
