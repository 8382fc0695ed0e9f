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

    def counting(ev, kind, granularity, rate, seed, keep=None):
        calls.append((kind, granularity, rate))
        return real(ev, kind, granularity, rate, seed, keep)

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
    reference = robustness.robustness_curve(
        run_dir, NOISE_KINDS, rates=[0.0, 1.0], n_draws=1, seed=0
    )
    assert len(frame) == len(reference)
    assert frame["corr"].round(12).tolist() == reference["corr"].round(12).tolist()


def test_embedded_grid_keeps_clean_and_full_corruption():
    g = experiments.grid("embedded")
    assert g.rates[0] == 0.0 and g.rates[-1] == 1.0 and len(g.seeds) == 5


def test_the_noisy_predictions_are_kept_and_compared(run_dir):
    """The book's curves keep each run's per-utterance predictions at the highest rate, whose
    metrics are the curve's first draw; the chapter's tests compare those."""
    import numpy as np

    from ambcore.metrics import sentiment_metrics

    frame = experiments.robustness_curves(run_dir, [0.0, 1.0], 1)
    cell = robustness.robustness_predictions([run_dir], "visual")
    ((seed, preds),) = cell.items()
    at_max = frame[
        (frame["kind"] == "visual") & (frame["granularity"] == "step") & (frame["rate"] == 1.0)
    ]
    assert sentiment_metrics(preds["y_pred"], preds["y_true"])["corr"] == pytest.approx(
        at_max["corr"].iloc[0]
    )
    assert set(robustness.robustness_predictions([run_dir], "deletion")[seed]["id"]) == set(
        preds["id"]
    )
    family = experiments.modality_family({"AMB": [run_dir]})
    assert len(family) == len(experiments.MODALITY_PAIRS) and family["p"].isna().all()  # one run
    assert np.isfinite(family["diff"]).all()
