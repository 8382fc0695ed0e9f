"""ambcore: the library behind the Adapted Multimodal BERT (AMB) research book.

The public API (thesis chapter 6):

- configuration: ``Config``, ``get_config``, ``apply_overrides``, ``PRESETS``
- data (6.3.1): ``load_dataset``, ``make_synthetic_dataset``
- seeding: ``seed_everything``
- training and evaluation (6.3.1): ``train_and_evaluate``, ``sentiment_metrics``
"""

from ambcore.config import PRESETS, Config, ConfigError, apply_overrides, get_config
from ambcore.data import load_dataset, make_synthetic_dataset
from ambcore.errors import AmbError, DataError
from ambcore.metrics import sentiment_metrics
from ambcore.seeding import seed_everything
from ambcore.train import train_and_evaluate

__all__ = [
    "AmbError",
    "Config",
    "ConfigError",
    "DataError",
    "PRESETS",
    "apply_overrides",
    "get_config",
    "load_dataset",
    "make_synthetic_dataset",
    "seed_everything",
    "sentiment_metrics",
    "train_and_evaluate",
]
