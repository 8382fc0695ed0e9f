"""ambcore: the library behind the Adapted Multimodal BERT (AMB) research book.

The public API (thesis chapter 6):

- configuration: ``Config``, ``get_config``, ``apply_overrides``, ``PRESETS``
- data (6.3.1): ``load_dataset``, ``make_synthetic_dataset``
- seeding: ``seed_everything``
- training and evaluation (6.3.1): ``train_and_evaluate``, ``sentiment_metrics``

Importing ambcore first makes OpenMP's waiting threads sleep rather than spin
(``OMP_WAIT_POLICY=PASSIVE`` unless set; ``ambcore.threads``): it must precede torch's import.
"""

from ambcore.threads import set_passive_wait_policy as _set_passive_wait_policy

_set_passive_wait_policy()

from ambcore.config import PRESETS, Config, ConfigError, apply_overrides, get_config  # noqa: E402
from ambcore.data import load_dataset, make_synthetic_dataset  # noqa: E402
from ambcore.errors import AmbError, DataError  # noqa: E402
from ambcore.metrics import sentiment_metrics  # noqa: E402
from ambcore.seeding import seed_everything  # noqa: E402
from ambcore.train import train_and_evaluate  # noqa: E402

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
