"""The thesis' parameter claims recomputed from counts (ambcore.models.budget)."""

from __future__ import annotations

from ambcore.models.budget import amb_rows, thesis_claims, within


def test_claims_hold_or_fail_with_the_counts():
    holds = thesis_claims(amb=8_660_000, amb_ft=47_260_000, misa=47_100_000).set_index("quantity")
    assert holds["holds"].all()
    assert holds.loc["MISA / AMB", "ours"] == 47_100_000 / 8_660_000
    fails = thesis_claims(amb=10_480_000, amb_ft=48_490_000, misa=47_100_000).set_index("quantity")
    assert not fails.loc["AMB / MISA", "holds"] and not fails.loc["MISA / AMB", "holds"]
    assert "does not hold" in fails.loc["MISA / AMB", "sentence"]
    assert "holds in our counts" in holds.loc["AMB / MISA", "sentence"]


def test_tolerances_and_the_text_only_note():
    assert within(8.43e6, "AMB") and not within(8.42e6, "AMB") and within(8.77e6, "AMB")
    assert within(46.73e6, "AMB-FT") and not within(46.7e6 - 1e5, "AMB-FT")
    rows = amb_rows({"AMB": 8_660_000, "AMB text-only": 8_180_000}).set_index("model")
    assert rows.loc["AMB", "fits"] and not rows.loc["AMB text-only", "fits"]
    assert "0.48 M" in rows.loc["AMB text-only", "note"]
