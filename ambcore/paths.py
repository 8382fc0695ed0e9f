"""Where things live: one project root plus environment overrides (no absolute paths in code).

- ``AMB_DATA``: the dataset path used when a config says ``data=""`` (the paper preset).
- ``AMB_RUNS``: the folder that holds run folders (default ``<root>/runs``).
- ``AMB_RESULTS``: results files written by the chapters, the tuning records among them
  (default ``<root>/results``).
- ``AMB_CACHE``: generated synthetic datasets and token caches (default ``<root>/.cache``,
  falling back to ``~/.cache/ambcore`` when the package is installed outside a checkout).
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent


def _in_checkout() -> bool:
    return (PROJECT_ROOT / "pyproject.toml").exists()


def runs_dir() -> Path:
    return Path(os.environ.get("AMB_RUNS") or PROJECT_ROOT / "runs")


def results_dir() -> Path:
    return Path(os.environ.get("AMB_RESULTS") or PROJECT_ROOT / "results")


def cache_dir() -> Path:
    env = os.environ.get("AMB_CACHE")
    if env:
        return Path(env)
    if _in_checkout():
        return PROJECT_ROOT / ".cache"
    return Path.home() / ".cache" / "ambcore"


def data_from_env() -> str | None:
    value = os.environ.get("AMB_DATA")
    return value or None
