"""Teacher specs: the shipped YAMLs load, bad specs fail with every problem named, the sample-count rule."""

from pathlib import Path

import pytest

from persyn_hf.errors import ConfigError
from persyn_hf.generate import SynthesisConfig, num_samples
from persyn_hf.teachers import TeacherSpec, load_teachers
from persyn_hf.teachers.spec import LocalConfig, OpenAIConfig, TGIConfig

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def spec(**overrides) -> dict:
    return {"name": "t", "model_id": "org/t", "family": "F", "size_b": 7, **overrides}


@pytest.mark.parametrize("backend", ["tgi", "openai", "local"])
def test_example_yaml_of_each_backend_loads(backend):
    teachers = load_teachers(RECIPES / "teachers" / f"{backend}.yaml")
    assert len(teachers) == 3
    assert {t.backend for t in teachers} == {backend}
    for teacher in teachers:
        assert isinstance(teacher.options(), {"tgi": TGIConfig, "openai": OpenAIConfig, "local": LocalConfig}[backend])


def test_example_yaml_values():
    tgi = load_teachers(RECIPES / "teachers" / "tgi.yaml")
    assert tgi[1] == TeacherSpec(
        name="Qwen2.5-72B-Instruct",
        model_id="Qwen/Qwen2.5-72B-Instruct",
        family="Qwen2.5",
        size_b=72,
        backend="tgi",
        base_url="http://qwen2-5-72b.example:8080",
        generation={"temperature": 0.6, "top_p": 0.95, "max_new_tokens": 4096},
        max_concurrency=32,
    )
    assert tgi[2].options() == TGIConfig(route="chat", hf_token=True)
    assert load_teachers(RECIPES / "teachers" / "local.yaml")[0].options().batch_size == 32


def test_generate_recipes_name_loadable_teachers():
    import yaml

    for recipe in sorted((RECIPES / "Qwen2.5-1.5B-Instruct" / "generate").glob("config_*.yaml")):
        teachers_file = yaml.safe_load(recipe.read_text())["teachers"]
        assert len(load_teachers(RECIPES.parent / teachers_file)) == 15


def test_list_and_mapping_forms(tmp_path):
    path = tmp_path / "teachers.yaml"
    path.write_text("- {name: a, model_id: org/a, family: F, size_b: 1.5}\n")
    assert load_teachers(path)[0].size_b == 1.5
    path.write_text("teachers:\n  - {name: a, model_id: org/a, family: F, size_b: 3, backend_args: {batch_size: 4}}\n")
    assert load_teachers(path)[0].backend_args == {"batch_size": 4}


def test_every_problem_is_listed_at_once():
    entries = [
        spec(name="a", backend="vllm", color="red"),
        spec(name="b", backend="tgi"),
        spec(name="c", generation={"max_tokens": 10}, backend_args={"route": "chat"}),
        spec(name="d", size_b=0, max_concurrency=0, samples=0, long_cot="yes"),
        spec(name="a"),
        {"name": "e", "model_id": "org/e"},
    ]
    with pytest.raises(ValueError) as error:
        load_teachers(entries)
    message = str(error.value)
    for expected in [
        "teachers[0] (a): unknown field 'color'",
        "`backend` must be one of ['tgi', 'openai', 'local'], got 'vllm'",
        "teachers[1] (b): backend 'tgi' needs `base_url`",
        "unknown generation parameter 'max_tokens'; valid parameters: ['max_new_tokens'",
        "unknown `backend_args` key 'route' for backend 'local'; valid keys: ['batch_size', 'device', 'dtype']",
        "`size_b` must be a positive number, got 0",
        "`max_concurrency` must be a positive integer, got 0",
        "`samples` must be a positive integer or null, got 0",
        "`long_cot` must be true or false, got 'yes'",
        "teacher name 'a' is declared 2 times",
        "teachers[5] (e): missing required field 'family'",
        "teachers[5] (e): missing required field 'size_b'",
    ]:
        assert expected in message
    assert "(12 problems)" in message and "(12) " in message and "\n" not in message  # one line, numbered


def test_bad_backend_args_values():
    with pytest.raises(ValueError, match="`backend_args.route` must be 'generate' or 'chat', got 'completions'"):
        TeacherSpec(**spec(backend="tgi", base_url="http://x", backend_args={"route": "completions"})).options()
    with pytest.raises(
        ValueError, match=r"`backend_args.http_client` must be one of \['aiohttp', 'huggingface_hub'\], got 'httpx'"
    ):
        TeacherSpec(**spec(backend="openai", base_url="http://x", backend_args={"http_client": "httpx"})).options()
    with pytest.raises(ValueError, match="`backend_args.batch_size` must be a positive integer"):
        TeacherSpec(**spec(backend_args={"batch_size": 0})).options()


def test_backend_args_of_the_wrong_type_are_named():
    entries = [spec(backend="tgi", base_url="http://x", backend_args={"hf_token": "false", "api_key_env": 123})]
    with pytest.raises(
        ConfigError,
        match=r"\(1\) teachers\[0\] \(t\): `backend_args.hf_token` must be true or false, got 'false'; \(2\) "
        r"teachers\[0\] \(t\): `backend_args.api_key_env` must be a string or null, got 123$",
    ):
        load_teachers(entries)
    with pytest.raises(ConfigError, match=r"^Teacher 't': `backend_args.batch_size` must be an integer, got '8'$"):
        TeacherSpec(**spec(backend_args={"batch_size": "8"})).options()


def test_a_stop_string_is_one_stop_sequence():
    [teacher] = load_teachers([spec(generation={"stop": "</answer>", "max_new_tokens": 4})])
    assert teacher.generation == {"stop": ["</answer>"], "max_new_tokens": 4}
    with pytest.raises(ConfigError, match=r"`generation.stop` must be a string or a list of strings, got \[1\]"):
        load_teachers([spec(generation={"stop": [1]})])


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"size_b": 7}, 4),
        ({"size_b": 71.9}, 4),
        ({"size_b": 72}, 2),
        ({"size_b": 671}, 2),
        ({"size_b": 7, "long_cot": True}, 2),
        ({"size_b": 72, "samples": 3}, 3),
    ],
)
def test_rejection_sampling_sample_counts(overrides, expected):
    assert num_samples(TeacherSpec(**spec(**overrides)), SynthesisConfig()) == expected


def test_sample_counts_follow_the_config():
    config = SynthesisConfig(samples_small=8, samples_large=1, large_teacher_size_b=30)
    assert num_samples(TeacherSpec(**spec(size_b=14)), config) == 8
    assert num_samples(TeacherSpec(**spec(size_b=32)), config) == 1


def test_synthesis_config_checks_its_values():
    with pytest.raises(ValueError, match=r"`mode` must be one of \['parallel', 'routed'\], got 'serial'"):
        SynthesisConfig(mode="serial")
    with pytest.raises(ValueError, match="`samples_small` must be at least 1, got 0"):
        SynthesisConfig(samples_small=0)
    with pytest.raises(ValueError, match="`max_concurrency` must be at least 1, got 0"):
        SynthesisConfig(max_concurrency=0)
    with pytest.raises(ConfigError, match="`request_timeout_s` must be positive, got 0"):
        SynthesisConfig(request_timeout_s=0)
