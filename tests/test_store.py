"""The artifact store's local target: real files laid out like the Hub, read back the usual way."""

import os
import shutil

import datasets
import pytest
import torch
import yaml
from datasets import Dataset
from huggingface_hub import ModelCard, ModelCardData
from transformers import AutoModelForCausalLM, AutoTokenizer

from persyn_hf.store import ArtifactStore


def test_model_round_trips_with_tokenizer_and_card(tmp_path, tiny_qwen2_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_path)
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen2_path)
    card = ModelCard.from_template(
        ModelCardData(license="apache-2.0"), template_str="---\n{{ card_data }}\n---\n# Student"
    )
    store = ArtifactStore(tmp_path)

    location = store.save_model("user/student", model, tokenizer=tokenizer, card=card)

    assert location == str(tmp_path / "user" / "student")
    loaded = AutoModelForCausalLM.from_pretrained(location)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    assert AutoTokenizer.from_pretrained(location).get_vocab() == tokenizer.get_vocab()
    assert (tmp_path / "user" / "student" / "model.safetensors").is_file()
    assert ModelCard.load(tmp_path / "user" / "student" / "README.md").data.license == "apache-2.0"
    assert not [p.name for p in (tmp_path / "user").iterdir() if p.name.startswith(".")]


def test_dataset_configs_round_trip_through_load_dataset(tmp_path):
    store = ArtifactStore(tmp_path)
    persyn = Dataset.from_dict({"prompt_id": ["a", "b"], "teacher": ["t1", "t2"]})
    strong = Dataset.from_dict({"prompt_id": ["a", "b"], "teacher": ["t2", "t2"]})

    store.save_dataset("user/personalized", persyn, config_name="persyn")
    store.save_dataset("user/personalized", strong, config_name="strong")
    store.save_dataset("user/personalized", strong.select([0]), config_name="strong", split="test")

    assert store.load_dataset("user/personalized", "persyn")["teacher"] == ["t1", "t2"]
    assert store.load_dataset("user/personalized", "strong")["teacher"] == ["t2", "t2"]
    path = str(tmp_path / "user" / "personalized")
    assert datasets.load_dataset(path, "strong", split="test")["prompt_id"] == ["a"]
    header = (tmp_path / "user" / "personalized" / "README.md").read_text().split("---")[1]
    configs = {c["config_name"]: c["data_files"] for c in yaml.safe_load(header)["configs"]}
    assert configs == {
        "persyn": [{"split": "train", "path": "persyn/train-00000-of-00001.parquet"}],
        "strong": [
            {"split": "train", "path": "strong/train-00000-of-00001.parquet"},
            {"split": "test", "path": "strong/test-00000-of-00001.parquet"},
        ],
    }


def test_saving_again_replaces_a_split(tmp_path):
    store = ArtifactStore(tmp_path)
    store.save_dataset("scores", Dataset.from_dict({"x": [1, 2, 3]}))
    store.save_dataset("scores", Dataset.from_dict({"x": [7]}))
    assert store.load_dataset("scores")["x"] == [7]


def test_bad_input_leaves_nothing_behind(tmp_path):
    store = ArtifactStore(tmp_path)
    with pytest.raises(ValueError, match=r"Refusing to save an empty dataset to 'user/empty'"):
        store.save_dataset("user/empty", Dataset.from_dict({"x": []}))
    with pytest.raises(ValueError, match=r"`repo_id` must look like 'name' or 'user/name', got '../escape'"):
        store.location("../escape")
    assert list(tmp_path.iterdir()) == []


def test_hub_location_is_the_repo_id():
    assert ArtifactStore("unused", hub=True).location("user/persyn-router") == "user/persyn-router"


def test_two_stores_with_the_same_repo_id_never_share_a_cache(tmp_path):
    first, second = ArtifactStore(tmp_path / "a"), ArtifactStore(tmp_path / "b")
    first.save_dataset("user/x", Dataset.from_dict({"v": [1, 2]}))
    second.save_dataset("user/x", Dataset.from_dict({"w": [3]}))
    assert first.load_dataset("user/x")["v"] == [1, 2]
    assert second.load_dataset("user/x")["w"] == [3]


def test_loading_a_missing_config_lists_what_is_there(tmp_path):
    store = ArtifactStore(tmp_path)
    store.save_dataset("user/d", Dataset.from_dict({"v": [1]}), config_name="persyn")
    with pytest.raises(
        FileNotFoundError, match=r"No config 'oracle' in the stored dataset 'user/d'.*found \['persyn'\]"
    ):
        store.load_dataset("user/d", "oracle")


def test_resolve_takes_a_folder_or_a_stored_artifact(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    store.save_dataset("user/d", Dataset.from_dict({"v": [1]}))
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    assert store.resolve(str(folder), "router") == str(folder)
    assert store.resolve("user/d", "router") == str(tmp_path / "store" / "user" / "d")
    with pytest.raises(
        ValueError, match=r"`router` 'user/missing' is neither a local folder nor an artifact in the store"
    ):
        store.resolve("user/missing", "router")
    assert ArtifactStore(tmp_path, hub=True).resolve("user/missing", "router") == "user/missing"


def test_save_folder_publishes_top_level_files_with_the_card(tmp_path, tiny_llama_path):
    folder = tmp_path / "trainer-output"
    shutil.copytree(tiny_llama_path, folder)
    (folder / "checkpoint-1").mkdir()
    (folder / "checkpoint-1" / "optimizer.pt").write_bytes(b"state")
    card = ModelCard.from_template(ModelCardData(license="mit"), template_str="---\n{{ card_data }}\n---\n# Student")

    location = ArtifactStore(tmp_path / "store").save_folder("user/student", folder, card=card)

    assert not (tmp_path / "store" / "user" / "student" / "checkpoint-1").exists()
    assert ModelCard.load(os.path.join(location, "README.md")).data.license == "mit"
    assert AutoModelForCausalLM.from_pretrained(location).config.model_type == "llama"


def test_offline_a_hub_model_in_the_local_cache_is_taken_one_that_is_not_is_named(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot = tmp_path / "hub" / "models--org--cached" / "snapshots" / ("0" * 40)  # the cache's own layout
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "hub" / "models--org--cached" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--cached" / "refs" / "main").write_text("0" * 40)
    store = ArtifactStore(tmp_path / "store")
    assert store.resolve_model("org/cached", "student", hub_ids=True) == "org/cached"
    with pytest.raises(ValueError, match=r"`student` 'org/other' .* not in the local Hugging Face cache\); download"):
        store.resolve_model("org/other", "student", hub_ids=True)
