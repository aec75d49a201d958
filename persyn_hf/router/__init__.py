"""The PerSyn router: a `PreTrainedModel` scoring every teacher for a prompt, loadable with `AutoModel`.

`import persyn_hf` arranges for the router to be registered with `AutoConfig` and `AutoModel` as soon as transformers
loads them, so `AutoModel.from_pretrained(<a saved router>)` returns a `PersynRouterModel` without
`trust_remote_code`; `register()` does it at once. Attributes are imported on first use, so importing this package
costs nothing until a router is used.
"""

import importlib

_EXPORTS = {
    "PersynRouterConfig": "configuration_persyn_router",
    "PersynRouterModel": "modeling_persyn_router",
    "PersynRouterOutput": "modeling_persyn_router",
    "PersynRouterPreTrainedModel": "modeling_persyn_router",
    "bradley_terry_loss": "modeling_persyn_router",
    "reward_pairs": "modeling_persyn_router",
}
__all__ = [*_EXPORTS, "register", "register_config", "register_model"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # transformers' Auto modules first: importing them registers the router (`persyn_hf._RouterRegistration`), which
    # imports the router's modules whole; the other way round, the registration would meet them half-imported.
    for auto_module in ("configuration_auto", "modeling_auto"):
        importlib.import_module(f"transformers.models.auto.{auto_module}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


def register_config() -> None:
    """Register `PersynRouterConfig` with `AutoConfig` (idempotent)."""
    from transformers import AutoConfig

    from .configuration_persyn_router import PersynRouterConfig

    AutoConfig.register(PersynRouterConfig.model_type, PersynRouterConfig, exist_ok=True)


def register_model() -> None:
    """Register `PersynRouterModel` with `AutoModel` (idempotent)."""
    from transformers import AutoModel

    from .configuration_persyn_router import PersynRouterConfig
    from .modeling_persyn_router import PersynRouterModel

    AutoModel.register(PersynRouterConfig, PersynRouterModel, exist_ok=True)


def register() -> None:
    """Register the router with `AutoConfig` and `AutoModel` now."""
    register_config()
    register_model()
