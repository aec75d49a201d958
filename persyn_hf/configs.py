"""The vocabulary every stage's config shares: field checks, the dtype rule, renamed fields, and the process state.

**dtype.** Every stage that *runs* a model (score, route, select, eval, local teachers) loads it with `dtype: auto`,
in the dtype its weights were saved in: a bfloat16 checkpoint stays bfloat16 (half the memory), a router trained in
float32 stays float32. Stages that *train* weights (train-router, sft) load them in `float32`, the default of TRL's
`ModelConfig`, and get bfloat16 speed from mixed precision (`bf16: true`) instead.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Sequence

from persyn_hf.errors import ConfigError

DTYPES = ("auto", "bfloat16", "float16", "float32")
INFERENCE_DTYPE = "auto"
TRAINING_DTYPE = "float32"


def check_choice(name: str, value, choices: Sequence) -> None:
    """Raise a `ConfigError` naming `name`, `value`, the valid choices and the closest one."""
    if value in choices:
        return
    close = difflib.get_close_matches(str(value), [str(choice) for choice in choices], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"`{name}` must be one of {list(choices)}, got {value!r}{hint}.")


def check_positive(config, *names: str) -> None:
    """Raise a `ConfigError` for the first of `names` whose value is below 1."""
    for name in names:
        if getattr(config, name) < 1:
            raise ConfigError(f"`{name}` must be at least 1, got {getattr(config, name)!r}")


def check_non_negative(config, *names: str) -> None:
    """Raise a `ConfigError` for the first of `names` whose value is negative."""
    for name in names:
        if getattr(config, name) < 0:
            raise ConfigError(f"`{name}` must be non-negative, got {getattr(config, name)!r}")


def renamed(config, old: str, new: str, default=None) -> None:
    """Carry a value given under a field's old name over to its new name, with a deprecation warning.

    Old names are accepted for one release: `old` is declared in the config with a `None` default, and this moves
    its value to `new` (an error if both were set to different values).
    """
    value = getattr(config, old)
    if value is None:
        return
    warnings.warn(f"`{old}` is deprecated and will be removed; use `{new}`.", FutureWarning, stacklevel=3)
    if getattr(config, new) not in (default, value):
        raise ConfigError(f"Both `{old}` (deprecated) and `{new}` are set, to different values: keep `{new}` only.")
    setattr(config, new, value)
    setattr(config, old, None)


def process_state():
    """This process's place in a multi-process launch (`accelerate launch`, `torchrun`): accelerate's `PartialState`,
    told to run on CPU on a machine without an accelerator (else each process of a CPU launch would run alone)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.accelerator.is_available())
