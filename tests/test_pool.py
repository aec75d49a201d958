"""The pool: retries, time-outs, validation errors, endpoint probes, restarts and dead teachers, concurrency limits,
and a run under faults."""

import asyncio
import json
import re
import socket
import time
from collections import Counter

import pytest
from datasets import Dataset

from persyn_hf.errors import ConfigError
from persyn_hf.generate import SynthesisConfig, SynthesisError, synthesize
from persyn_hf.teachers import TeacherSpec
from persyn_hf.teachers.backends import TeacherHTTPError, make_backend
from persyn_hf.teachers.pool import CircuitBreaker, PoolConfig, RequestFailed, TeacherDown, TeacherPool
from persyn_hf.teachers.results import RESULTS_FILE
from persyn_hf.testing.server import TeacherServer

FAST = {"backoff_base_s": 0.005, "backoff_max_s": 0.05, "disable_tqdm": True}
MESSAGES = [{"role": "user", "content": "What is 1 + 1?"}]


def remote(name: str, url: str, backend: str = "openai", **overrides) -> TeacherSpec:
    fields = {"model_id": f"org/{name}", "family": "F", "size_b": 7, **overrides}
    return TeacherSpec(name=name, backend=backend, base_url=url, **fields)


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
    with pytest.raises(RequestFailed) as error:
        request(spec, PoolConfig(**FAST))
    message = str(error.value).split(": ", 1)[1]  # after the client's error type: the same from either client
    assert message == "HTTP 422: `max_new_tokens` must be <= 512. Given: 10000 (not retryable)"
    assert (error.value.status, error.value.attempts) == (422, 1)
    assert server.stats["requests"] == 1


def test_retries_stop_at_the_budget(server):
    server.faults.set_rates({"503": 1.0})
    with pytest.raises(RequestFailed, match="gave up after 3 attempts") as error:
        request(remote("a", server.url), PoolConfig(max_retries=2, **FAST))
    assert error.value.status == 503
    assert server.stats["requests"] == 3


def test_call_runs_any_backend_method_under_the_retry_rules(server):
    errors = [TeacherHTTPError(503, "busy"), TeacherHTTPError(429, "slow down")]

    async def method(backend):
        if errors:
            raise errors.pop(0)
        return backend.spec.name

    async def run():
        async with TeacherPool([remote("a", server.url)], PoolConfig(**FAST)) as pool:
            return await pool.call("a", method)

    assert asyncio.run(run()) == ("a", 3)


WRONG_SETUPS = [
    pytest.param(
        {}, {"base_url": "free port"},
        r"Teacher 'a' \(openai at http://127\.0\.0\.1:\d+\) cannot be used: GET http://127\.0\.0\.1:\d+/v1/models: no "
        r"answer \(ClientConnectorError: Cannot connect to host .*\)\. Fix: start the server, or correct `base_url`",
        id="wrong URL",
    ),
    pytest.param(
        {"protocols": ["tgi"]}, {},
        r"GET http://.*/v1/models: HTTP 404: 404: Not Found\. Fix: `backend: openai` .* needs an OpenAI-compatible "
        r"server .*; for TGI's `/generate` use `backend: tgi`$",
        id="openai backend, TGI-only server",
    ),
    pytest.param(
        {"protocols": ["openai"]}, {"backend": "tgi"},
        r"Teacher 'a' \(tgi at .*\) cannot be used: GET http://.*/info: HTTP 404: Not Found\. Fix: `backend: tgi` with "
        r"`route: generate` needs a text-generation-inference server .*use `backend: openai`$",
        id="tgi backend, vLLM-like server",
    ),
    pytest.param(
        {"served_model_names": ["org/served"]}, {},
        r"GET http://.*/v1/models lists the models \['org/served'\], not 'org/a'\. Fix: set the teacher's `model_id`, "
        r"or `backend_args.model`, to one of \['org/served'\]$",
        id="wrong model name",
    ),
    pytest.param(
        {"served_model_names": ["org/served"]}, {"backend": "tgi", "backend_args": {"route": "chat"}},
        r"lists the models \['org/served'\], not 'org/a'",
        id="tgi chat route, wrong model name",
    ),
    pytest.param(
        {"api_key": "sk-right"}, {},
        r"GET http://.*/v1/models: HTTP 401: Unauthorized\. Fix: the server wants an API key: set "
        r"`backend_args.api_key_env` to the environment variable that holds it$",
        id="401, no key",
    ),
    pytest.param(
        {"api_key": "sk-right"}, {"backend_args": {"api_key_env": "MY_KEY"}},
        r"HTTP 401: Unauthorized\. Fix: the server refused the key in \$MY_KEY \(`backend_args.api_key_env`\): check it$",
        id="401, wrong key",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("server_options", "teacher_options", "match"), WRONG_SETUPS)
def test_a_wrong_setup_is_one_line_before_any_prompt(server_options, teacher_options, match, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-wrong")
    prompts = Dataset.from_dict({"prompt_id": [0, 1], "prompt": ["q0", "q1"]})
    with TeacherServer(**server_options) as server:
        teacher_options = dict(teacher_options)
        url = f"http://127.0.0.1:{free_port()}" if teacher_options.pop("base_url", None) else server.url
        start = time.monotonic()
        with pytest.raises(ConfigError, match=match) as error:
            synthesize(prompts, [remote("a", url, **teacher_options)], SynthesisConfig(**FAST))
        assert time.monotonic() - start < 5
        assert server.stats["requests"] == 0  # no prompt was sent
    assert "\n" not in str(error.value)
    assert "sk-wrong" not in str(error.value)


def test_every_unusable_teacher_is_named_at_once():
    with TeacherServer(protocols=["tgi"]) as tgi_only, TeacherServer(served_model_names=["org/x"]) as vllm_like:
        teachers = [
            remote("a", tgi_only.url),
            remote("x", vllm_like.url),
            remote("b", vllm_like.url),
        ]
        with pytest.raises(ConfigError, match=r"^2 teachers cannot be used: \(1\) Teacher 'a' .*; \(2\) Teacher 'b' "):
            synthesize(Dataset.from_dict({"prompt_id": [0], "prompt": ["q"]}), teachers, SynthesisConfig(**FAST))


def test_a_restart_mid_run_is_ridden_out_without_losing_or_repeating_a_row(tmp_path, caplog):
    prompts = Dataset.from_dict({"prompt_id": list(range(60)), "prompt": [f"q{i}" for i in range(60)]})
    with TeacherServer(latency_s=0.02) as server:
        server.schedule_restart(down_s=1.5, after_requests=20)
        config = SynthesisConfig(results_dir=str(tmp_path), probe_interval_s=0.2, teacher_down_timeout_s=30, **FAST)
        generations, report = synthesize(prompts, [remote("a", server.url, max_concurrency=8)], config)
        assert server.stats["restarts"] == 1
        assert server.stats["completions"] == 60  # nothing generated twice
    assert sorted(generations["prompt_id"]) == list(range(60))
    stored = [json.loads(line) for line in (tmp_path / RESULTS_FILE).read_text().splitlines()]
    assert sorted(record["prompt_id"] for record in stored) == list(range(60))
    assert sum(record["attempts"] for record in stored) > 60
    assert "a is not answering (" in caplog.text
    assert re.search(r"a answers again after \d\.\d+ s; its requests resume", caplog.text)
    assert report.complete and not report.failures


@pytest.mark.slow
def test_with_default_settings_a_two_minute_restart_loses_no_row(tmp_path):
    """The server goes away for two minutes mid-run and comes back; the default settings ride it out."""
    prompts = Dataset.from_dict({"prompt_id": list(range(200)), "prompt": [f"q{i}" for i in range(200)]})
    with TeacherServer(latency_s=0.05) as restarted, TeacherServer(latency_s=0.05) as steady:
        restarted.schedule_restart(down_s=120, after_requests=50)
        teachers = [remote("restarted", restarted.url), remote("steady", steady.url)]
        start = time.monotonic()
        generations, report = synthesize(prompts, teachers, SynthesisConfig(results_dir=str(tmp_path)))
        elapsed = time.monotonic() - start
        assert restarted.stats["restarts"] == 1
        assert restarted.stats["completions"] == steady.stats["completions"] == 200  # nothing generated twice
    assert 120 < elapsed < 120 + PoolConfig.probe_interval_s + 20
    assert Counter(zip(generations["prompt_id"], generations["teacher"])) == Counter(
        {(i, name): 1 for i in range(200) for name in ("restarted", "steady")}
    )
    stored = [json.loads(line) for line in (tmp_path / RESULTS_FILE).read_text().splitlines()]
    assert len({(r["prompt_id"], r["teacher"]) for r in stored}) == len(stored) == 400
    assert report.complete


@pytest.mark.parametrize("death", ["every request 503", "server gone"])
def test_a_dead_teacher_is_given_up_in_time_while_the_others_finish(death, tmp_path):
    timeout, interval = 2.0, 0.5
    prompts = Dataset.from_dict({"prompt_id": [f"p{i}" for i in range(30)], "prompt": [f"q{i}" for i in range(30)]})
    # `alive` needs ~3.6 s, one request at a time; `dead` dies at its first request, cutting those in flight
    with TeacherServer(latency_s=0.05) as dead, TeacherServer(latency_s=0.12) as alive:
        if death == "every request 503":
            dead.faults.set_rates({"503": 1.0})
        else:
            dead.schedule_restart(down_s=3600, after_requests=1)
        teachers = [remote("dead", dead.url, max_concurrency=4), remote("alive", alive.url, max_concurrency=1)]
        config = SynthesisConfig(
            teacher_down_timeout_s=timeout, probe_interval_s=interval, results_dir=str(tmp_path), **FAST
        )
        start = time.monotonic()
        with pytest.raises(SynthesisError) as error:
            synthesize(prompts, teachers, config)
        elapsed = time.monotonic() - start
        dead_requests, alive_completions = dead.stats["requests"], alive.stats["completions"]
    failures = error.value.failures
    assert [f.teacher for f in failures] == ["dead"] * 30 and {f.cause for f in failures} == {"teacher down"}
    down_for = float(re.search(r"not answering for ([\d.]+) s", failures[0].error).group(1))
    assert timeout <= down_for <= timeout + interval
    assert alive_completions == 30 and elapsed < 3.6 + 2
    assert dead_requests <= 4 + config.max_consecutive_failures + timeout / interval + 2  # no hopeless retries
    first_error = {
        "every request 503": "TeacherHTTPError: HTTP 503: Service unavailable: injected",
        "server gone": "ServerDisconnectedError: Server disconnected",
    }[death]
    last_probe = {"every request 503": "answered", "server gone": "GET http://.*/v1/models: no answer"}[death]
    assert re.fullmatch(
        r"30 of 60 \(prompt, teacher\) pairs were left undone:\n"
        r"  - dead \(openai at http://127\.0\.0\.1:\d+\): 30 of 30 undone\n"
        r"      30 x teacher given up: not answering for [\d.]+ s \(teacher_down_timeout_s=2\); "
        rf"first error: {re.escape(first_error)}; last probe: {last_probe}.* \(prompts p0, p1, p2, p3, p4, \.\.\.\)\n"
        r"What was done is kept in results_dir .*: once the teachers are fixed, running again with it generates only "
        r"what is missing\.",
        str(error.value),
    ), str(error.value)


def test_a_black_holed_teacher_is_given_up_at_its_deadline():
    """Probes that get no answer end at the deadline (not at `probe_timeout_s`): the give-up is on time."""
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(64)  # connections are accepted by the kernel; nothing ever answers
        config = PoolConfig(
            max_consecutive_failures=1, teacher_down_timeout_s=1.0, probe_interval_s=0.6, probe_timeout_s=30, **FAST
        )
        backend = make_backend(remote("a", f"http://127.0.0.1:{hole.getsockname()[1]}"), 30)

        async def down_for() -> float:
            breaker = CircuitBreaker("a", backend.probe, config)
            breaker.record("TimeoutError: no answer in time", trial=False)  # opens the circuit
            start = time.monotonic()
            with pytest.raises(TeacherDown, match=r"last probe: GET .*/v1/models: no answer \(TimeoutError"):
                await breaker.admit(0)
            return time.monotonic() - start

        elapsed = asyncio.run(down_for())
    assert 1.0 <= elapsed < 1.0 + 0.6 + 1  # a hang guard: the probe alone would take 30 s


@pytest.fixture
def paused_teacher(monkeypatch):
    """A teacher whose first request opens its circuit (HTTP 503) and whose second, the half-open trial, hangs."""
    monkeypatch.setenv("TEACHER_KEY", "key")
    with TeacherServer(api_key="key") as server:
        server.faults.slow_s = 30
        server.faults.script.extend(["503", "slow"])
        yield server, remote("a", server.url, backend_args={"api_key_env": "TEACHER_KEY"})


async def trial_in_flight(pool: TeacherPool, server: TeacherServer) -> asyncio.Task:
    """The task of a request that opened the circuit and is now the half-open trial, hanging on the server."""
    trial = asyncio.create_task(pool.request("a", MESSAGES))
    while server.stats["requests"] < 2:
        await asyncio.sleep(0.01)
    return trial


def test_a_trial_in_flight_does_not_delay_giving_up_a_teacher_that_stops_answering(paused_teacher):
    server, spec = paused_teacher
    config = PoolConfig(max_consecutive_failures=1, teacher_down_timeout_s=1.0, probe_interval_s=0.2, **FAST)

    async def run() -> str:
        async with TeacherPool([spec], config) as pool:
            trial = await trial_in_flight(pool, server)
            server.api_key = "another"  # from now on the probes are refused
            with pytest.raises(TeacherDown, match=r"last probe: GET .*/v1/models: HTTP 401") as error:
                await asyncio.wait_for(pool.request("a", MESSAGES), 10)  # a hang guard: the trial takes 30 s
            trial.cancel()
            return str(error.value)

    down_for = float(re.search(r"not answering for ([\d.]+) s", asyncio.run(run())).group(1))
    assert 1.0 <= down_for < 1.0 + 0.2 + 1


def test_a_cancelled_trial_lets_the_next_request_through(paused_teacher):
    server, spec = paused_teacher
    config = PoolConfig(max_consecutive_failures=1, teacher_down_timeout_s=30, probe_interval_s=0.2, **FAST)

    async def run():
        async with TeacherPool([spec], config) as pool:
            trial = await trial_in_flight(pool, server)
            trial.cancel()  # as `asyncio.wait_for` does to a request that runs out of time
            return await asyncio.wait_for(pool.request("a", MESSAGES), 10)  # a hang guard

    assert asyncio.run(run()).text
    assert server.stats["completions"] == 1


def test_a_teacher_whose_probe_answered_is_not_given_up():
    """No request waits when the probe answers (one is in flight): past the deadline, the teacher still serves."""
    config = PoolConfig(
        max_consecutive_failures=1, max_retries=0, teacher_down_timeout_s=0.5, probe_interval_s=0.1, **FAST
    )
    with TeacherServer() as server:
        server.faults.slow_s = 1.5
        server.faults.script.extend(["slow", "503"])
        spec = remote("a", server.url)

        async def run():
            async with TeacherPool([spec], config) as pool:
                slow = asyncio.create_task(pool.request("a", MESSAGES))
                while server.stats["requests"] < 1:
                    await asyncio.sleep(0.01)
                with pytest.raises(RequestFailed, match="HTTP 503"):  # opens the circuit
                    await pool.request("a", MESSAGES)
                await slow  # answers after the deadline
                return pool.breakers["a"].given_up, await pool.request("a", MESSAGES)

        given_up, completion = asyncio.run(run())
    assert given_up is None and completion.text


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
