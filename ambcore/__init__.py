"""ambcore: the library behind the Adapted Multimodal BERT (AMB) research book.

The public API (thesis chapter 6):

- configuration: ``Config``, ``get_config``, ``apply_overrides``, ``PRESETS``
- data (6.3.1): ``load_dataset``, ``make_synthetic_dataset``
- seeding: ``seed_everything``
- training and evaluation (6.3.1): ``train_and_evaluate``, ``sentiment_metrics``
- trained models (6.2): ``from_pretrained(path)`` loads a saved model or a run folder's best
  checkpoint (the class is read from the folder); ``model.predict(texts, visual, acoustic)``

Names are imported on first use (module ``__getattr__``), so ``import ambcore`` and the command
line's ``--help`` load neither torch nor transformers.

Importing ambcore first makes OpenMP's waiting threads sleep rather than spin
(``OMP_WAIT_POLICY=PASSIVE`` unless set; ``ambcore.threads``): it must precede torch's import.
"""

from __future__ import annotations

import importlib
import importlib.util
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _distribution_version

from ambcore.threads import set_passive_wait_policy as _set_passive_wait_policy

_set_passive_wait_policy()

try:
    __version__ = _distribution_version("ambcore")
except PackageNotFoundError:  # a checkout on sys.path without an install
    __version__ = "0+unknown"

# public name -> the module that defines it
_LAZY = {
    "AmbError": "ambcore.errors",
    "DataError": "ambcore.errors",
    "ModelConfigError": "ambcore.errors",
    "Config": "ambcore.config",
    "ConfigError": "ambcore.config",
    "PRESETS": "ambcore.config",
    "apply_overrides": "ambcore.config",
    "get_config": "ambcore.config",
    "load_dataset": "ambcore.data.loaders",
    "make_synthetic_dataset": "ambcore.data.synthetic",
    "sentiment_metrics": "ambcore.metrics",
    "seed_everything": "ambcore.seeding",
    "train_and_evaluate": "ambcore.train",
    "from_pretrained": "ambcore.models",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:  # a subpackage used as an attribute (``ambcore.data.types``, ...)
        if name.startswith("_") or importlib.util.find_spec(f"ambcore.{name}") is None:
            raise AttributeError(f"module 'ambcore' has no attribute {name!r}")
        return importlib.import_module(f"ambcore.{name}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access does not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
