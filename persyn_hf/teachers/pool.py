"""The teacher pool: keeps many teachers busy at once, rides out their restarts, and says what is wrong.

- before any prompt is sent, every teacher's endpoint is probed once (`probe()` of its backend): no connection,
  the wrong protocol, a refused key or a model the server does not serve is one `ConfigError` naming each teacher;
- bounded concurrency: `max_concurrency` of each teacher (its spec) and of the whole pool (`PoolConfig`);
- a time-out on every remote request (`request_timeout_s`, enforced by the backend's HTTP client);
- retries with exponential backoff and full jitter on HTTP 408 / 424 / 429 / 500 / 502 / 503 / 504, time-outs and
  dropped connections, at most `max_retries` per request (a `Retry-After` header is honoured); any other error (a
  4xx validation error, say) is not retried but recorded as a `Failure`;
- a circuit breaker per teacher (`CircuitBreaker`): attempts that find the teacher not answering pause it, a probe
  brings it back, and only a teacher down longer than `teacher_down_timeout_s` is given up, at once;
- a progress bar per teacher.

All of it lives in `TeacherPool.call(teacher, method)`, which runs any backend coroutine under these rules;
`TeacherPool.request` is `call` with the backend's `generate`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypeVar

from persyn_hf.configs import check_non_negative, check_positive
from persyn_hf.errors import ConfigError
from persyn_hf.teachers.backends import Completion, EndpointError, TeacherHTTPError, describe, make_backend
from persyn_hf.teachers.spec import TeacherSpec

logger = logging.getLogger(__name__)

RETRY_STATUSES = (408, 424, 429, 500, 502, 503, 504)
# Answers that mean the model is not being served (a proxy before a restarting server), not that a request is bad.
DOWN_STATUSES = (502, 503, 504)
TEACHER_DOWN = "teacher down"  # the cause of every failure of a teacher that was given up

T = TypeVar("T")


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

    A request is retried at most `max_retries` times against a teacher that answers. While its teacher is paused it
    waits instead, spending no retries (but the one trial request let through when a probe answers spends an
    attempt). A teacher that still does not answer its probes `teacher_down_timeout_s` after its outage began is
    given up (within one `probe_interval_s`) and every prompt it has left fails at once, with the error that started
    the outage. With fewer requests in flight than `max_consecutive_failures`, one request may spend that many
    attempts before its teacher is paused: keep `max_retries` at least `max_consecutive_failures` - 1 to ride out a
    restart at any concurrency.

    Parameters:
        max_concurrency (`int`, *optional*, defaults to `256`):
            Most requests in flight over all teachers (each teacher also has its own `max_concurrency`).
        request_timeout_s (`float`, *optional*, defaults to `600.0`):
            Time-out of one request to a remote teacher, in seconds (positive).
        max_retries (`int`, *optional*, defaults to `8`):
            Retries of one request after a retryable error, before it is recorded as a failure.
        backoff_base_s (`float`, *optional*, defaults to `1.0`):
            Backoff before retry k is drawn uniformly from [0, min(`backoff_max_s`, `backoff_base_s` * 2^(k-1))].
        backoff_max_s (`float`, *optional*, defaults to `60.0`):
            Longest backoff between two attempts.
        max_consecutive_failures (`int`, *optional*, defaults to `5`):
            Attempts in a row that find a teacher not answering (no connection, a time-out, HTTP 502 / 503 / 504)
            after which it is paused and probed (its circuit opens). Five: a dead server fails every request in
            flight within milliseconds, while five independent failures in a row are rare on a live one.
        teacher_down_timeout_s (`float`, *optional*, defaults to `300.0`):
            A teacher still not answering its probes this long after its outage began is given up. Five minutes
            rides out a restart with margin (vLLM took 76-112 s to come back); a dead teacher costs that long while
            the other teachers keep working.
        probe_interval_s (`float`, *optional*, defaults to `10.0`):
            Seconds between two probes of a paused teacher: work resumes within this long of its return.
        probe_timeout_s (`float`, *optional*, defaults to `10.0`):
            Time-out of one probe (`GET /v1/models` or `/info`), at start and while a teacher is paused.
        disable_tqdm (`bool`, *optional*, defaults to `False`):
            Hide the progress bars.
    """

    max_concurrency: int = field(default=256, metadata={"help": "Most requests in flight over all teachers."})
    request_timeout_s: float = field(default=600.0, metadata={"help": "Time-out of one remote request (s)."})
    max_retries: int = field(default=8, metadata={"help": "Retries of a request after a retryable error."})
    backoff_base_s: float = field(default=1.0, metadata={"help": "Base of the exponential backoff (s)."})
    backoff_max_s: float = field(default=60.0, metadata={"help": "Longest backoff between two attempts (s)."})
    max_consecutive_failures: int = field(
        default=5, metadata={"help": "Attempts in a row finding a teacher not answering, after which it is paused."}
    )
    teacher_down_timeout_s: float = field(
        default=300.0, metadata={"help": "A teacher not answering for this long is given up (s)."}
    )
    probe_interval_s: float = field(default=10.0, metadata={"help": "Seconds between probes of a paused teacher."})
    probe_timeout_s: float = field(default=10.0, metadata={"help": "Time-out of one endpoint probe (s)."})
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide the progress bars."})

    def __post_init__(self):
        check_positive(self, "max_concurrency", "max_consecutive_failures")
        check_non_negative(self, "backoff_base_s", "backoff_max_s", "max_retries", "teacher_down_timeout_s")
        for name in ("request_timeout_s", "probe_interval_s", "probe_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"`{name}` must be positive, got {getattr(self, name)!r}")


@dataclass
class Failure:
    """A prompt a teacher left undone, and why; `cause` names the kind of error (`HTTP 422`, `TimeoutError`,
    `teacher down`), so that failures can be grouped."""

    teacher: str
    prompt_id: Any
    error: str
    status: int | None = None
    attempts: int = 0
    cause: str = ""


class RequestFailed(Exception):
    """A request that failed for good: not retryable, or out of retries."""

    def __init__(self, message: str, status: int | None, attempts: int, cause: str):
        super().__init__(message)
        self.status = status
        self.attempts = attempts
        self.cause = cause


class TeacherDown(RequestFailed):
    """A request of a teacher that was given up: down longer than `teacher_down_timeout_s`."""

    def __init__(self, message: str, attempts: int):
        super().__init__(message, None, attempts, TEACHER_DOWN)


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


def classify(error: BaseException) -> tuple[bool, bool, int | None]:
    """(retryable, teacher down, HTTP status) of a failed attempt. Overload, time-outs and dropped connections are
    retried; time-outs, no connection and HTTP 502 / 503 / 504 also say that the teacher is not answering."""
    status, _ = _http_status(error)
    if status is not None:
        return status in RETRY_STATUSES, status in DOWN_STATUSES, status
    unreachable = isinstance(error, retryable_errors())
    return unreachable, unreachable, None


CLOSED, OPEN, HALF_OPEN, GIVEN_UP = "closed", "open", "half-open", "given up"


class CircuitBreaker:
    """One teacher's health, shared by all its requests.

    - closed: requests flow;
    - open: `max_consecutive_failures` attempts in a row found the teacher not answering; requests wait, and the
      teacher is probed every `probe_interval_s`;
    - half-open: a probe answered; one trial request goes through (when it ends, cancelled too, another may), and
      the probes go on. The trial's success closes the circuit; a failure that finds the teacher down, or a probe
      that does not answer, opens it again;
    - given up: still open (its last probe unanswered) `teacher_down_timeout_s` after the first failure of the
      streak, at that deadline (no probe runs past it) or within one `probe_interval_s` of it; or a trial finding
      the teacher down after it. A teacher whose last probe answered is given up only by its trial. Every waiting
      request fails with `TeacherDown`, and so does every later one.

    Args:
        name: The teacher's name, for messages.
        probe: Checks the teacher's endpoint once within the time-out it is given (`backend.probe`); raises when
            the endpoint does not answer as it should.
        config: The thresholds (`max_consecutive_failures`, `teacher_down_timeout_s`, `probe_*`).
    """

    def __init__(self, name: str, probe: Callable[[float], Awaitable[None]], config: PoolConfig):
        self.name = name
        self.config = config
        self.state = CLOSED
        self.failures_in_row = 0
        self.first_error: str | None = None  # the error that started the current streak of failures
        self.last_probe = "none yet"
        self.given_up: str | None = None  # why the teacher was given up
        self._probe = probe
        self._streak_start = 0.0
        self._trial = False
        self._changed = asyncio.Event()
        self._watcher: asyncio.Task | None = None

    async def admit(self, attempts: int) -> bool:
        """Wait until a request may be sent; returns whether it is the half-open trial. Raises `TeacherDown` (with
        the caller's `attempts` so far) once the teacher is given up."""
        while True:
            if self.state == CLOSED:
                return False
            if self.state == GIVEN_UP:
                raise TeacherDown(self.given_up, attempts)
            if self.state == HALF_OPEN and not self._trial:
                self._trial = True
                return True
            await self._changed.wait()

    def record(self, down_error: str | None, trial: bool) -> None:
        """The outcome of an attempt: `down_error` when it found the teacher not answering, `None` when the teacher
        answered (with a result or with an error of the request's own)."""
        if self.state == GIVEN_UP:
            return
        if down_error is None:
            if self.state != CLOSED:
                logger.warning("%s answers again after %.3g s; its requests resume.", self.name, self._down_for())
                self._watcher.cancel()
                self._set(CLOSED)
            self.failures_in_row = 0
            return
        if self.failures_in_row == 0:
            self._streak_start, self.first_error = self._now(), down_error
        self.failures_in_row += 1
        if self.state == CLOSED and self.failures_in_row >= self.config.max_consecutive_failures:
            logger.warning(
                "%s is not answering (%s): its requests wait; probing every %g s, giving up after %g s.",
                self.name, self.first_error, self.config.probe_interval_s, self.config.teacher_down_timeout_s,
            )  # fmt: skip
            self._set(OPEN)
            self._watcher = asyncio.create_task(self._watch())
        elif trial and self.state == HALF_OPEN:
            self._set(OPEN)
            if self._down_for() >= self.config.teacher_down_timeout_s:
                self._give_up()

    def end_trial(self) -> None:
        """The trial request is over, whatever became of it (cancelled too): another request may be the trial."""
        self._trial = False
        if self.state == HALF_OPEN:
            self._set(HALF_OPEN)  # wakes a waiting request

    async def _watch(self) -> None:
        """While not closed: probe every `probe_interval_s`, each probe bounded by the time left; give up once open
        at the deadline."""
        config = self.config
        while self.state != GIVEN_UP:  # a trial that found the teacher down after the deadline gave it up
            left = config.teacher_down_timeout_s - self._down_for()
            if self.state == OPEN and left <= 0:
                self._give_up()
                return
            if self.state == OPEN and left < config.probe_interval_s:
                await asyncio.sleep(left)  # the deadline comes before the next probe
                continue
            await asyncio.sleep(config.probe_interval_s)
            left = config.teacher_down_timeout_s - self._down_for()
            if left > 0 or self.state == HALF_OPEN:
                await self._probe_once(min(config.probe_timeout_s, left) if left > 0 else config.probe_timeout_s)

    async def _probe_once(self, timeout_s: float) -> None:
        """Probe within `timeout_s`: an answer makes an open circuit half-open, no answer a half-open one open."""
        answered = False
        try:
            await self._probe(timeout_s)
        except EndpointError as error:
            self.last_probe = error.answer
        except Exception as error:  # any failure to answer keeps the teacher paused
            self.last_probe = describe(error)
        else:
            self.last_probe, answered = "answered", True
        state = HALF_OPEN if answered else OPEN
        if self.state in (OPEN, HALF_OPEN) and self.state != state:
            self._set(state)

    def _give_up(self) -> None:
        self.given_up = (
            f"teacher given up: not answering for {self._down_for():.3g} s (teacher_down_timeout_s="
            f"{self.config.teacher_down_timeout_s:g}); first error: {self.first_error}; last probe: {self.last_probe}"
        )
        logger.error("%s: %s", self.name, self.given_up)
        self._set(GIVEN_UP)

    def _set(self, state: str) -> None:
        self.state = state
        self._changed.set()
        self._changed = asyncio.Event()

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _down_for(self) -> float:
        return self._now() - self._streak_start

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()


class TeacherPool:
    """Backends for a list of teachers, behind concurrency limits, retries and a circuit breaker per teacher.

    Use as an async context manager (it starts the backends, probes their endpoints, and closes them), then
    `await pool.run(...)`, or `await pool.call(...)` / `await pool.request(...)` for single calls.
    """

    def __init__(self, teachers: Sequence[TeacherSpec], config: PoolConfig, seed: int = 0):
        self.teachers = {spec.name: spec for spec in teachers}
        self.config = config
        self.backends = {}
        self.breakers: dict[str, CircuitBreaker] = {}
        self._random = random.Random(seed)
        self._slots: asyncio.Semaphore | None = None
        self._teacher_slots: dict[str, asyncio.Semaphore] = {}

    async def __aenter__(self) -> TeacherPool:
        self._slots = asyncio.Semaphore(self.config.max_concurrency)
        self._teacher_slots = {name: asyncio.Semaphore(spec.max_concurrency) for name, spec in self.teachers.items()}
        self.backends = {
            name: make_backend(spec, self.config.request_timeout_s) for name, spec in self.teachers.items()
        }
        try:
            await self.check_endpoints()  # first: an unusable teacher fails before any tokenizer or model loads
            await asyncio.gather(*(backend.start() for backend in self.backends.values()))
        except BaseException:  # close the backends (those that started hold sessions)
            await self.__aexit__()
            raise
        self.breakers = {
            name: CircuitBreaker(name, backend.probe, self.config) for name, backend in self.backends.items()
        }
        return self

    async def __aexit__(self, *exc) -> None:
        for breaker in self.breakers.values():
            breaker.close()
        await asyncio.gather(*(backend.close() for backend in self.backends.values()))

    async def check_endpoints(self) -> None:
        """Probe every teacher's endpoint once, all at once; a `ConfigError` names each one that cannot serve."""

        async def problem(name: str) -> str | None:
            spec = self.teachers[name]
            try:
                await self.backends[name].probe(self.config.probe_timeout_s)
            except EndpointError as error:
                return f"Teacher {name!r} ({spec.backend} at {spec.base_url}) cannot be used: {error}"
            return None

        problems = [p for p in await asyncio.gather(*(problem(name) for name in self.backends)) if p is not None]
        if len(problems) == 1:
            raise ConfigError(problems[0])
        if problems:
            listed = " ".join(f"({number}) {problem};" for number, problem in enumerate(problems, start=1))
            raise ConfigError(f"{len(problems)} teachers cannot be used: {listed[:-1]}")

    def _backoff(self, attempt: int, error: BaseException) -> float:
        ceiling = min(self.config.backoff_max_s, self.config.backoff_base_s * 2 ** (attempt - 1))
        retry_after = _http_status(error)[1] or 0.0
        return min(self.config.backoff_max_s, max(self._random.uniform(0, ceiling), retry_after))

    async def call(self, teacher: str, method: Callable[[Any], Awaitable[T]]) -> tuple[T, int]:
        """`await method(backend)` on `teacher`'s backend under the pool's rules: concurrency limits, retries with
        backoff, and the teacher's circuit breaker (the time-out is the backend's, `request_timeout_s`).

        Returns (result, attempts). Raises `RequestFailed` when the call failed for good, and `TeacherDown` (a
        `RequestFailed`) when the teacher was given up.
        """
        backend, breaker, slots = self.backends[teacher], self.breakers[teacher], self._teacher_slots[teacher]
        attempt = 0
        while True:
            trial = False if breaker.state == CLOSED else await breaker.admit(attempt)  # closed: no wait, no coroutine
            attempt += 1
            try:
                async with self._slots, slots:
                    try:
                        result = await method(backend)
                    except Exception as error:  # classified below: retried, or recorded
                        retryable, down, status = classify(error)
                        breaker.record(describe(error) if down else None, trial)
                        if not retryable or attempt > self.config.max_retries:
                            verdict = "not retryable" if not retryable else f"gave up after {attempt} attempts"
                            cause = f"HTTP {status}" if status is not None else type(error).__name__
                            raise RequestFailed(f"{describe(error)} ({verdict})", status, attempt, cause) from error
                        delay = self._backoff(attempt, error)
                    else:
                        breaker.record(None, trial)
                        return result, attempt
            finally:
                if trial:
                    breaker.end_trial()
            await asyncio.sleep(delay)

    async def request(self, teacher: str, messages: list[dict], seed: int | None = None) -> Completion:
        """One completion from `teacher` (`call` with the backend's `generate`)."""
        completion, attempts = await self.call(teacher, lambda backend: backend.generate(messages, seed))
        completion.attempts = attempts
        return completion

    async def run(
        self, jobs: dict[str, Sequence[Any]], handle: Callable[[TeacherSpec, Any], Awaitable[None]]
    ) -> list[Failure]:
        """Run `handle(spec, job)` for every job of every teacher (each job has a `prompt_id`).

        `handle` raises `RequestFailed` for a job it could not finish. Returns every job left undone; once a teacher
        is given up, its remaining jobs are returned at once, without an attempt.
        """
        from tqdm import tqdm

        failures: list[Failure] = []
        bars = {
            name: tqdm(total=len(jobs.get(name, ())), desc=name, position=i, disable=self.config.disable_tqdm)
            for i, name in enumerate(self.teachers)
        }

        async def work(spec: TeacherSpec, queue: list) -> None:
            breaker = self.breakers[spec.name]
            while queue:
                job = queue.pop()
                if breaker.given_up is not None:
                    failures.append(Failure(spec.name, job.prompt_id, breaker.given_up, cause=TEACHER_DOWN))
                    continue
                try:
                    await handle(spec, job)
                except RequestFailed as error:
                    failures.append(
                        Failure(spec.name, job.prompt_id, str(error), error.status, error.attempts, error.cause)
                    )
                    if breaker.given_up is not None:
                        bars[spec.name].set_postfix_str("given up")
                    continue
                bars[spec.name].update(1)

        tasks = []
        for name, spec in self.teachers.items():
            queue = list(reversed(jobs.get(name, ())))  # popped from the end: jobs run in order
            workers = min(spec.max_concurrency, len(queue))
            tasks += [asyncio.create_task(work(spec, queue)) for _ in range(workers)]
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
