"""ambcore: the library behind the Adapted Multimodal BERT (AMB) research book.

The public API (thesis chapter 6):

- configuration: ``Config``, ``get_config``, ``apply_overrides``, ``PRESETS``
- data (6.3.1): ``load_dataset``, ``make_synthetic_dataset``
- seeding: ``seed_everything``
"""

from ambcore.config import PRESETS, Config, ConfigError, apply_overrides, get_config
from ambcore.errors import AmbError, DataError
from ambcore.seeding import seed_everything

__all__ = [
    "AmbError",
    "Config",
    "ConfigError",
    "DataError",
    "PRESETS",
    "apply_overrides",
    "get_config",
    "seed_everything",
]
