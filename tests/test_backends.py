"""Backends: `tgi` (both routes), `openai` and `local` return the same record for the same tiny model.

The remote backends talk to `TeacherServer`, a real TGI-protocol server on 127.0.0.1 over the same model.
"""

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from persyn_hf.errors import ConfigError
from persyn_hf.teachers import TeacherSpec
from persyn_hf.teachers.backends import LocalBackend, chat_parameters, error_message, make_backend, tgi_parameters
from persyn_hf.testing.server import TeacherServer

CONVERSATIONS = [
    [{"role": "user", "content": "What is 12 + 7?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Compute 345 - 129."}],
    [{"role": "user", "content": "Tom has 4 apples and buys 9 more. How many apples does he have?"}],
]
BACKENDS = {
    "tgi-generate": {"backend": "tgi"},
    "tgi-chat": {"backend": "tgi", "backend_args": {"route": "chat"}},
    "openai": {"backend": "openai"},
    "tgi-generate-hub": {"backend": "tgi", "backend_args": {"http_client": "huggingface_hub"}},
    "tgi-chat-hub": {"backend": "tgi", "backend_args": {"route": "chat", "http_client": "huggingface_hub"}},
    "openai-hub": {"backend": "openai", "backend_args": {"http_client": "huggingface_hub"}},
    "local": {"backend": "local", "backend_args": {"batch_size": 4}},
}


@pytest.fixture
def hub_client_online(monkeypatch):
    """The suite runs with HF_HUB_OFFLINE=1, under which `AsyncInferenceClient` refuses every request, even to
    127.0.0.1; the tests of that client lift it for themselves (they only talk to the local server)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture(scope="module")
def model_server(tiny_llama_path):
    with TeacherServer(model_path=tiny_llama_path) as server:
        yield server


def teacher(server, model_path, generation, **overrides) -> TeacherSpec:
    return TeacherSpec(
        name="t",
        model_id="org/tiny",
        family="tiny",
        size_b=1,
        base_url=server.url,
        model_path=model_path,
        generation=generation,
        **overrides,
    )


def generate(spec: TeacherSpec, conversations, seed=None):
    async def run():
        backend = make_backend(spec, request_timeout_s=60)
        await backend.start()
        try:
            return await asyncio.gather(*(backend.generate(messages, seed) for messages in conversations))
        finally:
            await backend.close()

    return asyncio.run(run())


@pytest.fixture(scope="module")
def reference(tiny_llama_path):
    """Greedy answers from a plain, unbatched `model.generate` call: what every backend must return."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    answers = []
    for messages in CONVERSATIONS:
        ids = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.no_grad():
            output = model.generate(**ids, max_new_tokens=8, do_sample=False)[0, ids["input_ids"].shape[1] :]
        answers.append((tokenizer.decode(output, skip_special_tokens=True), ids["input_ids"].shape[1], len(output)))
    return answers


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_every_backend_returns_the_same_record(backend, model_server, tiny_llama_path, reference, hub_client_online):
    spec = teacher(model_server, tiny_llama_path, {"max_new_tokens": 8, "temperature": 0}, **BACKENDS[backend])
    completions = generate(spec, CONVERSATIONS)
    for completion, (text, prompt_tokens, generated) in zip(completions, reference):
        assert generated == 8  # the random model never ends its turn within 8 tokens
        assert (completion.text, completion.finish_reason) == (text, "length")
        assert (completion.prompt_tokens, completion.completion_tokens, completion.attempts) == (prompt_tokens, 8, 1)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_stop_sequences_end_the_response(backend, model_server, tiny_llama_path, reference, hub_client_online):
    text, _, _ = reference[0]
    stop = text[2:4]  # two characters the greedy answer contains
    spec = teacher(model_server, tiny_llama_path, {"max_new_tokens": 8, "stop": [stop]}, **BACKENDS[backend])
    [completion] = generate(spec, CONVERSATIONS[:1])
    assert (completion.text, completion.finish_reason) == (text[: text.index(stop)], "stop")


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_a_stop_string_is_one_stop_sequence(backend, model_server, tiny_llama_path, reference, hub_client_online):
    text, _, _ = reference[0]
    assert set(text) & set("</answer>")  # the answer holds some of its characters, never the whole
    spec = teacher(model_server, tiny_llama_path, {"max_new_tokens": 8, "stop": "</answer>"}, **BACKENDS[backend])
    [completion] = generate(spec, CONVERSATIONS[:1])
    assert (completion.text, completion.finish_reason) == (text, "length")


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_do_sample_false_is_greedy_whatever_the_temperature(
    backend, model_server, tiny_llama_path, reference, hub_client_online
):
    generation = {"max_new_tokens": 8, "do_sample": False, "temperature": 1.5}  # the temperature comes last
    [completion] = generate(teacher(model_server, tiny_llama_path, generation, **BACKENDS[backend]), CONVERSATIONS[:1])
    assert completion.text == reference[0][0]


@pytest.mark.parametrize("backend", ["tgi-generate", "openai", "openai-hub"])
def test_sampling_is_seeded_per_request(backend, model_server, tiny_llama_path, hub_client_online):
    spec = teacher(model_server, tiny_llama_path, {"max_new_tokens": 12, "temperature": 1.5}, **BACKENDS[backend])
    first, again = generate(spec, CONVERSATIONS[:1] * 2, seed=7)
    [other] = generate(spec, CONVERSATIONS[:1], seed=8)
    assert first.text == again.text
    assert other.text != first.text


def test_local_backend_batches_waiting_requests(tiny_llama_path, monkeypatch):
    batch_sizes = []
    generate_rendered = LocalBackend.generate_rendered

    def spy(self, prompts, generation, seed=None):
        batch_sizes.append(len(prompts))
        return generate_rendered(self, prompts, generation, seed)

    monkeypatch.setattr(LocalBackend, "generate_rendered", spy)
    spec = TeacherSpec(
        name="t",
        model_id="org/tiny",
        family="tiny",
        size_b=1,
        model_path=tiny_llama_path,
        generation={"max_new_tokens": 4},
        backend_args={"batch_size": 4},
    )
    completions = generate(spec, CONVERSATIONS * 3)
    assert len(completions) == 9
    assert sum(batch_sizes) == 9 and max(batch_sizes) == 4 and len(batch_sizes) < 9
    assert [c.text for c in completions[:3]] == [c.text for c in completions[3:6]]


def test_local_sampling_does_not_depend_on_the_batch(tiny_llama_path):
    """Per-request seeds and a fixed batch shape: each response is the same alone, in any batch, in any order."""
    spec = TeacherSpec(
        name="t",
        model_id="org/tiny",
        family="tiny",
        size_b=1,
        model_path=tiny_llama_path,
        generation={"max_new_tokens": 12, "temperature": 1.5, "top_p": 0.9},
        backend_args={"batch_size": 4},
    )
    conversations = [[{"role": "user", "content": f"Question {i}: " + "why? " * i}] for i in range(7)]
    seeds = [100 + i for i in range(7)]

    async def answers(order: list[int], concurrent: bool):
        backend = LocalBackend(spec)
        await backend.start()
        try:
            calls = [backend.generate(conversations[i], seeds[i]) for i in order]
            done = await asyncio.gather(*calls) if concurrent else [await call for call in calls]
        finally:
            await backend.close()
        return {i: completion.text for i, completion in zip(order, done)}

    alone = asyncio.run(answers(list(range(7)), concurrent=False))
    assert len(set(alone.values())) == 7
    assert asyncio.run(answers(list(range(7)), concurrent=True)) == alone
    assert asyncio.run(answers([6, 2, 5, 0, 3, 1, 4], concurrent=True)) == alone


@pytest.mark.parametrize("suffix", ["", "/v1/", "/v1/chat/completions"])
def test_every_route_is_found_from_any_form_of_base_url(suffix, model_server):
    spec = TeacherSpec(name="t", model_id="org/tiny", family="tiny", size_b=1, backend="openai",
                       base_url=model_server.url + suffix, generation={"max_new_tokens": 2})  # fmt: skip

    async def run():
        backend = make_backend(spec, request_timeout_s=60)
        await backend.start()
        try:
            await backend.probe(10)
            return await backend.generate(CONVERSATIONS[0]), await backend.prompt_logprobs([1, 2, 3])
        finally:
            await backend.close()

    completion, logprobs = asyncio.run(run())
    assert completion.completion_tokens == 2
    assert logprobs[0] is None and len(logprobs) == 3


def test_no_hugging_face_token_reaches_a_server_unless_asked(monkeypatch, hub_client_online):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.setenv("MY_SERVER_KEY", "sk-123")
    with TeacherServer() as server:
        base = {"name": "t", "model_id": "org/t", "family": "F", "size_b": 1, "base_url": server.url}
        generate(TeacherSpec(**base, backend="openai"), CONVERSATIONS[:1])
        generate(TeacherSpec(**base, backend="tgi", backend_args={"route": "chat"}), CONVERSATIONS[:1])
        generate(
            TeacherSpec(**base, backend="openai", backend_args={"api_key_env": "MY_SERVER_KEY"}), CONVERSATIONS[:1]
        )
        generate(
            TeacherSpec(**base, backend="tgi", backend_args={"route": "chat", "hf_token": True}), CONVERSATIONS[:1]
        )
        assert server.authorizations == {"Bearer EMPTY": 2, "Bearer sk-123": 1, "Bearer hf_secret": 1}
        with pytest.raises(ValueError, match="environment variable 'UNSET_KEY' \\(`api_key_env`\\) is not set"):
            generate(TeacherSpec(**base, backend="openai", backend_args={"api_key_env": "UNSET_KEY"}), [])


def test_generation_parameters_map_onto_each_api():
    assert tgi_parameters({"temperature": 0, "max_new_tokens": 5}, seed=7) == {"max_new_tokens": 5, "do_sample": False}
    assert tgi_parameters({"temperature": 0.6, "top_p": 0.9}, seed=7) == {
        "top_p": 0.9,
        "temperature": 0.6,
        "do_sample": True,
        "seed": 7,
    }
    assert chat_parameters({"max_new_tokens": 5, "temperature": 0.6, "top_k": 20, "stop": ["x"]}, seed=3) == {
        "seed": 3,
        "max_tokens": 5,
        "temperature": 0.6,
        "stop": ["x"],
        "extra_body": {"top_k": 20},
    }
    assert chat_parameters({"do_sample": False}, seed=None) == {"seed": None, "temperature": 0.0, "extra_body": None}


def test_server_info_and_health():
    with TeacherServer(model_id="org/served") as server:
        with urllib.request.urlopen(f"{server.url}/health", timeout=10) as response:
            assert response.status == 200
        with urllib.request.urlopen(f"{server.url}/info", timeout=10) as response:
            info = json.load(response)
    assert info["model_id"] == "org/served"
    assert info["max_total_tokens"] == 512


def test_the_hub_client_says_when_offline_mode_blocks_it(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    spec = TeacherSpec(
        name="t", model_id="org/t", family="F", size_b=1, backend="openai", base_url="http://127.0.0.1:9",
        backend_args={"http_client": "huggingface_hub"},
    )  # fmt: skip
    with pytest.raises(ValueError, match="`http_client: huggingface_hub` cannot reach .* while HF_HUB_OFFLINE is set"):
        generate(spec, CONVERSATIONS[:1])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"error": "Input validation error: too long", "error_type": "validation"}', "Input validation error: too long"),
        (b'{"error": {"message": "The model `x` does not exist.", "type": "NotFoundError", "code": 404}}',
         "The model `x` does not exist."),
        (b'{"detail": "Not Found"}', "Not Found"),
        (b'{"detail": [{"loc": ["body", "max_tokens"], "msg": "must be positive"}, {"msg": "bad seed"}]}',
         "must be positive; bad seed"),
        (b'{"message": "Rate limit reached"}', "Rate limit reached"),
        (b"upstream connect error\nor disconnect/reset before headers", "upstream connect error or disconnect/reset before headers"),
        (b"", "(empty body)"),
    ],
)  # fmt: skip
def test_error_bodies_in_every_common_shape(body, message):
    assert error_message(body) == message


def get(url: str, token: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def post_chat(url: str, model: str) -> int:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()
    request = urllib.request.Request(
        f"{url}/v1/chat/completions", body, {"Authorization": "Bearer k", "Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_the_server_faults_are_command_line_flags_too():
    command = [
        sys.executable, "-m", "persyn_hf.testing.server", "--protocol", "openai", "--served_model_name", "org/m",
        "--api_key", "k", "--fault_script", "503", "--restart_after_requests", "3", "--restart_down_s", "1",
    ]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        assert get(f"{url}/v1/models") == (401, {"error": "Unauthorized"})
        assert get(f"{url}/v1/models", "k")[1]["data"][0]["id"] == "org/m"
        assert get(f"{url}/info", "k") == (404, {"detail": "Not Found"})  # vLLM-like: no TGI routes
        assert [post_chat(url, "org/m"), post_chat(url, "org/other")] == [503, 404]
        with pytest.raises(ConnectionResetError):  # the third request restarts it, and is lost
            post_chat(url, "org/m")
        with pytest.raises(urllib.error.URLError, match="Connection refused"):  # refused while down
            post_chat(url, "org/m")
        time.sleep(1.5)
        assert post_chat(url, "org/m") == 200
    finally:
        server.terminate()
        server.wait()


def test_a_tgi_tokenizer_that_does_not_load_is_one_line_naming_the_fix(tmp_path):
    spec = TeacherSpec(name="t", model_id="org/t", family="F", size_b=1, backend="tgi",
                       base_url="http://127.0.0.1:9", backend_args={"tokenizer": str(tmp_path)})  # fmt: skip
    backend = make_backend(spec, request_timeout_s=5)

    async def start_and_close():
        try:
            await backend.start()
        finally:
            await backend.close()

    with pytest.raises(ConfigError, match=rf"Teacher 't' \(`tgi`, `route: generate`\) renders its prompts with the "
                                          rf"tokenizer '{tmp_path}', which does not load \(.*\): set "
                                          r"`backend_args.tokenizer`"):  # fmt: skip
        asyncio.run(start_and_close())
