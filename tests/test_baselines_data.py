"""The cited-number files in results/ parse, are labelled as cited, and match the thesis text."""

import math

import pandas as pd
import pytest

from ambcore.paths import PROJECT_ROOT

RESULTS = PROJECT_ROOT / "results"
THESIS = PROJECT_ROOT.parent / "shared" / "thesis" / "amb-thesis.txt"
METRICS = ["mae", "corr", "acc7", "acc2", "f1", "trainable_params_m"]


def _read(name: str) -> pd.DataFrame:
    frame = pd.read_csv(RESULTS / name)
    for column in METRICS:
        assert pd.api.types.is_float_dtype(frame[column]), (name, column)
    return frame


def test_literature_rows_are_the_six_cited_models():
    frame = _read("literature.csv")
    assert list(frame["model"]) == ["MMLatch", "MulT", "LMF", "TFN", "MFM", "ICCN"]
    assert set(frame["status"]) == {"cited"}
    assert set(frame["dataset"]) == {"CMU-MOSEI"}
    assert set(frame["text_features"]) <= {"G", "B"}
    assert frame["citation"].str.len().min() > 20
    assert math.isnan(frame.set_index("model").loc["ICCN", "trainable_params_m"])


def test_thesis_rows_cover_both_tables():
    frame = _read("thesis_tables.csv")
    assert set(frame[frame["table"] == 6.1]["model"]) == {"MAG-BERT", "MISA", "AMB"}
    assert set(frame[frame["table"] == 6.2]["model"]) == {
        "AMB no-text",
        "AMB text-only",
        "MISA-Adapters",
        "MISA",
        "AMB-FT",
        "AMB",
    }
    assert set(frame["dataset"]) == {"CMU-MOSEI"}
    assert set(frame["text_adaptation"]) <= {"adapters", "finetune"}


@pytest.mark.skipif(not THESIS.exists(), reason=f"thesis text not available at {THESIS}")
@pytest.mark.parametrize("name", ["literature.csv", "thesis_tables.csv"])
def test_every_row_is_the_thesis_line_it_cites(name):
    lines = THESIS.read_text(encoding="utf-8").splitlines()
    for row in _read(name).itertuples():
        line = lines[row.thesis_line - 1]
        assert line.startswith(row.thesis_label + " "), (row.model, line)
        printed = line[len(row.thesis_label) :].split()
        assert len(printed) == 6, line
        for column, text in zip(METRICS, printed):
            value = getattr(row, column)
            if text == "−":  # the thesis' "not given"
                assert math.isnan(value), (row.model, column)
            else:
                assert float(text) == value, (row.model, column, text, value)
