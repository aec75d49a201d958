"""A small server on 127.0.0.1 that speaks text-generation-inference's protocol and the OpenAI one, for tests and
benchmarks.

Routes: TGI's `POST /generate` (and `POST /`), `GET /info`; OpenAI's `POST /v1/chat/completions`, `GET /v1/models`,
and with a model `POST /v1/completions` for prompt log-probabilities as vLLM returns them (token ids as `prompt`,
`prompt_logprobs`, `max_tokens: 1`); `GET /health`. `protocols` picks the families served: `("openai",)` behaves like vLLM (no TGI routes, FastAPI's
`{"detail": "Not Found"}` for unknown ones). It answers with a local `transformers` model (`model_path`), or without
one with `respond(prompt)` after a fixed service latency. Without `served_model_names` it answers to any `model`, as
TGI does; with them, like vLLM's `--served-model-name`, `GET /v1/models` lists them and a chat request naming
another model gets a 404. With `api_key`, every route but `/health` wants `Authorization: Bearer <api_key>`.

Tests inject faults: HTTP 429 / 424 / 503 / 422, slow responses, dropped connections, and restarts (the server
closes its port and every connection for `down_s` seconds, so connections are refused, then serves again).

Usage, as a process (prints the URL, serves until killed):

```bash
python -m persyn_hf.testing.server --latency_ms 50
python -m persyn_hf.testing.server --model_path path/to/tiny-model --port 8080
python -m persyn_hf.testing.server --protocol openai --served_model_name org/teacher --api_key secret \
    --fault_rate 503=0.05 --fault_rate drop=0.01 --restart_after_requests 500 --restart_down_s 90
```

In Python:

```python
with TeacherServer(model_path=path) as server:
    server.faults.script.extend(["429", "drop"])  # the next two generation requests fail this way
    server.schedule_restart(down_s=120, after_requests=50)  # down for two minutes from the 50th request on
    ...  # a teacher with `base_url: server.url`
```
"""

from __future__ import annotations

import argparse
import asyncio
import random
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Sequence

from aiohttp import web

FAULTS = ("429", "424", "503", "422", "drop", "slow")
PROTOCOLS = ("tgi", "openai")
# Body of each HTTP fault, as TGI sends it.
FAULT_BODIES = {
    "429": {"error": "Model is overloaded", "error_type": "overloaded"},
    "424": {"error": "Request failed during generation: injected", "error_type": "generation"},
    "503": {"error": "Service unavailable: injected", "error_type": "unavailable"},
    "422": {"error": "Input validation error: injected", "error_type": "validation"},
}


class Faults:
    """The faults a test injects into generation requests: first `script` in order, then random `rates`.

    Parameters:
        rates: Probability of each fault per request, e.g. `{"429": 0.1, "drop": 0.05}`; kinds are in `FAULTS`.
        slow_s: How long a `"slow"` response waits before answering normally.
        seed: Seed of the random draws.
    """

    def __init__(self, rates: dict[str, float] | None = None, slow_s: float = 1.0, seed: int = 0):
        self.script: deque[str] = deque()
        self.slow_s = slow_s
        self.set_rates(rates or {})
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def set_rates(self, rates: dict[str, float]) -> None:
        unknown = [kind for kind in rates if kind not in FAULTS]
        if unknown or sum(rates.values()) > 1:
            raise ValueError(f"Fault rates must use kinds {list(FAULTS)} and sum to at most 1, got {rates}")
        self.rates = dict(rates)

    def draw(self) -> str | None:
        """The fault for the next request, if any."""
        with self._lock:
            if self.script:
                return self.script.popleft()
            roll = self._random.random()
        for kind, rate in self.rates.items():
            if roll < rate:
                return kind
            roll -= rate
        return None


def _count_words(text: str) -> int:
    return len(text.split())


class TeacherServer:
    """A TGI- and OpenAI-protocol server on 127.0.0.1 in a background thread.

    Parameters:
        model_path: Folder of a `transformers` causal LM with a chat template; `None` answers with `respond`.
        respond: Without a model, the text answered to a prompt (the rendered `inputs`, or the chat messages).
        latency_s: Service time added to every generation request.
        max_new_tokens: Default `max_new_tokens` of a request that sets none.
        max_total_tokens: Largest `max_new_tokens` accepted; larger requests get a 422 validation error.
        model_id: What `/info` and `/v1/models` report.
        port: 0 picks a free port.
        served_model_names: The only `model` names chat requests may use, listed by `/v1/models` (vLLM's
            `--served-model-name`); `None`: any name, as TGI.
        api_key: The bearer token every route but `/health` wants; `None`: no check.
        protocols: The route families served, among `PROTOCOLS`.
    """

    def __init__(
        self,
        model_path: str | None = None,
        respond: Callable[[str | list[dict]], str] | None = None,
        latency_s: float = 0.0,
        max_new_tokens: int = 32,
        max_total_tokens: int = 512,
        model_id: str = "persyn-hf/test-teacher",
        port: int = 0,
        served_model_names: Sequence[str] | None = None,
        api_key: str | None = None,
        protocols: Sequence[str] = PROTOCOLS,
    ):
        unknown = [protocol for protocol in protocols if protocol not in PROTOCOLS]
        if unknown or not protocols:
            raise ValueError(f"`protocols` must be a non-empty subset of {list(PROTOCOLS)}, got {list(protocols)}")
        self.model_path = model_path
        self.respond = respond or (lambda prompt: "ok")
        self.latency_s = latency_s
        self.max_new_tokens = max_new_tokens
        self.max_total_tokens = max_total_tokens
        self.model_id = model_id
        self.port = port
        self.served_model_names = None if served_model_names is None else list(served_model_names)
        self.api_key = api_key
        self.protocols = tuple(protocols)
        self.faults = Faults()
        self.stats: Counter[str] = Counter()
        self.authorizations: Counter[str] = Counter()
        self.engine = None
        self._in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._restart: tuple[int, float] | None = None  # (generation requests that trigger it, seconds down)
        self._restarting: asyncio.Task | None = None  # held: the loop keeps only weak references to tasks
        self.up = threading.Event()  # set while the server accepts connections

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # Life cycle -----------------------------------------------------------------------------------

    def start(self) -> TeacherServer:
        if self.model_path is not None:
            from persyn_hf.teachers.backends import LocalBackend
            from persyn_hf.teachers.spec import TeacherSpec

            spec = TeacherSpec(
                name="server",
                model_id=self.model_id,
                family="local",
                size_b=1,
                model_path=self.model_path,
                backend_args={"batch_size": 1},  # one request per forward pass: no filler rows
            )
            self.engine = LocalBackend(spec)
            self.engine.config.device = "cpu"
            self.engine.load()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="teacher-server", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result()
        return self

    async def _serve(self) -> None:
        app = web.Application(client_max_size=64 * 1024**2, middlewares=[self._guard])
        if "tgi" in self.protocols:
            app.router.add_post("/", self._generate)
            app.router.add_post("/generate", self._generate)
            app.router.add_get("/info", self._info)
        if "openai" in self.protocols:
            app.router.add_post("/v1/chat/completions", self._chat)
            app.router.add_get("/v1/models", self._models)
            app.router.add_post("/v1/completions", self._completions)
        app.router.add_get("/health", self._health)
        # stopping cancels the requests in flight at once, as a killed server would (0 would mean: wait for them)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.001)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=1024)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self.up.set()

    async def _close(self) -> None:
        if self.up.is_set():
            self.up.clear()
            await self._runner.cleanup()

    def schedule_restart(self, down_s: float, after_requests: int = 0) -> None:
        """Go down for `down_s` seconds (port closed, connections cut, requests in flight lost), then serve again
        on the same port: once `after_requests` more generation requests have arrived, or now for 0."""
        if after_requests == 0:
            self._loop.call_soon_threadsafe(self._go_down, down_s)
        else:
            self._restart = (self.stats["requests"] + after_requests, down_s)

    def _go_down(self, down_s: float) -> None:
        async def restart() -> None:
            await self._close()
            await asyncio.sleep(down_s)
            await self._serve()

        self.stats["restarts"] += 1
        self._restarting = asyncio.create_task(restart())

    async def _shutdown(self) -> None:
        await self._close()
        rest = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]  # a restart, handlers
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        self._loop = None

    def __enter__(self) -> TeacherServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # Routes ---------------------------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler) -> web.StreamResponse:
        """Refuse a wrong bearer token (`api_key`); answer unknown routes as vLLM's FastAPI does (OpenAI only)."""
        authorized = request.headers.get("Authorization") == f"Bearer {self.api_key}"
        if self.api_key is not None and request.path != "/health" and not authorized:
            return web.json_response({"error": "Unauthorized"}, status=401)
        try:
            return await handler(request)
        except web.HTTPNotFound:
            if "tgi" in self.protocols:
                raise
            return web.json_response({"detail": "Not Found"}, status=404)

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response()

    async def _models(self, request: web.Request) -> web.Response:
        card = {"object": "model", "created": 0, "owned_by": "persyn-hf"}
        if self.served_model_names is None:  # TGI's answer: its one model, whatever name requests use
            return web.json_response({"id": self.model_id, **card})
        return web.json_response({"object": "list", "data": [{"id": n, **card} for n in self.served_model_names]})

    async def _info(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "model_id": self.model_id,
                "max_total_tokens": self.max_total_tokens,
                "max_concurrent_requests": 1024,
                "router": "persyn-hf test server",
            }
        )

    async def _fault(self, request: web.Request) -> web.Response | None:
        """Apply the next injected fault: an error response, a dropped connection, or a delay."""
        fault = self.faults.draw()
        if fault is None:
            return None
        self.stats[f"fault_{fault}"] += 1
        if fault == "slow":
            await asyncio.sleep(self.faults.slow_s)
            return None
        if fault == "drop":
            request.transport.abort()
            return web.Response()
        return web.json_response(FAULT_BODIES[fault], status=int(fault))

    async def _admit(self, request: web.Request, max_new_tokens: int | None) -> web.Response | None:
        """Count the request, inject a fault, validate it as TGI does; a response means: answer that."""
        self.stats["requests"] += 1
        self.authorizations[request.headers.get("Authorization", "")] += 1
        if self._restart is not None and self.stats["requests"] >= self._restart[0]:
            self._go_down(self._restart[1])  # this request is lost too, as in a crash
            self._restart = None
            request.transport.abort()
            return web.Response()
        response = await self._fault(request)
        if response is not None:
            return response
        if max_new_tokens is not None and max_new_tokens > self.max_total_tokens:
            error = f"`max_new_tokens` must be <= {self.max_total_tokens}. Given: {max_new_tokens}"
            return web.json_response({"error": error, "error_type": "validation"}, status=422)
        return None

    async def _complete(
        self, prompt: str | list[dict], generation: dict, seed: int | None
    ) -> tuple[str, str, int, int]:
        """(text, finish_reason, prompt_tokens, completion_tokens) after the service latency."""
        self._in_flight += 1
        self.stats["max_in_flight"] = max(self.stats["max_in_flight"], self._in_flight)
        try:
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            if self.engine is None:
                text = self.respond(prompt)
                rendered = prompt if isinstance(prompt, str) else " ".join(m["content"] for m in prompt)
                result = text, "stop", _count_words(rendered), _count_words(text) + 1
            else:
                if not isinstance(prompt, str):
                    prompt = self.engine.tokenizer.apply_chat_template(
                        prompt, add_generation_prompt=True, tokenize=False
                    )
                generation = {"max_new_tokens": self.max_new_tokens, **generation}
                [done] = await asyncio.to_thread(self.engine.generate_rendered, [prompt], generation, [seed])
                result = done.text, done.finish_reason, done.prompt_tokens, done.completion_tokens
        finally:
            self._in_flight -= 1
        self.stats["completions"] += 1
        return result

    async def _generate(self, request: web.Request) -> web.Response:
        body = await request.json()
        parameters = dict(body.get("parameters") or {})
        response = await self._admit(request, parameters.get("max_new_tokens"))
        if response is not None:
            return response
        if not isinstance(body.get("inputs"), str) or not body["inputs"]:
            return web.json_response({"error": "`inputs` cannot be empty", "error_type": "validation"}, status=422)
        details, seed = parameters.pop("details", False), parameters.pop("seed", None)
        generation = {key: value for key, value in parameters.items() if value is not None}
        generation.pop("return_full_text", None)
        text, finish_reason, _, completion_tokens = await self._complete(body["inputs"], generation, seed)
        output = {"generated_text": text}
        if details:
            tgi_reason = {"stop": "eos_token", "length": "length"}[finish_reason]
            output["details"] = {
                "finish_reason": tgi_reason,
                "generated_tokens": completion_tokens,
                "seed": seed,
                "prefill": [],
                "tokens": [],
            }
        return web.json_response(output)

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        response = await self._admit(request, body.get("max_tokens"))
        if response is not None:
            return response
        if not body.get("messages"):
            return web.json_response({"error": "`messages` cannot be empty", "error_type": "validation"}, status=422)
        if self.served_model_names is not None and body.get("model") not in self.served_model_names:
            error = {
                "message": f"The model `{body.get('model')}` does not exist.",
                "type": "NotFoundError",
                "code": 404,
            }
            return web.json_response({"error": error}, status=404)
        generation = {"max_new_tokens": body.get("max_tokens")}
        generation.update(
            {key: body.get(key) for key in ("temperature", "top_p", "top_k", "stop", "repetition_penalty")}
        )
        generation = {key: value for key, value in generation.items() if value is not None}
        text, finish_reason, prompt_tokens, completion_tokens = await self._complete(
            body["messages"], generation, body.get("seed")
        )
        return web.json_response(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", self.model_id),
                "system_fingerprint": "persyn-hf-test-server",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": finish_reason,
                        "logprobs": None,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )

    def _prompt_logprobs(self, token_ids: list[int]) -> tuple[list[dict | None], int]:
        """vLLM's `prompt_logprobs` of `token_ids` (the actual token's entry, and the top-ranked one beside it when
        they differ; ranks from 1) and the greedy next token, from one forward pass of the local model."""
        import torch

        model, tokenizer = self.engine.model, self.engine.tokenizer
        with self.engine._lock, torch.inference_mode():
            logits = model(torch.tensor([token_ids], device=model.device), use_cache=False).logits[0].float()
        logps = logits.log_softmax(-1).cpu()
        entries: list[dict | None] = [None]
        for t in range(1, len(token_ids)):
            row, token = logps[t - 1], token_ids[t]
            rank = int((row > row[token]).sum()) + 1
            entry = {
                str(token): {"logprob": row[token].item(), "rank": rank, "decoded_token": tokenizer.decode(token)}
            }
            top = int(row.argmax())
            if top != token:
                entry[str(top)] = {"logprob": row[top].item(), "rank": 1, "decoded_token": tokenizer.decode(top)}
            entries.append(entry)
        return entries, int(logps[-1].argmax())

    async def _completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        response = await self._admit(request, body.get("max_tokens"))
        if response is not None:
            return response
        prompt = body.get("prompt")
        if self.engine is None or not isinstance(prompt, list) or not prompt:
            error = "this server answers `/v1/completions` with a model (`model_path`) and token ids as `prompt`"
            return web.json_response({"error": {"message": error, "code": 400}}, status=400)
        context = self.engine.model.config.get_text_config().max_position_embeddings
        if len(prompt) + (body.get("max_tokens") or 1) > context:
            error = f"This model's maximum context length is {context} tokens; the request has {len(prompt)} + 1."
            return web.json_response({"error": {"message": error, "code": 400}}, status=400)
        self.stats["requests_completions"] += 1
        prompt_logprobs, next_token = await asyncio.to_thread(self._prompt_logprobs, prompt)
        return web.json_response(
            {
                "id": f"cmpl-{uuid.uuid4().hex}",
                "object": "text_completion",
                "created": int(time.time()),
                "model": body.get("model", self.model_id),
                "choices": [
                    {
                        "index": 0,
                        "text": self.engine.tokenizer.decode(next_token),
                        "logprobs": None,
                        "finish_reason": "length",
                        "prompt_logprobs": prompt_logprobs if body.get("prompt_logprobs") is not None else None,
                    }
                ],
                "usage": {"prompt_tokens": len(prompt), "completion_tokens": 1, "total_tokens": len(prompt) + 1},
            }
        )


def _fault_rate(text: str) -> tuple[str, float]:
    kind, _, rate = text.partition("=")
    return kind, float(rate)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="A TGI- and OpenAI-protocol server on 127.0.0.1 for tests and benchmarks."
    )
    parser.add_argument("--model_path", default=None, help="Folder of a causal LM; none answers 'ok'.")
    parser.add_argument("--latency_ms", type=float, default=0.0, help="Service time of each generation request.")
    parser.add_argument("--port", type=int, default=0, help="Port (0: a free one).")
    parser.add_argument("--model_id", default="persyn-hf/test-teacher", help="What /info and /v1/models report.")
    parser.add_argument(
        "--served_model_name",
        action="append",
        default=None,
        help="A model name chat requests may use (repeatable); none: any name, as TGI.",
    )
    parser.add_argument("--api_key", default=None, help="Bearer token every route but /health wants.")
    parser.add_argument(
        "--protocol",
        action="append",
        choices=PROTOCOLS,
        default=None,
        help="Route family to serve (repeatable); default: all.",
    )
    parser.add_argument(
        "--fault_rate",
        action="append",
        type=_fault_rate,
        default=[],
        metavar="KIND=P",
        help=f"Probability of a fault per generation request (repeatable); kinds: {', '.join(FAULTS)}.",
    )
    parser.add_argument("--fault_script", default="", help="Faults of the first requests, in order: e.g. 429,drop.")
    parser.add_argument("--slow_s", type=float, default=1.0, help="Delay of a `slow` fault.")
    parser.add_argument(
        "--restart_after_requests",
        type=int,
        default=None,
        help="Restart once this many generation requests have arrived.",
    )
    parser.add_argument("--restart_down_s", type=float, default=60.0, help="How long a restart keeps the port closed.")
    args = parser.parse_args(argv)
    server = TeacherServer(
        model_path=args.model_path,
        latency_s=args.latency_ms / 1000,
        port=args.port,
        model_id=args.model_id,
        served_model_names=args.served_model_name,
        api_key=args.api_key,
        protocols=args.protocol or PROTOCOLS,
    ).start()
    server.faults.set_rates(dict(args.fault_rate))
    server.faults.script.extend(kind for kind in args.fault_script.split(",") if kind)
    server.faults.slow_s = args.slow_s
    if args.restart_after_requests is not None:
        server.schedule_restart(args.restart_down_s, after_requests=args.restart_after_requests)
    print(server.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
