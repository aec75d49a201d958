"""persyn-hf: personalized data synthesis via router-guided multi-teacher distillation (PerSyn).

Importing the package is light: the stages (`persyn_hf.generate`, `score`, `train_router`, `route`, `select`,
`builders`, `sft`, `evaluation`) are imported when used, and the router is registered with transformers' `AutoConfig`
and `AutoModel` right after transformers loads them (`_RouterRegistration`), whatever the order of the imports.
"""

import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0.dev0"

# transformers' Auto modules -> what to register with them once they are loaded.
_AUTO_MODULES = {
    "transformers.models.auto.configuration_auto": "register_config",
    "transformers.models.auto.modeling_auto": "register_model",
}


def _register(module_name: str) -> None:
    import persyn_hf.router

    getattr(persyn_hf.router, _AUTO_MODULES[module_name])()


class _RouterRegistration(importlib.abc.MetaPathFinder):
    """Registers the router with each of transformers' Auto modules right after that module is imported."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in _AUTO_MODULES:
            return None
        sys.meta_path.remove(self)  # find the module's own spec without this finder
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            _register(fullname)

        spec.loader.exec_module = exec_then_register
        return spec


for _name in _AUTO_MODULES:
    if _name in sys.modules:
        _register(_name)
if not any(isinstance(finder, _RouterRegistration) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RouterRegistration())
