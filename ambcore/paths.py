"""Where things live: one project root plus environment overrides (no absolute paths in code).

``PROJECT_ROOT`` is where the specs (``experiments/*.yaml``) and the reference files
(``results/``: the thesis' tables, the literature, tuning records) are read from:

- in a checkout (``ambcore/`` beside ``pyproject.toml`` and ``experiments/``; an editable
  install too): the checkout;
- in an installed package (``pip install .``, a wheel): ``ambcore/_project/``, where the build
  puts copies of those files (``setup.py``). Runs and results are then written under the
  current folder, never into the installation.

Environment overrides:

- ``AMB_DATA``: the dataset path used when a config says ``data=""`` (the paper preset).
- ``AMB_RUNS``: the folder that holds run folders (default ``<root>/runs`` in a checkout,
  ``./runs`` when installed).
- ``AMB_RESULTS``: results files written by the chapters, the tuning records among them
  (default ``<root>/results`` in a checkout, ``./results`` when installed).
- ``AMB_CACHE``: generated synthetic datasets and token caches (default ``<root>/.cache``,
  falling back to ``~/.cache/ambcore`` when the package is installed outside a checkout).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "PACKAGE_DIR",
    "CHECKOUT_ROOT",
    "IN_CHECKOUT",
    "PROJECT_ROOT",
    "PACKAGE_DATA_DIR",
    "runs_dir",
    "results_dir",
    "cache_dir",
    "data_from_env",
]

PACKAGE_DIR = Path(__file__).resolve().parent
CHECKOUT_ROOT = PACKAGE_DIR.parent
PACKAGE_DATA_DIR = PACKAGE_DIR / "_project"  # an installed package's experiments/ and results/


def _is_checkout(root: Path) -> bool:
    return (root / "pyproject.toml").is_file() and (root / "experiments").is_dir()


IN_CHECKOUT = _is_checkout(CHECKOUT_ROOT)
PROJECT_ROOT = CHECKOUT_ROOT if IN_CHECKOUT else PACKAGE_DATA_DIR


def _working_root() -> Path:
    """Where runs and results go by default: the checkout, or the current folder."""
    return PROJECT_ROOT if IN_CHECKOUT else Path.cwd()


def runs_dir() -> Path:
    return Path(os.environ.get("AMB_RUNS") or _working_root() / "runs")


def results_dir() -> Path:
    return Path(os.environ.get("AMB_RESULTS") or _working_root() / "results")


def cache_dir() -> Path:
    env = os.environ.get("AMB_CACHE")
    if env:
        return Path(env)
    if IN_CHECKOUT:
        return PROJECT_ROOT / ".cache"
    return Path.home() / ".cache" / "ambcore"


def data_from_env() -> str | None:
    value = os.environ.get("AMB_DATA")
    return value or None
