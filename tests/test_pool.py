"""The pool: retries, time-outs, validation errors, failing teachers, concurrency limits, and a run under faults."""

import asyncio
import json
import socket
from collections import Counter

import pytest
from datasets import Dataset

from persyn_hf.generate import SynthesisConfig, SynthesisError, synthesize
from persyn_hf.teachers import TeacherSpec
from persyn_hf.teachers.pool import PoolConfig, RequestFailed, TeacherPool
from persyn_hf.teachers.results import RESULTS_FILE
from persyn_hf.testing.server import TeacherServer

FAST = {"backoff_base_s": 0.005, "backoff_max_s": 0.05, "disable_tqdm": True}
MESSAGES = [{"role": "user", "content": "What is 1 + 1?"}]


def remote(name: str, url: str, backend: str = "openai", **overrides) -> TeacherSpec:
    return TeacherSpec(
        name=name, model_id=f"org/{name}", family="F", size_b=7, backend=backend, base_url=url, **overrides
    )


def request(spec: TeacherSpec, config: PoolConfig):
    async def run():
        async with TeacherPool([spec], config) as pool:
            return await pool.request(spec.name, MESSAGES)

    return asyncio.run(run())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def hub_client_online(monkeypatch):
    """The suite runs with HF_HUB_OFFLINE=1, under which `AsyncInferenceClient` refuses every request, even to
    127.0.0.1; the tests of that client lift it for themselves (they only talk to the local server)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def server():
    with TeacherServer(respond=lambda prompt: "2") as server:
        yield server


@pytest.mark.parametrize("http_client", ["aiohttp", "huggingface_hub"])
@pytest.mark.parametrize("backend", ["openai", "tgi"])
def test_retryable_errors_are_retried(server, backend, http_client, hub_client_online):
    server.faults.script.extend(["429", "503", "424", "drop"])
    backend_args = {"route": "chat"} if backend == "tgi" else {}
    spec = remote("a", server.url, backend, backend_args={**backend_args, "http_client": http_client})
    completion = request(spec, PoolConfig(**FAST))
    assert (completion.text, completion.attempts) == ("2", 5)
    assert server.stats["requests"] == 5 and server.stats["completions"] == 1


@pytest.mark.parametrize("http_client", ["aiohttp", "huggingface_hub"])
def test_a_slow_response_times_out_and_is_retried(server, http_client, hub_client_online):
    server.faults.slow_s = 1.0
    server.faults.script.append("slow")
    spec = remote("a", server.url, backend_args={"http_client": http_client})
    completion = request(spec, PoolConfig(request_timeout_s=0.3, **FAST))
    assert completion.attempts == 2


@pytest.mark.parametrize("http_client", ["aiohttp", "huggingface_hub"])
def test_validation_errors_are_recorded_not_retried(server, http_client, hub_client_online):
    spec = remote("a", server.url, generation={"max_new_tokens": 10_000}, backend_args={"http_client": http_client})
    with pytest.raises(RequestFailed, match="`max_new_tokens` must be <= 512. Given: 10000.*not retryable") as error:
        request(spec, PoolConfig(**FAST))
    assert (error.value.status, error.value.attempts) == (422, 1)
    assert server.stats["requests"] == 1


def test_retries_stop_at_the_budget(server):
    server.faults.set_rates({"503": 1.0})
    with pytest.raises(RequestFailed, match="gave up after 3 attempts") as error:
        request(remote("a", server.url), PoolConfig(max_retries=2, **FAST))
    assert error.value.status == 503
    assert server.stats["requests"] == 3


def test_a_failing_teacher_is_reported_with_the_prompts_it_left_undone(server):
    prompts = Dataset.from_dict({"prompt_id": [f"p{i}" for i in range(10)], "prompt": [f"q{i}" for i in range(10)]})
    teachers = [remote("up", server.url), remote("down", f"http://127.0.0.1:{free_port()}", max_concurrency=1)]
    config = SynthesisConfig(max_retries=1, max_consecutive_failures=3, **FAST)
    with pytest.raises(SynthesisError, match=r"down: 10 prompts undone \(p0, p1, p2, p3, p4, \.\.\.\)") as error:
        synthesize(prompts, teachers, config)
    failures = error.value.failures
    assert [f.prompt_id for f in failures] == [f"p{i}" for i in range(10)]
    assert {f.teacher for f in failures} == {"down"}
    assert [f.attempts for f in failures] == [2, 2, 2] + [0] * 7
    assert failures[0].error.startswith("ClientConnectorError: Cannot connect to host 127.0.0.1")
    assert failures[0].error.endswith("(gave up after 2 attempts)")
    assert all(f.error.startswith("not attempted: teacher taken out after 3 failures in a row") for f in failures[3:])

    config.allow_incomplete = True
    generations, report = synthesize(prompts, teachers, config)
    assert generations["teacher"] == ["up"] * 10
    assert len(report.failures) == 10
    assert report.to_dict()["teachers"][1] == {
        "teacher": "down",
        "rows": 0,
        "generations": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "gts_generations": 10,
        "gts_completion_tokens": None,
    }


def test_concurrency_is_bounded_per_teacher_and_overall():
    prompts = Dataset.from_dict({"prompt_id": list(range(24)), "prompt": ["q"] * 24})
    with TeacherServer(latency_s=0.05) as a, TeacherServer(latency_s=0.05) as b:
        teachers = [remote("a", a.url, max_concurrency=3), remote("b", b.url, max_concurrency=5)]
        synthesize(prompts, teachers, SynthesisConfig(**FAST))
        assert (a.stats["max_in_flight"], b.stats["max_in_flight"]) == (3, 5)
    with TeacherServer(latency_s=0.05) as shared:
        teachers = [remote("a", shared.url, max_concurrency=3), remote("b", shared.url, max_concurrency=5)]
        synthesize(prompts, teachers, SynthesisConfig(max_concurrency=4, **FAST))
        assert shared.stats["max_in_flight"] == 4


def test_a_run_under_mixed_faults_completes_every_row_once(tmp_path, hub_client_online):
    """A quarter of all requests fail (429, 503, 424, dropped connections, time-outs); every row arrives once."""
    prompts = Dataset.from_dict({"prompt_id": list(range(60)), "prompt": [f"What is {i}?" for i in range(60)]})
    with TeacherServer(respond=lambda prompt: "answer") as server:
        server.faults.set_rates({"429": 0.08, "503": 0.06, "424": 0.04, "drop": 0.04, "slow": 0.03})
        server.faults.slow_s = 1.0
        teachers = [
            remote("a", server.url, max_concurrency=6),
            remote(
                "b",
                server.url,
                "tgi",
                max_concurrency=6,
                backend_args={"route": "chat", "http_client": "huggingface_hub"},
            ),
        ]
        config = SynthesisConfig(request_timeout_s=0.25, max_retries=10, results_dir=str(tmp_path), **FAST)
        generations, report = synthesize(prompts, teachers, config)
        faults = {kind: server.stats[f"fault_{kind}"] for kind in ("429", "503", "424", "drop", "slow")}
        requests = server.stats["requests"]
    assert all(count > 0 for count in faults.values()), faults
    assert sum(faults.values()) / requests >= 0.2
    pairs = list(zip(generations["prompt_id"], generations["teacher"]))
    assert len(pairs) == len(set(pairs)) == 120
    assert set(generations["response"]) == {"answer"}
    stored = [json.loads(line) for line in (tmp_path / RESULTS_FILE).read_text().splitlines()]
    assert len(stored) == 120
    assert Counter((r["prompt_id"], r["teacher"]) for r in stored).most_common(1)[0][1] == 1
    # each injected fault failed an attempt of some stored sample (client-side failures may add more)
    assert sum(r["attempts"] for r in stored) - 120 >= sum(faults.values())
    assert report.generations == 120 and not report.failures
