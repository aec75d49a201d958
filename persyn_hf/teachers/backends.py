"""Backends: one config and one client class per way of reaching a teacher, all returning a `Completion`.

- `tgi`: a text-generation-inference server, either its `/generate` route with the prompt rendered by the
  teacher's own chat template, or its Messages API;
- `openai`: any OpenAI-compatible `/v1/chat/completions` server (vLLM, SGLang, TGI's Messages API);
- `local`: in-process `transformers` generation, batched (the embedded default).

Every backend takes chat messages and returns the same record. Retries, time-outs and concurrency are the
pool's business (`persyn_hf.teachers.pool`); a backend makes exactly one attempt per call.

The remote backends speak HTTP through one keep-alive `aiohttp` session per teacher by default, or through
`huggingface_hub.AsyncInferenceClient` (`backend_args: {http_client: huggingface_hub}`). Both send the same
requests; the first costs about 0.3 ms of client CPU per request against 2.6 ms (`benchmarks/client_throughput.py`),
which is what lets one process keep hundreds of requests in flight.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import threading
from dataclasses import dataclass, field

from persyn_hf.teachers.spec import TeacherSpec

# Finish reasons are reported in the OpenAI vocabulary whatever the server says.
FINISH_REASONS = {"eos_token": "stop", "stop_sequence": "stop", "stop": "stop", "length": "length"}
NO_API_KEY = "EMPTY"  # the placeholder OpenAI-compatible servers accept when they need no key
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


@dataclass
class TGIConfig:
    """Options of the `tgi` backend (a teacher's `backend_args`).

    Parameters:
        route (`str`, *optional*, defaults to `"generate"`):
            `"generate"`: TGI's `/generate` with the prompt rendered by the teacher's chat template here;
            `"chat"`: TGI's Messages API (`/v1/chat/completions`), rendered by the server.
        tokenizer (`str`, *optional*):
            Tokenizer whose chat template renders prompts for `route="generate"`; defaults to the teacher's
            `model_path`, then its `model_id`.
        api_key_env (`str`, *optional*):
            Environment variable holding the bearer token to send. Unset: no token is sent.
        hf_token (`bool`, *optional*, defaults to `False`):
            Send the Hugging Face token (`HF_TOKEN` or `hf auth login`), e.g. for Inference Endpoints.
        http_client (`str`, *optional*, defaults to `"aiohttp"`):
            `"aiohttp"`: one keep-alive `aiohttp` session per teacher (about 9x less client CPU per request);
            `"huggingface_hub"`: `huggingface_hub.AsyncInferenceClient`.
    """

    route: str = "generate"
    tokenizer: str | None = None
    api_key_env: str | None = None
    hf_token: bool = False
    http_client: str = "aiohttp"


@dataclass
class OpenAIConfig:
    """Options of the `openai` backend (a teacher's `backend_args`).

    Parameters:
        api_key_env (`str`, *optional*):
            Environment variable holding the API key. Unset: the placeholder `"EMPTY"` is sent.
        model (`str`, *optional*):
            The `model` field of each request, when the server knows the model by another name than `model_id`.
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
HTTP_CLIENTS = ("aiohttp", "huggingface_hub")


def backend_config(spec: TeacherSpec):
    """The backend config of `spec`, built from its `backend_args`, every value checked."""
    config_class = BACKEND_CONFIGS[spec.backend]
    valid = [f.name for f in dataclasses.fields(config_class)]
    unknown = [key for key in spec.backend_args if key not in valid]
    if unknown:
        raise ValueError(
            f"Teacher {spec.name!r}: unknown `backend_args` {unknown} for {spec.backend!r}; valid: {valid}"
        )
    config = config_class(**spec.backend_args)
    if isinstance(config, TGIConfig) and config.route not in ("generate", "chat"):
        raise ValueError(
            f"Teacher {spec.name!r}: `backend_args.route` must be 'generate' or 'chat', got {config.route!r}"
        )
    if getattr(config, "http_client", "aiohttp") not in HTTP_CLIENTS:
        raise ValueError(
            f"Teacher {spec.name!r}: `backend_args.http_client` must be one of {list(HTTP_CLIENTS)}, "
            f"got {config.http_client!r}"
        )
    if isinstance(config, LocalConfig) and (not isinstance(config.batch_size, int) or config.batch_size < 1):
        raise ValueError(f"Teacher {spec.name!r}: `backend_args.batch_size` must be a positive integer")
    return config


def _api_key(spec: TeacherSpec, api_key_env: str | None, hf_token: bool = False) -> str:
    """The bearer token for a remote teacher; never the Hugging Face token unless asked for."""
    if hf_token:
        from huggingface_hub import get_token

        if get_token() is None:
            raise ValueError(
                f"Teacher {spec.name!r} has `hf_token: true` but no token: set HF_TOKEN or `hf auth login`"
            )
        return get_token()
    if api_key_env is None:
        return NO_API_KEY
    if not os.environ.get(api_key_env):
        raise ValueError(f"Teacher {spec.name!r}: environment variable {api_key_env!r} (`api_key_env`) is not set")
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
    """Map generation parameters onto chat-completion fields; extras go in the body (vLLM reads them)."""
    parameters = {"seed": seed}
    extra = {}
    for key, value in generation.items():
        if key == "max_new_tokens":
            parameters["max_tokens"] = value
        elif key in ("temperature", "top_p", "stop"):
            parameters[key] = value
        elif key == "do_sample":
            if not value:
                parameters["temperature"] = 0.0
        else:
            extra[key] = value
    return {**parameters, "extra_body": extra or None}


def completions_url(base_url: str) -> str:
    """The (text) completions URL of a server, from its base URL with or without `/v1`."""
    base = base_url.rstrip("/")
    return f"{base}/completions" if base.endswith("/v1") else f"{base}/v1/completions"


def chat_url(base_url: str) -> str:
    """The chat-completions URL of a server, from its base URL with or without `/v1` (as `huggingface_hub`)."""
    base = base_url.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    return f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"


class TeacherHTTPError(Exception):
    """An error answer from a teacher server."""

    def __init__(self, status: int, message: str, retry_after: float | None = None):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.retry_after = retry_after


def _error_message(body: bytes) -> str:
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return body[:300].decode(errors="replace")
    return str(error.get("message", error) if isinstance(error, dict) else error)


class AiohttpClient:
    """TGI's `/generate` and the chat-completions API over one keep-alive `aiohttp` session per teacher."""

    def __init__(self, base_url: str, api_key: str, timeout_s: float, max_connections: int):
        self.base_url = base_url.rstrip("/")
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
                raise TeacherHTTPError(response.status, _error_message(body), retry_after)
        return json.loads(body)

    async def generate(self, prompt: str, parameters: dict) -> dict:
        return await self._post(
            f"{self.base_url}/generate", {"inputs": prompt, "parameters": {**parameters, "details": True}}
        )

    async def chat(self, messages: list[dict], parameters: dict) -> dict:
        fields = {key: value for key, value in parameters.items() if key != "extra_body" and value is not None}
        return await self._post(
            chat_url(self.base_url), {"messages": messages, **fields, **(parameters["extra_body"] or {})}
        )

    async def completions(self, payload: dict) -> dict:
        return await self._post(completions_url(self.base_url), payload)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


class HubClient:
    """The same two calls through `huggingface_hub.AsyncInferenceClient`, answered in the same shape."""

    def __init__(self, base_url: str, api_key: str, timeout_s: float, max_connections: int):
        from huggingface_hub import AsyncInferenceClient

        self.client = AsyncInferenceClient(base_url=base_url.rstrip("/"), api_key=api_key, timeout=timeout_s)

    async def start(self) -> None:
        from huggingface_hub import constants

        if constants.is_offline_mode():  # the Hub client then refuses every request, to any host
            raise ValueError(
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


async def _chat(client, model: str, messages: list[dict], generation: dict, seed: int | None) -> Completion:
    output = await client.chat(messages, {"model": model, **chat_parameters(generation, seed)})
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
        self.config = backend_config(spec)
        self.client = _http_client(spec, self.config, request_timeout_s)
        self.tokenizer = None

    async def start(self) -> None:
        await self.client.start()
        if self.config.route == "generate":
            from transformers import AutoTokenizer

            source = self.config.tokenizer or self.spec.model_path or self.spec.model_id
            self.tokenizer = await asyncio.to_thread(AutoTokenizer.from_pretrained, source)

    async def generate(self, messages: list[dict], seed: int | None = None) -> Completion:
        if self.config.route == "chat":
            return await _chat(self.client, "tgi", messages, self.spec.generation, seed)
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
        self.config = backend_config(spec)
        self.client = _http_client(spec, self.config, request_timeout_s)

    async def start(self) -> None:
        await self.client.start()

    async def generate(self, messages: list[dict], seed: int | None = None) -> Completion:
        model = self.config.model or self.spec.model_id
        return await _chat(self.client, model, messages, self.spec.generation, seed)

    async def prompt_logprobs(self, token_ids: list[int]) -> list[dict | None]:
        """The server's log-probability of every token of `token_ids` given those before it (`/v1/completions`
        with `prompt_logprobs: 0`, vLLM's extension): `None` for the first, then `{token_id: {"logprob": ...}}`."""
        model = self.config.model or self.spec.model_id
        payload = {"model": model, "prompt": token_ids, "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0}
        output = await self.client.completions(payload)
        return output["choices"][0]["prompt_logprobs"]

    async def close(self) -> None:
        await self.client.close()


@dataclass
class _Pending:
    messages: list[dict]
    seed: int | None
    future: asyncio.Future = field(repr=False)


class LocalBackend:
    """A teacher run in-process with `transformers`, batching the requests that wait while a batch runs.

    The pool's per-request time-out does not apply: a running batch cannot be interrupted.
    """

    def __init__(self, spec: TeacherSpec, request_timeout_s: float | None = None):
        self.spec = spec
        self.config = backend_config(spec)
        self.model = self.tokenizer = None
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task | None = None
        self._lock = threading.Lock()

    async def start(self) -> None:
        await asyncio.to_thread(self.load)
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._serve())

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

    async def generate(self, messages: list[dict], seed: int | None = None) -> Completion:
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(messages, seed, future))
        return await future

    async def _serve(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.config.batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            batch = [pending for pending in batch if not pending.future.done()]  # drop cancelled callers
            if not batch:
                continue
            try:
                completions = await asyncio.to_thread(self.generate_batch, [p.messages for p in batch], batch[0].seed)
            except Exception as error:  # every caller of the batch sees the error
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(error)
                continue
            for pending, completion in zip(batch, completions):
                if not pending.future.done():
                    pending.future.set_result(completion)

    def generate_batch(self, conversations: list[list[dict]], seed: int | None = None) -> list[Completion]:
        """One response per conversation, rendered with the teacher's chat template, in one batch."""
        prompts = [
            self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            for messages in conversations
        ]
        return self.generate_rendered(prompts, self.spec.generation, seed)

    def generate_rendered(self, prompts: list[str], generation: dict, seed: int | None = None) -> list[Completion]:
        """One response per already rendered prompt in one `model.generate` call (thread-safe)."""
        import torch

        generation = dict(generation)
        stop = generation.pop("stop", None)
        if generation.get("temperature") == 0:
            generation.pop("temperature")
            generation["do_sample"] = False
        elif generation.get("temperature") and "do_sample" not in generation:
            generation["do_sample"] = True
        inputs = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        inputs = inputs.to(self.model.device)
        with self._lock, torch.inference_mode():
            if seed is not None:
                torch.manual_seed(seed)
            output = self.model.generate(
                **inputs,
                **generation,
                stop_strings=stop,
                tokenizer=self.tokenizer if stop else None,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        generated = output[:, inputs["input_ids"].shape[1] :].tolist()
        prompt_lengths = inputs["attention_mask"].sum(dim=1).tolist()
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
