"""The robustness curves of the book predict the clean pass once for all kinds of noise."""

from __future__ import annotations

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
def test_clean_pass_is_predicted_once_and_shared_by_every_condition(run_dir, monkeypatch, n_draws):
    calls = []
    real = robustness._predict

    def counting(ev, kind, granularity, rate, seed):
        calls.append((kind, granularity, rate))
        return real(ev, kind, granularity, rate, seed)

    monkeypatch.setattr(robustness, "_predict", counting)
    frame = robustness.robustness_curve(run_dir, NOISE_KINDS, rates=[0.0, 1.0], n_draws=n_draws)
    assert sum(rate == 0.0 for _, _, rate in calls) == 1
    clean = frame[frame["rate"] == 0.0]
    assert set(clean["kind"]) == set(NOISE_KINDS)
    assert clean["corr"].nunique() == 1 and clean["mae"].nunique() == 1
    if n_draws > 1:
        assert (clean["corr_std"] == 0).all()
    noisy = frame[frame["rate"] == 1.0]
    assert len(calls) - 1 == len(noisy) * n_draws


def test_book_curves_use_the_shared_clean_pass(run_dir, tmp_path):
    frame = experiments.robustness_curves(run_dir, [0.0, 1.0], 1)
    reference = robustness.robustness_curve(run_dir, NOISE_KINDS, rates=[0.0, 1.0], n_draws=1,
                                            seed=0)  # fmt: skip
    assert len(frame) == len(reference)
    assert frame["corr"].round(12).tolist() == reference["corr"].round(12).tolist()


def test_embedded_grid_keeps_clean_and_full_corruption():
    g = experiments.grid("embedded")
    assert g.rates[0] == 0.0 and g.rates[-1] == 1.0 and len(g.seeds) == 3
