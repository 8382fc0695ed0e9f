"""``AMB_SET``: config values that every chapter and every run of a book applies.

``python -m ambcore book --set KEY=VALUE ...`` puts its assignments into the kernels'
environment as ``AMB_SET="KEY=VALUE;KEY=VALUE"``; a chapter's config
(``ambcore.pages.config_from_parameters``) and every experiment cell
(``ambcore.experiments.cell_overrides``) apply them last, so that they win over a preset and
over the baselines' recipes alike. Its use is a dry run: the paper preset with only the sizes
shrunk (``synthetic_n_train``, ``max_epochs``, ``patience``, ...). Runs made under ``AMB_SET``
live in their own runs folder (``ambcore.experiments.runs_root``), never beside full runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from ambcore.config import ConfigError, get_config

__all__ = ["ENV_VAR", "parse_assignments", "encode", "from_env"]

ENV_VAR = "AMB_SET"


def parse_assignments(items: Iterable[str], source: str = "--set") -> dict[str, str]:
    """``["k=v", ...]`` -> ``{"k": "v"}``; keys are checked against ``Config`` (values are typed
    where a config is built)."""
    pairs: dict[str, str] = {}
    for item in items:
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise ConfigError(f"{source}: {item!r} is not of the form KEY=VALUE")
        key, value = item.split("=", 1)
        pairs[key.strip()] = value.strip()
    get_config("embedded", **pairs)  # unknown keys and ill-typed values fail here, by name
    return pairs


def encode(pairs: Mapping[str, object]) -> str:
    """The ``AMB_SET`` value for ``pairs`` (``;``-separated ``KEY=VALUE``)."""
    for key, value in pairs.items():
        if ";" in f"{key}={value}":
            raise ConfigError(f"--set {key}={value!r}: a value cannot contain ';'")
    return ";".join(f"{key}={value}" for key, value in pairs.items())


def from_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The assignments of ``AMB_SET`` (empty when unset)."""
    env = os.environ if env is None else env
    text = env.get(ENV_VAR, "")
    return parse_assignments(text.replace("\n", ";").split(";"), source=ENV_VAR) if text else {}
