"""The artifact store: one small API to save, load and push every persyn-hf artifact.

By default artifacts land in a local directory laid out like the Hub, ``<root>/<repo_id>/``, which
``from_pretrained(path)`` and ``load_dataset(path)`` read back exactly as they read a Hub repo. With
``hub=True`` the same calls push to the Hugging Face Hub. The token is never handled here: the Hub
client reads it from ``HF_TOKEN`` or the ``hf auth login`` cache, so it cannot reach a written file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from datasets import Dataset, load_dataset
from huggingface_hub import DatasetCard, HfApi, ModelCard

DATASET_FILE = "{split}-00000-of-00001.parquet"


@dataclass
class StoreArguments:
    """Where a stage writes its artifacts.

    Parameters:
        store_root (`str`, *optional*, defaults to `"artifacts"`):
            Local directory laid out like the Hub: an artifact `user/name` lives in `<store_root>/user/name/`.
        hub (`bool`, *optional*, defaults to `False`):
            Push to the Hugging Face Hub instead of the local store. The token comes from `HF_TOKEN` or
            `hf auth login`, and is never written anywhere.
        private (`bool`, *optional*, defaults to `False`):
            Create Hub repositories as private.
    """

    store_root: str = field(
        default="artifacts",
        metadata={"help": "Local directory laid out like the Hub: `user/name` lives in `<store_root>/user/name/`."},
    )
    hub: bool = field(
        default=False,
        metadata={"help": "Push to the Hugging Face Hub (token from HF_TOKEN or `hf auth login`) instead."},
    )
    private: bool = field(default=False, metadata={"help": "Create Hub repositories as private."})


def _dataset_dir(config_name: str) -> str:
    """The folder a config's files live in, as `Dataset.push_to_hub` lays it out."""
    return "data" if config_name == "default" else config_name


class ArtifactStore:
    """Save, load and push models, tokenizers, datasets and cards under Hub repo ids."""

    def __init__(self, root: str | Path = "artifacts", hub: bool = False, private: bool = False):
        self.root = Path(root)
        self.hub = hub
        self.private = private

    @classmethod
    def from_args(cls, args: StoreArguments) -> ArtifactStore:
        return cls(args.store_root, hub=args.hub, private=args.private)

    def location(self, repo_id: str) -> str:
        """What `from_pretrained` / `load_dataset` take for `repo_id`: the repo id itself, or its local folder."""
        if self.hub:
            return repo_id
        _check_repo_id(repo_id)
        return str(self.root / repo_id)

    def resolve(self, name: str, argument: str) -> str:
        """`name` as a local folder if it is one, else the location of the artifact `name` in the store."""
        if os.path.isdir(name):
            return name
        location = self.location(name)
        if not self.hub and not os.path.isdir(location):
            raise ValueError(
                f"`{argument}` {name!r} is neither a local folder nor an artifact in the store at {str(self.root)!r}; "
                "pass a folder, the repo id an earlier stage saved to, or set `hub: true` for a Hub repo."
            )
        return location

    # Models ---------------------------------------------------------------------------------------

    def save_model(self, repo_id: str, model, tokenizer=None, card: ModelCard | None = None, extra_files=()) -> str:
        """Save (or push, in one commit) a model with its tokenizer, card and extra files; returns `location`."""
        with tempfile.TemporaryDirectory() as staging:
            model.save_pretrained(staging)
            if tokenizer is not None:
                tokenizer.save_pretrained(staging)
            for path in extra_files:
                shutil.copy(path, staging)
            return self.save_folder(repo_id, staging, card=card)

    def save_folder(self, repo_id: str, folder: str | Path, card: ModelCard | None = None) -> str:
        """Save (or push, in one commit) the files of a model folder, such as `Trainer.save_model` writes
        (sharded weights gathered), with `card` as its README; sub-folders (checkpoints) are left out."""
        with tempfile.TemporaryDirectory() as staging:
            for path in Path(folder).iterdir():
                if path.is_file():
                    shutil.copy(path, staging)
            if card is not None:
                card.save(os.path.join(staging, "README.md"))
            self._publish_folder(repo_id, staging, repo_type="model", message="Upload model with persyn-hf")
        return self.location(repo_id)

    def save_files(self, repo_id: str, files: dict[str, str | Path], repo_type: str = "dataset") -> None:
        """Add files (`{path_in_repo: local_path}`) to an existing artifact, e.g. a chart beside a card."""
        if self.hub:
            api = HfApi()
            for path_in_repo, local_path in files.items():
                api.upload_file(
                    path_or_fileobj=str(local_path), path_in_repo=path_in_repo, repo_id=repo_id, repo_type=repo_type
                )
            return
        target = Path(self.location(repo_id))
        for path_in_repo, local_path in files.items():
            destination = target / path_in_repo
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(local_path, destination)

    # Datasets -------------------------------------------------------------------------------------

    def save_dataset(
        self,
        repo_id: str,
        dataset: Dataset,
        card: DatasetCard | None = None,
        config_name: str = "default",
        split: str = "train",
    ) -> str:
        """Save (or push) one split of one config of a dataset repo, the card first; returns `location`."""
        if len(dataset) == 0:
            raise ValueError(f"Refusing to save an empty dataset to {repo_id!r} (config {config_name!r}).")
        if self.hub:
            HfApi().create_repo(repo_id, repo_type="dataset", private=self.private, exist_ok=True)
            if card is not None:  # first: push_to_hub merges `dataset_info` / `configs` into it
                card.push_to_hub(repo_id, repo_type="dataset")
            dataset.push_to_hub(repo_id, config_name=config_name, split=split, private=self.private)
            return repo_id
        target = Path(self.location(repo_id))
        target.mkdir(parents=True, exist_ok=True)
        data_file = Path(_dataset_dir(config_name)) / DATASET_FILE.format(split=split)
        _atomic_write(target / data_file, lambda tmp: dataset.to_parquet(tmp))
        readme = target / "README.md"
        metadata, body = _read_card(readme)
        if card is not None:
            metadata, body = _split_card(str(card))
        metadata["configs"] = _merge_config(metadata.get("configs", []), config_name, split, data_file)
        _atomic_write(readme, lambda tmp: Path(tmp).write_text(_join_card(metadata, body)))
        return str(target)

    def load_dataset(self, repo_id: str, config_name: str = "default", split: str = "train") -> Dataset:
        """Load one split of an artifact with `datasets.load_dataset`.

        Locally, the parquet file named by the card is loaded by its absolute path: `datasets` caches a local
        folder by its name, so two stores holding the same repo id would otherwise share a cache entry.
        """
        if self.hub:
            return load_dataset(repo_id, config_name, split=split)
        target = Path(self.location(repo_id))
        configs = {c["config_name"]: c for c in _read_card(target / "README.md")[0].get("configs", [])}
        if config_name not in configs:
            raise FileNotFoundError(
                f"No config {config_name!r} in the stored dataset {repo_id!r} at {target}; found {sorted(configs)}"
            )
        files = {f["split"]: f["path"] for f in configs[config_name]["data_files"]}
        if split not in files:
            raise FileNotFoundError(f"No split {split!r} in {repo_id!r} config {config_name!r}; found {sorted(files)}")
        return load_dataset("parquet", data_files={split: str(target / files[split])}, split=split)

    # Internals ------------------------------------------------------------------------------------

    def _publish_folder(self, repo_id: str, folder: str, repo_type: str, message: str) -> None:
        if self.hub:
            api = HfApi()
            api.create_repo(repo_id, repo_type=repo_type, private=self.private, exist_ok=True)
            api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type=repo_type, commit_message=message)
            return
        target = Path(self.location(repo_id))
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
        shutil.copytree(folder, staged, dirs_exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        staged.rename(target)


def _check_repo_id(repo_id: str) -> None:
    parts = repo_id.split("/")
    if not 1 <= len(parts) <= 2 or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"`repo_id` must look like 'name' or 'user/name', got {repo_id!r}")


def _atomic_write(path: Path, write) -> None:
    """Write through `write(tmp_path)` then rename, so a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _split_card(text: str) -> tuple[dict, str]:
    """Card text -> (YAML metadata, markdown body)."""
    if text.startswith("---"):
        _, header, body = text.split("---", 2)
        return yaml.safe_load(header) or {}, body.lstrip("\n")
    return {}, text


def _read_card(path: Path) -> tuple[dict, str]:
    return _split_card(path.read_text()) if path.exists() else ({}, "")


def _join_card(metadata: dict, body: str) -> str:
    return f"---\n{yaml.safe_dump(metadata, sort_keys=False)}---\n\n{body}"


def _merge_config(configs: list[dict], config_name: str, split: str, data_file: Path) -> list[dict]:
    """Add `split` of `config_name` to the card's `configs:` list, as `push_to_hub` does."""
    configs = [dict(c) for c in configs]
    entry = next((c for c in configs if c["config_name"] == config_name), None)
    if entry is None:
        entry = {"config_name": config_name, "data_files": []}
        configs.append(entry)
    files = [f for f in entry["data_files"] if f["split"] != split]
    entry["data_files"] = [*files, {"split": split, "path": str(data_file)}]
    if config_name == "default":
        entry["default"] = True
    return configs
