"""AMB_SET (``book --set``) and ``book --param``: how a dry run shrinks the paper preset."""

from __future__ import annotations

import pytest

from ambcore import experiments
from ambcore.book import BookError, overrides_env, parse_chapter_params
from ambcore.config import ConfigError
from ambcore.overrides import from_env
from ambcore.pages import config_from_parameters


def test_set_becomes_the_kernels_amb_set(monkeypatch):
    monkeypatch.delenv("AMB_SET", raising=False)
    env = overrides_env(["max_epochs=1", "patience=1"])
    assert env == {"AMB_SET": "max_epochs=1;patience=1"}
    assert from_env(env) == {"max_epochs": "1", "patience": "1"}
    assert overrides_env([]) == {}
    monkeypatch.setenv("AMB_SET", "max_epochs=3;lr=0.1")  # the caller's, --set wins
    assert from_env(overrides_env(["max_epochs=1"])) == {"max_epochs": "1", "lr": "0.1"}


@pytest.mark.parametrize(
    "bad, match",
    [
        ("max_epoch=1", "unknown config key"),
        ("max_epochs=two", "max_epochs"),
        ("max_epochs", "KEY=VALUE"),
    ],
)
def test_bad_set_names_the_key(bad, match):
    with pytest.raises(ConfigError, match=match):
        overrides_env([bad])


def test_chapters_apply_amb_set_below_their_own_parameters(monkeypatch):
    monkeypatch.setenv("AMB_SET", "max_epochs=1;synthetic_n_train=24")
    cfg = config_from_parameters("paper", "/x/aligned_50.pkl", "", 0)
    assert cfg.max_epochs == 1 and cfg.synthetic_n_train == 24 and cfg.preset == "paper"
    assert config_from_parameters("smoke", "", "", 0, synthetic_n_train=50).synthetic_n_train == 50


def test_amb_set_wins_over_the_recipes_and_gets_its_own_runs_folder(monkeypatch):
    monkeypatch.delenv("AMB_SET", raising=False)
    full_root = experiments.runs_root("paper", {"plm": "/m"})
    assert experiments.cell_overrides("mag-bert", "paper")["max_epochs"] != 1
    monkeypatch.setenv("AMB_SET", "max_epochs=1")
    for cell in experiments.CELL_NAMES:
        assert experiments.cell_config(cell, "paper").max_epochs == 1, cell
    assert experiments.runs_root("paper", {"plm": "/m"}) != full_root
    # the training chapter's AMB run is the ablation's AMB cell (same folder)
    cfg = config_from_parameters("paper", "", "/m", 0)
    shared = experiments.overrides_of(cfg)
    assert shared == {"plm": "/m"}
    root = experiments.runs_root("paper", shared)
    assert experiments.run_dir(cfg, "amb") == root / "amb" / "seed0"


def test_param_values_are_yaml():
    params = parse_chapter_params(["n_seeds=1", "rates=[0.0, 1.0]", "collect_only=true"])
    assert params == {"n_seeds": 1, "rates": [0.0, 1.0], "collect_only": True}
    with pytest.raises(BookError, match="NAME=VALUE"):
        parse_chapter_params(["n_seeds"])
    with pytest.raises(BookError, match="--preset"):
        parse_chapter_params(["preset=paper"])
