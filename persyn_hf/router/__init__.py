"""The PerSyn router: a `PreTrainedModel` scoring every teacher for a prompt, loadable with `AutoModel`.

Importing this package (which `import persyn_hf` does) registers the router with `AutoConfig` and `AutoModel`, so
`AutoModel.from_pretrained(<a saved router>)` returns a `PersynRouterModel` without `trust_remote_code`.
"""

from transformers import AutoConfig, AutoModel

from .configuration_persyn_router import PersynRouterConfig
from .modeling_persyn_router import (
    PersynRouterModel,
    PersynRouterOutput,
    PersynRouterPreTrainedModel,
    bradley_terry_loss,
    reward_pairs,
)

__all__ = [
    "PersynRouterConfig",
    "PersynRouterModel",
    "PersynRouterOutput",
    "PersynRouterPreTrainedModel",
    "bradley_terry_loss",
    "reward_pairs",
]

AutoConfig.register(PersynRouterConfig.model_type, PersynRouterConfig, exist_ok=True)
AutoModel.register(PersynRouterConfig, PersynRouterModel, exist_ok=True)
