"""The robustness curves of the book predict the clean pass once for all kinds of noise."""

from __future__ import annotations

import pandas as pd
import pytest

from ambcore import experiments, robustness
from ambcore.config import get_config
from ambcore.noise import NOISE_KINDS
from ambcore.train import train_and_evaluate


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rob") / "run"
    train_and_evaluate(get_config("smoke", max_epochs=1), folder, progress=False)
    return folder


@pytest.mark.parametrize("n_draws", [1, 2])
def test_clean_once_equals_every_kind_at_rate_zero(run_dir, n_draws):
    rates = [0.0, 0.5, 1.0]
    ours = experiments._curves_clean_once(run_dir, rates, n_draws, progress=False)
    reference = robustness.robustness_curve(run_dir, NOISE_KINDS, rates=rates, n_draws=n_draws,
                                            seed=0)  # fmt: skip
    pd.testing.assert_frame_equal(ours[reference.columns], reference)


def test_clean_pass_is_predicted_once(run_dir, monkeypatch):
    calls = []
    real = robustness.robustness_curve

    def counting(run, kind, rates, **kwargs):
        calls.append((kind, tuple(rates)))
        return real(run, kind, rates=rates, **kwargs)

    monkeypatch.setattr(robustness, "robustness_curve", counting)
    frame = experiments._curves_clean_once(run_dir, [0.0, 1.0], 1, progress=False)
    assert sum(0.0 in rates for _, rates in calls) == 1
    assert sorted(frame.loc[frame["rate"] == 0.0, "kind"]) == sorted(NOISE_KINDS)


def test_embedded_grid_keeps_clean_and_full_corruption():
    g = experiments.grid("embedded")
    assert g.rates[0] == 0.0 and g.rates[-1] == 1.0 and len(g.seeds) == 3
