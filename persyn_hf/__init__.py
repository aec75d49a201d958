"""persyn-hf: personalized data synthesis via router-guided multi-teacher distillation (PerSyn)."""

import persyn_hf.router  # noqa: F401  (registers the router with AutoConfig / AutoModel)

__version__ = "0.1.0.dev0"
