"""Hand-computed cases for ambcore.metrics (the MMSA definitions, thesis 6.3.1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ambcore.metrics import METRIC_NAMES, confusion_7, sentiment_metrics


def test_keys_and_counts():
    m = sentiment_metrics([0.1, -0.2, 1.0], [0.0, -1.0, 2.0])
    assert set(METRIC_NAMES) <= set(m)
    assert m["n"] == 3 and m["n_non0"] == 2 and m["notes"] == []


def test_mae_and_corr_by_hand():
    # |1-1| + |2-3| + |3-2| + |4-4| = 2 over 4 samples.
    # Deviations from the mean 2.5: p = (-1.5, -.5, .5, 1.5), y = (-1.5, .5, -.5, 1.5);
    # covariance sum 2.25 - .25 - .25 + 2.25 = 4, each variance sum 5 -> corr 0.8.
    m = sentiment_metrics([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0])
    assert m["mae"] == pytest.approx(0.5)
    assert m["corr"] == pytest.approx(0.8)


def test_half_values_round_to_even():
    # np.round: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> -0, -2.5 -> -2 (banker's rounding).
    # Rounding half away from zero would give 1, 2, 3, -1, -3 and match none of 0, 2, 2, 0, -2
    # except 1.5.
    y_true = [0.5, 1.5, 2.5, -0.5, -2.5]
    y_pred = [0.0, 2.0, 2.0, 0.0, -2.0]
    m = sentiment_metrics(y_pred, y_true)
    assert m["acc7"] == 1.0
    assert m["acc5"] == 1.0
    y_pred_away = [1.0, 2.0, 3.0, -1.0, -3.0]
    assert sentiment_metrics(y_pred_away, y_true)["acc7"] == pytest.approx(1 / 5)


def test_clipping_separates_acc7_from_acc5():
    # Labels 3.0 and -3.0; predictions 2.4 and -2.4 round to 2 and -2: wrong for 7 classes,
    # right after clipping both to [-2, 2]. Prediction 4.2 clips to 3 (7 classes): right.
    y_true = [3.0, -3.0, 3.0, 0.0]
    y_pred = [2.4, -2.4, 4.2, 0.6]  # 0.6 rounds to 1: wrong for both
    m = sentiment_metrics(y_pred, y_true)
    assert m["acc7"] == pytest.approx(1 / 4)
    assert m["acc5"] == pytest.approx(3 / 4)


# A case where weighted F1 depends on the argument order (the MISA/MMLatch pitfall).
# has0 classes (>= 0): y_true T T T T T F (5 positive, 1 negative), y_pred T T T F F F.
#   class T: tp 3, 5 true, 3 predicted -> F1 = 2*3 / (5+3) = 0.75
#   class F: tp 1, 1 true, 3 predicted -> F1 = 2*1 / (1+3) = 0.5
#   weighted by true support (5, 1): (5*.75 + 1*.5) / 6 = 0.708333...
#   swapped (weights = predicted support 3, 3): (3*.75 + 3*.5) / 6 = 0.625
# non0 (label 0 at index 2 dropped): y_true T T T T F, y_pred T T F F F
#   class T: tp 2, 4 true, 2 predicted -> 4/6; class F: tp 1, 1 true, 3 predicted -> 0.5
#   weighted (4, 1): (4*2/3 + .5) / 5 = 0.633333...; swapped (2, 3): (4/3 + 1.5) / 5 = 0.566667
F1_TRUE = [1.0, 2.0, 0.0, 3.0, 1.5, -1.0]
F1_PRED = [0.8, 1.2, 0.4, -0.5, -2.0, -0.3]


def test_binary_accuracy_and_weighted_f1_by_hand():
    m = sentiment_metrics(F1_PRED, F1_TRUE)
    assert m["acc2_has0"] == pytest.approx(4 / 6)
    assert m["f1_has0"] == pytest.approx(4.25 / 6)
    assert m["acc2_non0"] == pytest.approx(3 / 5)
    assert m["f1_non0"] == pytest.approx((4 * 2 / 3 + 0.5) / 5)
    assert m["n_non0"] == 5


def test_f1_argument_order_is_detectable():
    # If the implementation called f1_score(y_pred, y_true) it would report these values.
    m = sentiment_metrics(F1_PRED, F1_TRUE)
    assert m["f1_has0"] != pytest.approx(0.625)
    assert m["f1_non0"] != pytest.approx((4 / 3 + 1.5) / 5)


def test_zero_label_is_positive_for_has0_and_dropped_for_non0():
    # Label 0 predicted as -0.1: wrong under has0 (0 >= 0 but -0.1 < 0), ignored under non0.
    m = sentiment_metrics([-0.1, 1.0, -1.0], [0.0, 2.0, -2.0])
    assert m["acc2_has0"] == pytest.approx(2 / 3)
    assert m["acc2_non0"] == 1.0
    assert m["n_non0"] == 2


def test_constant_prediction_gives_nan_corr_with_a_note():
    with pytest.warns(RuntimeWarning, match="corr is undefined"):
        m = sentiment_metrics([0.3, 0.3, 0.3], [1.0, -1.0, 2.0])
    assert math.isnan(m["corr"])
    assert any("predictions are constant" in n for n in m["notes"])
    assert m["mae"] == pytest.approx((0.7 + 1.3 + 1.7) / 3)


def test_all_zero_labels_give_nan_non0_with_a_note():
    with pytest.warns(RuntimeWarning) as record:
        m = sentiment_metrics([0.2, -0.4, 0.0], [0.0, 0.0, 0.0])
    assert math.isnan(m["acc2_non0"]) and math.isnan(m["f1_non0"])
    assert math.isnan(m["corr"])  # the labels are constant too
    assert m["n_non0"] == 0
    assert any("every label is 0" in str(w.message) for w in record)
    assert m["acc2_has0"] == pytest.approx(2 / 3)


def test_tensor_inputs_and_shape_errors():
    m = sentiment_metrics(torch.tensor([[1.0], [2.0]]), torch.tensor([1.0, 2.0]))
    assert m["mae"] == 0.0
    with pytest.raises(ValueError, match="shape"):
        sentiment_metrics([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="non-finite"):
        sentiment_metrics([float("nan"), 1.0], [1.0, 2.0])


def _mmsa_reference(test_preds, test_truth):
    """An independent transcription of MMSA's __eval_mosei_regression (without its rounding)."""
    from sklearn.metrics import accuracy_score, f1_score

    def mult(a, b):
        return np.sum(np.round(a) == np.round(b)) / float(len(b))

    non_zeros = np.array([i for i, e in enumerate(test_truth) if e != 0])
    return {
        "mae": np.mean(np.absolute(test_preds - test_truth)),
        "corr": np.corrcoef(test_preds, test_truth)[0][1],
        "acc7": mult(np.clip(test_preds, -3.0, 3.0), np.clip(test_truth, -3.0, 3.0)),
        "acc5": mult(np.clip(test_preds, -2.0, 2.0), np.clip(test_truth, -2.0, 2.0)),
        "acc2_non0": accuracy_score(test_preds[non_zeros] > 0, test_truth[non_zeros] > 0),
        "f1_non0": f1_score(
            test_truth[non_zeros] > 0, test_preds[non_zeros] > 0, average="weighted"
        ),
        "acc2_has0": accuracy_score(test_preds >= 0, test_truth >= 0),
        "f1_has0": f1_score(test_truth >= 0, test_preds >= 0, average="weighted"),
    }


def test_matches_mmsa_procedure_on_mosei_like_values():
    rng = np.random.default_rng(0)
    # MOSEI labels are averages of annotators on a 1/3 grid; include many zeros and .5 values.
    y_true = np.round(rng.uniform(-3, 3, 500) * 3) / 3
    y_true[:40] = 0.0
    y_true[40:60] = rng.choice([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5], 20)
    y_pred = np.clip(y_true + rng.normal(0, 0.8, 500), -3.5, 3.5)
    y_pred[60:80] = rng.choice([-2.5, -0.5, 0.0, 0.5, 2.5], 20)
    ours = sentiment_metrics(y_pred, y_true)
    ref = _mmsa_reference(y_pred, y_true)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(float(value), abs=1e-12), key


def test_confusion_7_rows_are_true_classes_and_diagonal_is_acc7():
    y_true = [3.4, -0.5, 0.5, 1.5, -2.6]
    y_pred = [2.6, 0.4, -0.2, 1.0, -1.4]
    counts = confusion_7(y_pred, y_true)
    # true classes 3, 0, 0, 2, -3; predicted 3, 0, 0, 1, -1 (indices are class + 3)
    assert counts.sum() == 5
    assert counts[6, 6] == 1 and counts[3, 3] == 2 and counts[5, 4] == 1 and counts[0, 2] == 1
    acc7 = sentiment_metrics(y_pred, y_true)["acc7"]
    assert np.trace(counts) / counts.sum() == pytest.approx(acc7)


def test_float64_tensors_are_not_rounded_to_float32():
    """MMSA computes on float64; a float64 tensor must give the numpy float64 values exactly."""
    import torch

    rng = np.random.default_rng(3)
    pred = rng.uniform(-3, 3, 257) + 1e-9
    true = np.round(rng.uniform(-3, 3, 257) * 3) / 3
    from_numpy = sentiment_metrics(pred, true)
    from_torch = sentiment_metrics(torch.tensor(pred, dtype=torch.float64), torch.tensor(true))
    for key in ("mae", "corr"):
        assert from_torch[key] == from_numpy[key]
