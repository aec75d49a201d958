"""The teacher pool: keeps many teachers busy at once without losing a request.

- bounded concurrency: `max_concurrency` of each teacher (its spec) and of the whole pool (`PoolConfig`);
- a time-out on every remote request;
- retries with exponential backoff and full jitter on HTTP 408 / 424 / 429 / 500 / 502 / 503 / 504, time-outs
  and dropped connections, at most `max_retries` per request (a `Retry-After` header is honoured);
- any other error (a 4xx validation error, say) is not retried but recorded as a `Failure`;
- a teacher failing `max_consecutive_failures` requests in a row is taken out: the prompts it has not
  done are reported as failures too, never left as silent empty rows;
- a progress bar per teacher.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypeVar

from persyn_hf.configs import check_non_negative, check_positive
from persyn_hf.teachers.backends import Completion, TeacherHTTPError, make_backend
from persyn_hf.teachers.spec import TeacherSpec

T = TypeVar("T")
RETRY_STATUSES = (408, 424, 429, 500, 502, 503, 504)


@cache
def retryable_errors() -> tuple[type[BaseException], ...]:
    """Time-outs and dropped or refused connections, from either HTTP client."""
    import aiohttp
    import httpx2

    return (
        TimeoutError,
        asyncio.TimeoutError,
        aiohttp.ClientConnectionError,
        aiohttp.ClientPayloadError,
        httpx2.TransportError,
        httpx2.TimeoutException,
    )


def run_coroutine(coroutine: Coroutine):
    """Run `coroutine` to completion and return its result, from plain code or from inside a running event loop
    (a Jupyter notebook): there, it runs on a loop of its own in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    result = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coroutine)
        except BaseException as error:  # handed to the caller's thread
            result["error"] = error

    thread = threading.Thread(target=target, name="persyn-hf-event-loop")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


@dataclass
class PoolConfig:
    """How the pool talks to teachers.

    Parameters:
        max_concurrency (`int`, *optional*, defaults to `256`):
            Most requests in flight over all teachers (each teacher also has its own `max_concurrency`).
        request_timeout_s (`float`, *optional*, defaults to `600.0`):
            Time-out of one request to a remote teacher, in seconds.
        max_retries (`int`, *optional*, defaults to `8`):
            Retries of one request after a retryable error, before it is recorded as a failure.
        backoff_base_s (`float`, *optional*, defaults to `1.0`):
            Backoff before retry k is drawn uniformly from [0, min(`backoff_max_s`, `backoff_base_s` * 2^(k-1))].
        backoff_max_s (`float`, *optional*, defaults to `60.0`):
            Longest backoff between two attempts.
        max_consecutive_failures (`int`, *optional*, defaults to `20`):
            Failed requests in a row after which a teacher is taken out of the run.
        disable_tqdm (`bool`, *optional*, defaults to `False`):
            Hide the progress bars.
    """

    max_concurrency: int = field(default=256, metadata={"help": "Most requests in flight over all teachers."})
    request_timeout_s: float = field(default=600.0, metadata={"help": "Time-out of one remote request (s)."})
    max_retries: int = field(default=8, metadata={"help": "Retries of a request after a retryable error."})
    backoff_base_s: float = field(default=1.0, metadata={"help": "Base of the exponential backoff (s)."})
    backoff_max_s: float = field(default=60.0, metadata={"help": "Longest backoff between two attempts (s)."})
    max_consecutive_failures: int = field(
        default=20, metadata={"help": "Failed requests in a row after which a teacher is taken out of the run."}
    )
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide the progress bars."})

    def __post_init__(self):
        check_positive(self, "max_concurrency", "max_consecutive_failures")
        check_non_negative(self, "request_timeout_s", "backoff_base_s", "backoff_max_s", "max_retries")


@dataclass
class Failure:
    """A prompt a teacher left undone, and why."""

    teacher: str
    prompt_id: Any
    error: str
    status: int | None = None
    attempts: int = 0


class RequestFailed(Exception):
    """A request that failed for good: not retryable, or out of retries."""

    def __init__(self, message: str, status: int | None, attempts: int):
        super().__init__(message)
        self.status = status
        self.attempts = attempts


def _http_status(error: BaseException) -> tuple[int | None, float | None]:
    """(status, Retry-After seconds) of the first HTTP error in `error`'s chain of causes."""
    seen = error
    while seen is not None:
        if isinstance(seen, TeacherHTTPError):
            return seen.status, seen.retry_after
        response = getattr(seen, "response", None)  # huggingface_hub's HTTP errors
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            retry_after = response.headers.get("Retry-After", "")
            return status, float(retry_after) if retry_after.isdigit() else None
        seen = seen.__cause__ or seen.__context__
    return None, None


def classify(error: BaseException) -> tuple[bool, int | None]:
    """(retryable, HTTP status) of a failed attempt: retry overload, time-outs and dropped connections."""
    status, _ = _http_status(error)
    if status is not None:
        return status in RETRY_STATUSES, status
    return isinstance(error, retryable_errors()), None


def _describe(error: BaseException) -> str:
    """The error on one line (servers often put the useful part on the next ones)."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return f"{type(error).__name__}: {text[:500]}"


@dataclass
class _TeacherState:
    consecutive_failures: int = 0
    down: str | None = None  # why the teacher was taken out


class TeacherPool:
    """Backends for a list of teachers, behind concurrency limits and retries.

    Use as an async context manager (it starts and closes the backends), then `await pool.run(...)`.
    """

    def __init__(self, teachers: Sequence[TeacherSpec], config: PoolConfig, seed: int = 0):
        self.teachers = {spec.name: spec for spec in teachers}
        self.config = config
        self.backends = {}
        self._random = random.Random(seed)
        self._slots: asyncio.Semaphore | None = None

    async def __aenter__(self) -> TeacherPool:
        self._slots = asyncio.Semaphore(self.config.max_concurrency)
        self.backends = {
            name: make_backend(spec, self.config.request_timeout_s) for name, spec in self.teachers.items()
        }
        try:
            await asyncio.gather(*(backend.start() for backend in self.backends.values()))
        except BaseException:  # close the backends that did start
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await asyncio.gather(*(backend.close() for backend in self.backends.values()))

    def _backoff(self, attempt: int, error: BaseException) -> float:
        ceiling = min(self.config.backoff_max_s, self.config.backoff_base_s * 2 ** (attempt - 1))
        retry_after = _http_status(error)[1] or 0.0
        return min(self.config.backoff_max_s, max(self._random.uniform(0, ceiling), retry_after))

    async def request(self, teacher: str, messages: list[dict], seed: int | None = None) -> Completion:
        """One completion from `teacher`, retried on retryable errors; raises `RequestFailed` otherwise."""
        completion, attempts = await self.call(teacher, lambda backend: backend.generate(messages, seed))
        completion.attempts = attempts
        return completion

    async def call(self, teacher: str, method: Callable[[Any], Awaitable[T]]) -> tuple[T, int]:
        """`(await method(backend), attempts)` for `teacher`'s backend, under the pool's concurrency limit and
        time-out, retried on retryable errors; raises `RequestFailed` otherwise."""
        spec, backend = self.teachers[teacher], self.backends[teacher]
        timeout = None if spec.backend == "local" else self.config.request_timeout_s
        attempt = 0
        while True:
            attempt += 1
            async with self._slots:
                try:
                    return await asyncio.wait_for(method(backend), timeout), attempt
                except Exception as error:  # classified below: retried, or recorded
                    retryable, status = classify(error)
                    if not retryable or attempt > self.config.max_retries:
                        verdict = "not retryable" if not retryable else f"gave up after {attempt} attempts"
                        raise RequestFailed(f"{_describe(error)} ({verdict})", status, attempt) from error
                    delay = self._backoff(attempt, error)
            await asyncio.sleep(delay)

    async def run(
        self, jobs: dict[str, Sequence[Any]], handle: Callable[[TeacherSpec, Any], Awaitable[None]]
    ) -> list[Failure]:
        """Run `handle(spec, job)` for every job of every teacher (each job has a `prompt_id`).

        `handle` raises `RequestFailed` for a job it could not finish. Returns every job left undone.
        """
        from tqdm import tqdm

        failures: list[Failure] = []
        bars = {
            name: tqdm(total=len(jobs.get(name, ())), desc=name, position=i, disable=self.config.disable_tqdm)
            for i, name in enumerate(self.teachers)
        }

        async def work(spec: TeacherSpec, queue: list, state: _TeacherState) -> None:
            while queue:
                job = queue.pop()
                if state.down is not None:
                    failures.append(Failure(spec.name, job.prompt_id, f"not attempted: {state.down}"))
                    continue
                try:
                    await handle(spec, job)
                except RequestFailed as error:
                    failures.append(Failure(spec.name, job.prompt_id, str(error), error.status, error.attempts))
                    state.consecutive_failures += 1
                    if state.consecutive_failures >= self.config.max_consecutive_failures and state.down is None:
                        state.down = f"teacher taken out after {state.consecutive_failures} failures in a row"
                        bars[spec.name].set_postfix_str("taken out")
                    continue
                state.consecutive_failures = 0
                bars[spec.name].update(1)

        tasks = []
        for name, spec in self.teachers.items():
            queue = list(reversed(jobs.get(name, ())))  # popped from the end: jobs run in order
            state = _TeacherState()
            workers = min(spec.max_concurrency, len(queue))
            tasks += [asyncio.create_task(work(spec, queue, state)) for _ in range(workers)]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        finally:
            for bar in bars.values():
                bar.close()
        return failures
