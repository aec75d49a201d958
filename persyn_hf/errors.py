"""The mistakes a user can make and fix, as one error type: `persyn-hf` prints its message on one line.

Every message says what is wrong, where (file, column, row or field, and the value) and how to fix it. The CLI
shows it without a traceback (`persyn-hf --debug <verb>` or `PERSYN_HF_DEBUG=1` shows the traceback too); in Python
it is an ordinary exception. Errors that are not a `PersynError` are persyn-hf's own bugs and keep their traceback.
"""

from __future__ import annotations


class PersynError(ValueError):
    """A mistake in a recipe, an input or an output location, which the user can fix."""

    def __init__(self, message: str):
        super().__init__(" ".join(line.strip() for line in str(message).splitlines() if line.strip()))


class ConfigError(PersynError):
    """A recipe or config field holds a value that cannot work."""


class DataError(PersynError):
    """An input dataset breaks its contract: a missing column, a wrong type, a repeated id, no rows, bad text."""


class ArtifactNotFoundError(PersynError, FileNotFoundError):
    """A file, artifact, dataset config or split that a stage reads does not exist."""


class OutputError(PersynError):
    """A stage cannot write where it was asked to: a malformed repo id, a file in the way, no permission."""


def check_utf8(path, what: str, error: type[PersynError] = DataError) -> None:
    """Raise `error` naming the line and column of the first byte of the file `path` that is not UTF-8 (`what` says
    which file it is, e.g. "the recipe"). Reads line by line: sources may be large."""
    with open(path, "rb") as file:
        for number, line in enumerate(file, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as problem:
                raise error(
                    f"{what} {str(path)!r} is not UTF-8 text: byte 0x{line[problem.start]:02x} at line {number}, "
                    f"column {problem.start + 1}; save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)."
                ) from None
