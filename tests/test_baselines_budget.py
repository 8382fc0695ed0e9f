"""Trainable parameters of the baselines for bert-base against the thesis' tables 6.1/6.2."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ambcore.models.budget import THESIS_TRAINABLE_M, baseline_budget


def test_bert_base_budgets_match_the_thesis_once_unused_original_parts_are_added():
    rows = {row.model: row for row in baseline_budget()}
    assert set(rows) == set(THESIS_TRAINABLE_M)
    for name, row in rows.items():
        # What the original code counts, rounded as the thesis prints it.
        assert round(row.original_code / 1e6, 1) == THESIS_TRAINABLE_M[name], name
        assert row.original_code == row.trainable + row.not_built
    # MISA: embeddings (23,837,184) + 3 encoder layers (3 x 7,087,872) of bert-base train.
    assert rows["MISA"].trainable_plm == 23_837_184 + 3 * 7_087_872
    # The pooler (768 x 768 + 768) is the bulk of what the original trains but never uses.
    assert rows["MISA"].not_built - 768 * 769 == rows["MISA-Adapters"].not_built
    # MISA-Adapters: 12 adapters of 2 x 768 x 384 + 384 + 768 parameters, nothing else in BERT.
    assert rows["MISA-Adapters"].trainable_plm == 12 * (2 * 768 * 384 + 384 + 768)
    # MISA's own modules are identical in both MISA setups.
    own = rows["MISA"].trainable - rows["MISA"].trainable_plm
    assert own == rows["MISA-Adapters"].trainable - rows["MISA-Adapters"].trainable_plm
    # MAG-BERT: everything trains; bert-base with its pooler has 109,482,240 parameters.
    assert rows["MAG-BERT"].trainable == rows["MAG-BERT"].total
    assert rows["MAG-BERT"].trainable_plm == 109_482_240
