"""The durable results store: every sample is appended to disk as it arrives, so a re-run skips it.

Layout of a results directory:

- `results.jsonl`: one JSON record per line, keyed by (`prompt_id`, `teacher`, `sample_index`), written as it
  arrives: at once, or inside an event loop at the end of the loop iteration it arrived in, before any further
  answer is read, with one system call for all the records of that iteration. A record torn by a killed process
  is cut off when the store reopens; nothing else is lost.
- `manifest.json`: the fingerprint (`model_id`, a local teacher's `model_path`, and generation parameters) of each
  teacher with stored samples, written when its first sample is stored. Reopening the store with a teacher whose
  fingerprint changed is an error: its stored samples answer different settings. Each record also holds a hash of
  the request it answers (see `generate.Job.request`).
- `.lock`: held while a run writes, so two runs never write one store.

A folder that is not empty is opened only if it is a results store: it has a `manifest.json` of this shape, or holds
only these files. Every record is checked before a torn one is cut off, and a manifest is rewritten only once read
as one, so nothing of another program is changed. The manifest is written as the artifact store writes its files:
atomically, and readable by others (0644).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

from persyn_hf.errors import ConfigError, OutputError
from persyn_hf.store import atomic_write
from persyn_hf.teachers.spec import TeacherSpec

RESULTS_FILE = "results.jsonl"
MANIFEST_FILE = "manifest.json"
LOCK_FILE = ".lock"
KEY_FIELDS = ("prompt_id", "teacher", "sample_index")
FINGERPRINT = re.compile(r"[0-9a-f]{16}")


def teacher_fingerprint(spec: TeacherSpec) -> str:
    """What a stored sample depends on: the model (for a `local` teacher, its weights' folder too) and its generation
    parameters."""
    model = {"model_id": spec.model_id, **({"model_path": spec.model_path} if spec.backend == "local" else {})}
    payload = json.dumps({**model, "generation": spec.generation}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class ResultStore:
    """Append-only on-disk store of generated samples, opened for one run at a time.

    Use as a context manager: `with ResultStore(path, teachers) as store: ...`.
    """

    def __init__(self, directory: str | Path, teachers: Iterable[TeacherSpec]):
        self.directory = Path(directory)
        self.fingerprints = {spec.name: teacher_fingerprint(spec) for spec in teachers}
        self.records: dict[tuple, dict] = {}
        self._manifest: dict[str, str] = {}  # the fingerprints of the teachers with stored samples
        self._pending: list[bytes] = []  # lines not written yet (inside an event loop, until its iteration ends)
        self._write_error: OSError | None = None  # of a write at the end of a loop iteration, raised by `append`
        self._file = None
        self._lock = None

    def __enter__(self) -> ResultStore:
        self._check_folder()
        self.directory.mkdir(parents=True, exist_ok=True)
        lock = self.directory / LOCK_FILE
        created = not lock.exists()
        self._lock = open(lock, "w")  # noqa: SIM115 - held for the store's lifetime
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise OutputError(
                f"Another run is writing to the results store {str(self.directory)!r}; wait for it to end, or use "
                "another `results_dir`."
            ) from None
        try:
            self._manifest = self._read_manifest()
            self._load()
            self._check_fingerprints()
        except Exception:
            if created:  # a folder that is not a store is left as it was
                lock.unlink()
            self._release()
            raise
        self._file = open(self.directory / RESULTS_FILE, "ab", buffering=0)  # noqa: SIM115 - `flush` writes
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self._file is not None:
                self.flush()
                os.fsync(self._file.fileno())
            if self._write_error is not None:
                raise self._write_error
        finally:
            if self._file is not None:
                self._file.close()
                self._file = None
            self._release()

    def _release(self) -> None:
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()

    def _check_folder(self) -> None:
        """Refuse a folder with files other than a store's and no manifest: it is not a results store."""
        if not self.directory.is_dir() or (self.directory / MANIFEST_FILE).exists():
            return
        own = (RESULTS_FILE, LOCK_FILE)
        foreign = sorted(
            path.name
            for path in self.directory.iterdir()
            if path.name not in own and not path.name.startswith(f".{MANIFEST_FILE}-")  # a killed manifest write
        )
        if foreign:
            raise OutputError(
                f"`results_dir` {str(self.directory)!r} is not a results store: it holds {foreign[:5]} and no "
                f"{MANIFEST_FILE}; choose a new or empty folder as `results_dir`."
            )

    def _read_manifest(self) -> dict[str, str]:
        path = self.directory / MANIFEST_FILE
        if not path.exists():
            return {}
        try:
            manifest = json.loads(path.read_bytes())
        except ValueError:
            manifest = None
        if not isinstance(manifest, dict) or not all(
            isinstance(value, str) and FINGERPRINT.fullmatch(value) for value in manifest.values()
        ):
            raise OutputError(
                f"{str(path)!r} is not a results store's manifest (a JSON object of teacher fingerprints): choose "
                f"another `results_dir`, or delete {str(self.directory)!r} if it is a damaged results store."
            )
        return manifest

    def _check_fingerprints(self) -> None:
        """Refuse teachers whose stored samples were generated with other settings."""
        stored = {teacher for _, teacher, _ in self.records}
        changed = [
            name
            for name, fingerprint in self.fingerprints.items()
            if name in stored and self._manifest.get(name, fingerprint) != fingerprint
        ]
        if changed:
            raise ConfigError(
                f"Teachers {changed} changed `model_id`, `model_path` or `generation` since their samples were stored "
                f"in {str(self.directory)!r}; use a new `results_dir`, or delete that directory to regenerate."
            )

    def _write_manifest(self) -> None:
        text = json.dumps(self._manifest, indent=2, sort_keys=True)
        atomic_write(self.directory / MANIFEST_FILE, lambda tmp: Path(tmp).write_text(text))

    def _load(self) -> None:
        """Read every complete record, all checked first; then cut off a last line torn by a killed process."""
        path = self.directory / RESULTS_FILE
        if not path.exists():
            return
        data = path.read_bytes()
        complete = data.rfind(b"\n") + 1
        for number, line in enumerate(data[:complete].splitlines(), start=1):
            try:
                record = json.loads(line)
                self.records.setdefault(self.key(record), record)
            except (ValueError, TypeError, KeyError) as error:
                raise OutputError(
                    f"{str(path)!r} line {number} is not a results record, a JSON object with {list(KEY_FIELDS)} "
                    f"({type(error).__name__}: {error}): choose another `results_dir`, or remove that line if "
                    f"{str(self.directory)!r} is a damaged results store."
                ) from None
        if complete < len(data):
            with open(path, "r+b") as file:
                file.truncate(complete)

    @staticmethod
    def key(record: dict) -> tuple:
        return record["prompt_id"], record["teacher"], record["sample_index"]

    def get(self, prompt_id, teacher: str, sample_index: int) -> dict | None:
        return self.records.get((prompt_id, teacher, sample_index))

    def append(self, record: dict) -> None:
        """Store one sample: written to the file before this returns or, inside an event loop, when the loop iteration
        ends (all the samples of one iteration with one system call, before any further answer is read)."""
        if self._write_error is not None:
            raise self._write_error
        key = self.key(record)
        if key in self.records:
            raise ValueError(f"Sample {key} is already stored; the store never holds a key twice")
        fingerprint = self.fingerprints.get(record["teacher"])
        if fingerprint is not None and self._manifest.get(record["teacher"]) != fingerprint:  # its first sample
            self._manifest[record["teacher"]] = fingerprint
            self._write_manifest()
        self._pending.append(json.dumps(record, ensure_ascii=False).encode() + b"\n")
        self.records[key] = record
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if len(self._pending) == 1:
            loop.call_soon(self._flush_at_iteration_end)

    def _flush_at_iteration_end(self) -> None:
        try:
            self.flush()
        except OSError as error:  # a loop callback's error would only be logged: the next `append` raises it
            self._write_error = error

    def flush(self) -> None:
        """Write the samples not written yet."""
        if not self._pending or self._file is None:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        if self._file.write(data) != len(data):  # a full disk: a torn line is cut off when the store reopens
            raise OSError(f"Could not write all samples to {str(self.directory / RESULTS_FILE)!r}")
