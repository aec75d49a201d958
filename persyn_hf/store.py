"""The artifact store: one small API to save, load and push every persyn-hf artifact.

By default artifacts land in a local directory laid out like the Hub, ``<root>/<repo_id>/``, which
``from_pretrained(path)`` and ``load_dataset(path)`` read back exactly as they read a Hub repo. With
``hub=True`` the same calls push to the Hugging Face Hub. The token is never handled here: the Hub
client reads it from ``HF_TOKEN`` or the ``hf auth login`` cache, so it cannot reach a written file.

A local artifact folder may hold files of the user's own: the store records the files it writes in
``.persyn-hf-files.json``, replaces only those when it saves again (so no stale weights survive a re-save), never
deletes another file, and refuses to overwrite one. Files are written atomically and readable by others (0644).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from persyn_hf.configs import process_state
from persyn_hf.contracts import validate
from persyn_hf.errors import ArtifactNotFoundError, ConfigError, DataError, OutputError

if TYPE_CHECKING:
    from datasets import Dataset
    from huggingface_hub import DatasetCard, ModelCard

DATASET_FILE = "{split}-00000-of-00001.parquet"
MANIFEST = ".persyn-hf-files.json"
FILE_MODE, DIR_MODE = 0o644, 0o755
# Files a saved model and its tokenizer hold: one of the user's own under such a name stops a stage before it trains.
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
# Files that unpickle code when loaded: never published (the training arguments go out as JSON instead).
PICKLE_SUFFIXES = (".bin", ".pkl", ".pickle", ".pt", ".pth")


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
        _check_repo_id(repo_id)
        return repo_id if self.hub else str(self.root / repo_id)

    def resolve(self, name: str, argument: str, hub_ids: bool = False) -> str:
        """`name` as a local folder if it is one, else the location of the artifact `name` in the store; with
        `hub_ids`, a name that is neither stays a Hub id (e.g. a public student or reward model) unless offline."""
        if os.path.isdir(name):
            return name
        if _is_repo_id(name):
            location = self.location(name)
            if self.hub or os.path.isdir(location):
                return location
            if hub_ids and (not _offline() or _in_hub_cache(name)):
                return name
        where = f"is neither a local folder nor an artifact in the store at {str(self.root)!r}"
        if hub_ids and _offline():
            raise ArtifactNotFoundError(
                f"`{argument}` {name!r} {where} (and the Hub is offline: HF_HUB_OFFLINE is set, and it is not in the "
                "local Hugging Face cache); download it while online, or pass a folder or the repo id an earlier stage "
                "saved to."
            )
        raise ArtifactNotFoundError(
            f"`{argument}` {name!r} {where}; pass a folder, the repo id an earlier stage saved to, or set `hub: true` "
            "for a Hub repo."
        )

    def resolve_model(self, name: str, argument: str, hub_ids: bool = False, model_type: str | None = None) -> str:
        """`resolve` for a model: a local folder must hold one (`config.json`, or a PEFT adapter's
        `adapter_config.json`), of `model_type` when given. Checked before anything loads it."""
        location = self.resolve(name, argument, hub_ids)
        if not os.path.isdir(location):  # a Hub id: the Hub checks it
            return location
        config = Path(location, "config.json")
        if not config.is_file() and not Path(location, "adapter_config.json").is_file():
            raise ArtifactNotFoundError(
                f"`{argument}` {name!r} is not a model: {location!r} holds no `config.json`; pass the folder "
                "`save_pretrained` wrote, or the repo id an earlier stage saved it to."
            )
        found = json.loads(config.read_text()).get("model_type") if config.is_file() else None
        if model_type is not None and found != model_type:
            raise ConfigError(
                f"`{argument}` {name!r} is a {found!r} model, not a {model_type!r} one: pass the folder or repo id "
                f"of a {model_type!r} model."
            )
        return location

    def check_output(self, repo_id: str, argument: str, files: Iterable[str] = ()) -> None:
        """Raise an `OutputError` now if the artifact `repo_id` could not be written later: a malformed repo id, an
        offline Hub, a file where its folder should be, a folder this process may not write to, or a file of the
        user's own where its card (`README.md`) or one of `files` would go."""
        try:
            _check_repo_id(repo_id)
        except OutputError as error:
            raise OutputError(f"`{argument}`: {error}") from None
        if self.hub:
            if _offline():
                raise OutputError(
                    f"`{argument}` {repo_id!r} cannot be pushed: `hub: true` but the Hub is offline (HF_HUB_OFFLINE is "
                    "set); unset it, or write to the local store (`hub: false`)."
                )
            return
        target = self.root / repo_id
        check_writable(target, f"`{argument}` {repo_id!r}", "choose another repo id or `store_root`")
        try:
            _foreign_files(target, ["README.md", *files])
        except OutputError as error:
            raise OutputError(f"`{argument}` {repo_id!r}: {error}") from None

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
        (sharded weights gathered), with `card` as its README; sub-folders (checkpoints) are left out.

        Pickle files (`training_args.bin`, `*.pt`, ...) are refused: nothing published may run code when loaded.
        """
        files = [path for path in Path(folder).iterdir() if path.is_file()]
        pickles = sorted(path.name for path in files if path.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise OutputError(
                f"Refusing to publish pickle file(s) {pickles} from {str(folder)!r}: save weights as safetensors and "
                "settings as JSON."
            )
        with tempfile.TemporaryDirectory() as staging:
            for path in files:
                shutil.copy(path, staging)
            if card is not None:
                card.save(os.path.join(staging, "README.md"))
            self._publish_folder(repo_id, staging, repo_type="model", message="Upload model with persyn-hf")
        return self.location(repo_id)

    def save_files(self, repo_id: str, files: dict[str, str | Path], repo_type: str = "dataset") -> None:
        """Add files (`{path_in_repo: local_path}`) to an existing artifact, e.g. a chart beside a card."""
        if self.hub:
            from huggingface_hub import HfApi

            api = HfApi()
            for path_in_repo, local_path in files.items():
                api.upload_file(
                    path_or_fileobj=str(local_path), path_in_repo=path_in_repo, repo_id=repo_id, repo_type=repo_type
                )
            return
        self.check_output(repo_id, "repo_id")
        target = Path(self.location(repo_id))
        with _claimed(target, files):
            for path_in_repo, local_path in files.items():
                atomic_write(target / path_in_repo, lambda tmp, source=local_path: shutil.copy(source, tmp))

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
            raise DataError(f"Refusing to save an empty dataset to {repo_id!r} (config {config_name!r}).")
        if self.hub:
            from huggingface_hub import HfApi

            HfApi().create_repo(repo_id, repo_type="dataset", private=self.private, exist_ok=True)
            if card is not None:  # first: push_to_hub merges `dataset_info` / `configs` into it
                card.push_to_hub(repo_id, repo_type="dataset")
            dataset.push_to_hub(repo_id, config_name=config_name, split=split, private=self.private)
            return repo_id
        self.check_output(repo_id, "repo_id")
        target = Path(self.location(repo_id))
        path = data_file(config_name, split)
        readme = target / "README.md"
        with _claimed(target, [path, "README.md"]):
            atomic_write(target / path, lambda tmp: dataset.to_parquet(tmp))
            metadata, body = _read_card(readme)
            if card is not None:
                metadata, body = _split_card(str(card))
            metadata["configs"] = _merge_config(metadata.get("configs", []), config_name, split, path)
            atomic_write(readme, lambda tmp: Path(tmp).write_text(_join_card(metadata, body)))
        return str(target)

    def save_dataset_from_main(self, repo_id: str, dataset: Dataset, **kwargs) -> str:
        """`save_dataset` (same keyword arguments) on the main process only, the others waiting for it: a stage under
        `accelerate launch` whose processes all hold the whole dataset writes it once. Returns `location`."""

        state = process_state()
        if state.is_main_process:
            self.save_dataset(repo_id, dataset, **kwargs)
        state.wait_for_everyone()
        return self.location(repo_id)

    def load_dataset(
        self,
        repo_id: str,
        config_name: str = "default",
        split: str = "train",
        contract: str | None = None,
        required: tuple[str, ...] | None = None,
    ) -> Dataset:
        """Load one split of an artifact with `datasets.load_dataset`, checked against its `contract` when given
        (with `required` columns instead of the contract's when the reader needs fewer).

        Locally, the parquet file named by the card is loaded by its absolute path: `datasets` caches a local
        folder by its name, so two stores holding the same repo id would otherwise share a cache entry.
        """
        source = f"{repo_id!r}, config {config_name!r}, split {split!r}"
        dataset = self._load(repo_id, config_name, split)
        if contract is not None:
            validate(dataset, contract, source=source, required=required)
        return dataset

    def _load(self, repo_id: str, config_name: str, split: str) -> Dataset:
        import pyarrow.parquet as pq
        from datasets import load_dataset

        if self.hub:
            try:
                return load_dataset(repo_id, config_name, split=split)
            except (ConnectionError, FileNotFoundError, ValueError) as error:  # offline, no such repo, config, split
                raise ArtifactNotFoundError(
                    f"Cannot load {repo_id!r} config {config_name!r} split {split!r} from the Hub: {error}"
                ) from error
        target = Path(self.location(repo_id))
        if not (target / "README.md").is_file():
            raise ArtifactNotFoundError(
                f"No dataset {repo_id!r} in the store at {str(self.root)!r}: write it with the stage that produces "
                "it, or fix the repo id or `store_root`."
            )
        configs = {c["config_name"]: c for c in _read_card(target / "README.md")[0].get("configs", [])}
        if config_name not in configs:
            raise ArtifactNotFoundError(
                f"No config {config_name!r} in the stored dataset {repo_id!r} at {target}; found {sorted(configs)}"
            )
        files = {f["split"]: f["path"] for f in configs[config_name]["data_files"]}
        if split not in files:
            raise ArtifactNotFoundError(
                f"No split {split!r} in {repo_id!r} config {config_name!r}; found {sorted(files)}"
            )
        path = target / files[split]
        where = f"{repo_id!r} config {config_name!r} split {split!r} ({path})"
        try:
            if pq.read_metadata(path).num_rows:  # `datasets` fails on a parquet file without rows
                return load_dataset("parquet", data_files={split: str(path)}, split=split)
        except Exception as error:  # a missing, truncated or foreign file: the user's to fix, not a crash
            cause = error.__cause__ or error  # `datasets` wraps the reader's error in a generic one
            raise DataError(
                f"Cannot read {where}: {type(cause).__name__}: {cause}; write it again with the stage that produces it."
            ) from error
        raise DataError(f"The dataset {where} has no rows: write it again with the stage that produces it.")

    # Internals ------------------------------------------------------------------------------------

    def _publish_folder(self, repo_id: str, folder: str, repo_type: str, message: str) -> None:
        if self.hub:
            from huggingface_hub import HfApi

            api = HfApi()
            api.create_repo(repo_id, repo_type=repo_type, private=self.private, exist_ok=True)
            api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type=repo_type, commit_message=message)
            return
        self.check_output(repo_id, "repo_id")
        target = Path(self.location(repo_id))
        written = sorted(str(path.relative_to(folder)) for path in Path(folder).rglob("*") if path.is_file())
        foreign = _foreign_files(target, written)
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
        try:
            shutil.copytree(folder, staged, dirs_exist_ok=True)
            for name in foreign:  # the user's own files stay where they were
                (staged / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(target / name, staged / name)
            (staged / MANIFEST).write_text(json.dumps(written, indent=1))
            _make_readable(staged)
            _swap(staged, target)
        finally:
            shutil.rmtree(staged, ignore_errors=True)


def data_file(config_name: str = "default", split: str = "train") -> str:
    """The path of a split of a config in a dataset artifact, as `Dataset.push_to_hub` lays it out."""
    return str(Path("data" if config_name == "default" else config_name) / DATASET_FILE.format(split=split))


def check_writable(folder: str | Path, what: str, fix: str) -> None:
    """Raise an `OutputError` if `folder` could not be created and written to: a file stands where it or a folder
    above it should be, or the closest existing folder is not writable. `what` names it, `fix` is the way out."""
    folder = Path(folder).absolute()
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    if not existing.is_dir():
        raise OutputError(f"{what} cannot be written: {str(existing)!r} is a file, not a folder; move it or {fix}.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{what} cannot be written: no write permission on {str(existing)!r}; {fix}.")


def _offline() -> bool:
    from huggingface_hub import constants

    return constants.is_offline_mode()


def _in_hub_cache(repo_id: str) -> bool:
    """Whether a model (or adapter) `repo_id` is in the local Hugging Face cache, so loads it offline."""
    from huggingface_hub import try_to_load_from_cache

    return any(
        isinstance(try_to_load_from_cache(repo_id, name), str) for name in ("config.json", "adapter_config.json")
    )


def _is_repo_id(name: str) -> bool:
    parts = name.split("/")
    return 1 <= len(parts) <= 2 and not any(p in ("", ".", "..") for p in parts)


def _check_repo_id(repo_id: str) -> None:
    if not _is_repo_id(repo_id):
        raise OutputError(f"`repo_id` must look like 'name' or 'user/name', got {repo_id!r}")


def _manifest(target: Path) -> list[str]:
    path = target / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else []


def _foreign_files(target: Path, written: Iterable[str]) -> list[str]:
    """The files in `target` that the store did not write; raise if the new artifact would overwrite one."""
    if not target.is_dir():
        return []
    ours = {*_manifest(target), MANIFEST}
    foreign = sorted(
        str(path.relative_to(target)) for path in target.rglob("*") if path.is_file() and path.name != MANIFEST
    )
    foreign = [name for name in foreign if name not in ours]
    clashes = sorted(set(foreign) & set(written))
    if clashes:
        raise OutputError(
            f"{str(target)!r} holds file(s) {clashes} that persyn-hf did not write; saving would overwrite them: move "
            "them away, or choose another repo id or `store_root`."
        )
    return foreign


class _claimed:
    """Record files about to be written into an artifact folder in its manifest (after checking none is foreign)."""

    def __init__(self, target: Path, names: Iterable[str]):
        self.target, self.names = target, [str(name) for name in names]

    def __enter__(self) -> None:
        _foreign_files(self.target, self.names)
        self.target.mkdir(parents=True, exist_ok=True)
        self.target.chmod(DIR_MODE)

    def __exit__(self, *exc) -> None:
        manifest = sorted({*_manifest(self.target), *self.names})
        atomic_write(self.target / MANIFEST, lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=1)))


def _swap(staged: Path, target: Path) -> None:
    """Put the folder `staged` in the place of `target` (whose old content is removed once the swap is done)."""
    if not target.exists():
        staged.rename(target)
        return
    old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-old-"))
    old.rmdir()
    target.rename(old)
    staged.rename(target)
    shutil.rmtree(old)


def _make_readable(folder: Path) -> None:
    folder.chmod(DIR_MODE)
    for path in folder.rglob("*"):
        path.chmod(DIR_MODE if path.is_dir() else FILE_MODE)


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """Write through `write(tmp_path)` then rename, so a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, FILE_MODE)
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


def _merge_config(configs: list[dict], config_name: str, split: str, path: str) -> list[dict]:
    """Add `split` of `config_name` to the card's `configs:` list, as `push_to_hub` does."""
    configs = [dict(c) for c in configs]
    entry = next((c for c in configs if c["config_name"] == config_name), None)
    if entry is None:
        entry = {"config_name": config_name, "data_files": []}
        configs.append(entry)
    files = [f for f in entry["data_files"] if f["split"] != split]
    entry["data_files"] = [*files, {"split": split, "path": path}]
    if config_name == "default":
        entry["default"] = True
    return configs
