"""persyn-hf: personalized data synthesis via router-guided multi-teacher distillation (PerSyn)."""

__version__ = "0.1.0.dev0"
