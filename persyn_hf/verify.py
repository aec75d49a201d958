"""math-verify in worker processes: a check that overruns its time limit is killed, never left hanging.

`check_answer` and `verify_answer` are what the generate stage (rejection sampling), the score stage (quality of
math data) and the evaluation metric use to compare a response's final answer with a gold answer.
"""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
import threading

CORRECT, INCORRECT, TIMEOUT, UNPARSEABLE_GOLD = "correct", "incorrect", "timeout", "unparseable_gold"
WORKER_START_TIMEOUT_S = 120.0

# The program a math-verify worker runs: one JSON `[gold, response]` per stdin line, one JSON verdict per stdout
# line. math-verify's own (signal-based) time-outs are off: the parent enforces the time limit by killing it.
_WORKER_PROGRAM = f"""
import json, logging, sys
from math_verify import parse, verify
logging.getLogger("math_verify").setLevel(logging.ERROR)
out, sys.stdout = sys.stdout, sys.stderr
out.write('"ready"\\n'); out.flush()
for line in sys.stdin:
    gold, response = json.loads(line)
    try:
        gold_parsed = parse(gold, parsing_timeout=None)
        if not gold_parsed:
            verdict = {UNPARSEABLE_GOLD!r}
        elif verify(gold_parsed, parse(response, parsing_timeout=None), timeout_seconds=None):
            verdict = {CORRECT!r}
        else:
            verdict = {INCORRECT!r}
    except Exception:  # a crash inside math-verify is an answer that could not be checked
        verdict = {INCORRECT!r}
    out.write(json.dumps(verdict) + "\\n"); out.flush()
"""


class _MathVerifyWorkers:
    """Worker processes that run math-verify, one check at a time each.

    math-verify's own time-out relies on `SIGALRM`, which works only in the main thread and cannot interrupt a
    long computation inside C code (e.g. sympy evaluating `9^{9^{9^9}} + 1`). A process can always be killed, so
    each check runs in a worker process: a worker that overruns its time is killed (and replaced on the next
    check), idle workers are reused, and any number of threads may check at once, each borrowing its own worker.
    Workers are fresh interpreters (not forks), so they are safe to start from a threaded parent.
    """

    def __init__(self):
        self._idle: list[subprocess.Popen] = []
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen:
        worker = subprocess.Popen(
            [sys.executable, "-c", _WORKER_PROGRAM],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        if self._reply(worker, WORKER_START_TIMEOUT_S) == "ready":
            return worker
        if worker.returncode == -signal.SIGKILL:  # killed by `_reply`: no answer in time
            raise RuntimeError(f"A math-verify worker did not start within {WORKER_START_TIMEOUT_S} s.")
        raise RuntimeError(
            f"A math-verify worker exited at start with code {worker.returncode}: math-verify is likely not "
            f"importable by {sys.executable}; install it there (`pip install math-verify`)."
        )

    @staticmethod
    def _reply(worker: subprocess.Popen, timeout_s: float) -> str | None:
        """The worker's next answer, or `None` if it exits or none comes within `timeout_s` (then it is killed)."""
        ready, _, _ = select.select([worker.stdout], [], [], timeout_s)
        line = worker.stdout.readline() if ready else ""
        if line:
            return json.loads(line)
        if not ready:
            worker.kill()
        worker.wait()  # its output closed: it is exiting
        return None

    def check(self, gold: str, response: str, timeout_s: float) -> str:
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        worker = worker or self._start()
        worker.stdin.write(json.dumps([gold, response]) + "\n")
        worker.stdin.flush()
        verdict = self._reply(worker, timeout_s)
        if verdict is None:
            return TIMEOUT
        with self._lock:
            self._idle.append(worker)
        return verdict


_WORKERS: _MathVerifyWorkers | None = None
_WORKERS_LOCK = threading.Lock()


def check_answer(gold: str, response: str, timeout_s: float = 5.0) -> str:
    """math-verify's verdict on the final answer of `response` against `gold`, within `timeout_s` seconds.

    Returns one of `"correct"`, `"incorrect"`, `"timeout"` (the check ran out of time and was killed) or
    `"unparseable_gold"` (math-verify finds no answer in `gold`). Safe to call from any thread.
    """
    global _WORKERS
    with _WORKERS_LOCK:
        if _WORKERS is None:
            _WORKERS = _MathVerifyWorkers()
    return _WORKERS.check(str(gold), str(response), timeout_s)


def verify_answer(gold: str, response: str, timeout_s: float = 5.0) -> bool | None:
    """Whether the final answer of `response` matches `gold` according to math-verify.

    `None` when `gold` does not parse (there is nothing to compare with: never a free `True`); a check that takes
    longer than `timeout_s` seconds is killed and counts as not correct. Safe to call from worker threads.
    """
    verdict = check_answer(gold, response, timeout_s)
    return None if verdict == UNPARSEABLE_GOLD else verdict == CORRECT
