"""Shared fixtures: tiny real models and tokenizers built locally, once per test session."""

import os

# Nothing in the suite may reach the Hub: offline, no telemetry (tests of the push path point the
# client at a local fake Hub in a subprocess with their own environment).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest  # noqa: E402

from persyn_hf.testing.fixtures import build_causal_lm, build_reward_model, build_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    """A locally trained BPE tokenizer with the ChatML + {% generation %} template."""
    return build_tokenizer(save_dir=tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def tiny_qwen2_path(tmp_path_factory, tiny_tokenizer):
    """Folder of a tiny Qwen2 causal LM (weights + tokenizer), loadable with `from_pretrained`."""
    path = tmp_path_factory.mktemp("tiny-qwen2")
    build_causal_lm(tiny_tokenizer, arch="qwen2", seed=0, save_dir=path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_llama_path(tmp_path_factory, tiny_tokenizer):
    """Folder of a tiny Llama causal LM (weights + tokenizer), loadable with `from_pretrained`."""
    path = tmp_path_factory.mktemp("tiny-llama")
    build_causal_lm(tiny_tokenizer, arch="llama", seed=1, save_dir=path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_reward_model_path(tmp_path_factory, tiny_tokenizer):
    """Folder of a tiny Qwen2 reward model (weights + tokenizer), loadable with `from_pretrained`."""
    path = tmp_path_factory.mktemp("tiny-reward-model")
    build_reward_model(tiny_tokenizer, save_dir=path)
    return str(path)
