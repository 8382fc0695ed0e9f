"""The chapters' display helpers (ambcore.pages): the provenance banner, numbered tables,
file previews and the Results page's thesis tables."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import nbformat
import pandas as pd
import papermill
import pytest

from ambcore import get_config, report
from ambcore.errors import AmbError
from ambcore.pages import (
    Notice,
    NumberedTable,
    PageError,
    banner,
    file_preview,
    numbered_table,
    results_table,
)

ROOT = Path(__file__).resolve().parents[1]


# ---- banners and tables ----------------------------------------------------------------------


def test_banner_says_synthetic_and_names_the_plm():
    b = banner(get_config("embedded"))
    assert b.synthetic and "not CMU-MOSEI" in b.title
    assert "SYNTHETIC" in b.data and "all-MiniLM-L6-v2" in b.plm
    html = b._repr_html_()
    assert "admonition warning" in html and "all-MiniLM-L6-v2" in html
    assert "SYNTHETIC" in str(b)


def test_banner_for_a_data_file_and_a_run_folder(tmp_path):
    cfg = get_config("paper", data="/data/mosei/aligned_50.pkl")
    b = banner(cfg)
    assert not b.synthetic and "aligned_50.pkl" in b.data and "bert-base-uncased" in b.plm
    assert "admonition note" in b._repr_html_()
    (tmp_path / "config.json").write_text(get_config("smoke", plm_random_init=True).to_json())
    b = banner(tmp_path)
    assert b.synthetic and b.preset == "smoke" and "tiny randomly initialised" in b.plm
    with pytest.raises(PageError, match="config.json"):
        banner(tmp_path / "nope")


def test_banner_refuses_a_corrupt_run_config_naming_it(tmp_path):
    (tmp_path / "config.json").write_text('{"preset": "smo')
    with pytest.raises(AmbError, match=f"{tmp_path / 'config.json'}: not valid JSON"):
        banner(tmp_path)


def test_numbered_table_is_a_myst_table_with_caption():
    t = numbered_table(pd.DataFrame({"a|b": [1.23456, None], "c": ["x", "y"]}), "Cap", name="tbl-x")
    md = t._repr_markdown_()
    assert md.startswith(":::{table} Cap\n:name: tbl-x\n")
    assert "| a\\|b | c |" in md and "| 1.235 | x |" in md and "| – | y |" in md


# ---- the Results page -----------------------------------------------------------------------


def no_runs_summary():
    """``report.summarize`` of no runs of ours: the thesis tables built from it hold the thesis'
    and the cited rows alone."""
    with tempfile.TemporaryDirectory() as empty:
        return report.summarize(report.collect_runs(empty))


def write_table_6_1_with_one_row_of_ours(folder: Path) -> dict[str, Path]:
    """``folder/table_6_1.csv`` as ``ambcore.report`` writes it from one made-up AMB cell (test
    MAE 0.4321, every other mean and std 0.5, 3 seeds); returns it as ``results_csvs`` would."""
    summary = no_runs_summary()
    row = {c: 0.5 for c in summary.columns if c.endswith(("_mean", "_std"))}
    row.update(
        cell="amb-full",
        row_name="AMB",
        model="amb",
        variant="full",
        text_adaptation="adapters",
        finetune_layers="all",
        preset="embedded",
        data="SYNTHETIC test data",
        is_synthetic=True,
        plm="all-MiniLM-L6-v2",
        n_seeds=3,
        seeds="0,1,2",
        trainable_params_m=1.5,
        test_mae_mean=0.4321,
    )
    path = folder / "table_6_1.csv"
    report.table_6_1(pd.DataFrame([row], columns=summary.columns)).to_csv(path, index=False)
    return {"table_6_1": path}


def test_results_page_puts_our_rows_beside_the_thesis(tmp_path):
    """The Results chapter on a results folder written by ambcore.report from made-up runs."""
    write_table_6_1_with_one_row_of_ours(tmp_path)
    out = tmp_path / "06_results.ipynb"
    papermill.execute_notebook(
        str(ROOT / "notebooks" / "06_results.ipynb"),
        str(out),
        kernel_name="python3",
        parameters={"preset": "smoke", "results_dir": str(tmp_path)},
        progress_bar=False,
        cwd=str(ROOT / "notebooks"),
    )
    text = json.dumps(nbformat.read(out, as_version=4).cells, ensure_ascii=False)
    assert "0.432 ± 0.500 over 3 seeds on SYNTHETIC test data" in text  # glued, from the CSV
    assert "1 row(s) of ours from results/table_6_1.csv" in text
    assert "results/table_6_2.csv is missing" in text  # the other table: thesis rows only


def test_results_table_with_our_rows(tmp_path):
    shown, status = results_table("6.1", write_table_6_1_with_one_row_of_ours(tmp_path))
    assert len(shown) == 2 and all(isinstance(t, NumberedTable) for t in shown)
    ours, theirs = (t.markdown for t in shown)
    assert ours.startswith(":::{table} Our runs of the rows of thesis table 6.1.")
    assert (
        ":name: tbl-results-table_6_1" in ours and ":name: tbl-results-thesis-table_6_1" in theirs
    )
    assert "SYNTHETIC test data" in ours and "0.432 ± 0.500" in ours and "CMU-MOSEI" not in ours
    assert "SYNTHETIC" not in theirs and "as published (CMU-MOSEI" in theirs
    assert status.startswith(
        "1 row(s) of ours from results/table_6_1.csv. AMB against each row: "
        "no paired test in the file. On synthetic data only"
    )
    assert "no evidence about CMU-MOSEI" in status


@pytest.mark.parametrize("table", ["6.1", "6.2"])
def test_results_table_without_its_file_shows_the_thesis_rows(tmp_path, table):
    stem = "table_" + table.replace(".", "_")
    others = write_table_6_1_with_one_row_of_ours(tmp_path) if table == "6.2" else {}
    shown, status = results_table(table, others)
    assert [type(item) for item in shown] == [Notice, NumberedTable]
    assert shown[0].title == f"Missing: results/{stem}.csv"
    assert "notebooks/04_ablation.py" in shown[0].lines[0]
    expected = report.compact_table(getattr(report, stem)(no_runs_summary()))
    rows = [line for line in shown[1].markdown.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == len(expected) > 0 and all("| thesis |" in r or "| cited" in r for r in rows)
    assert f"Thesis table {table} as printed (CMU-MOSEI, bert-base-uncased" in shown[1].markdown
    assert f":name: tbl-results-{stem}" in shown[1].markdown
    assert status == f"not run yet (results/{stem}.csv is missing)"


def test_results_table_knows_only_the_thesis_tables():
    with pytest.raises(PageError, match="'6.3'"):
        results_table("6.3", {})


def test_file_preview_keeps_wide_files_readable():
    wide = pd.DataFrame({"cell": ["amb", "misa"], **{f"m{i}": [i, -i] for i in range(20)}})
    shown, note = file_preview(wide, max_columns=12)
    assert list(shown.columns) == ["cell", "amb", "misa"] and len(shown) == 20
    assert shown.loc[shown["cell"] == "m3", "misa"].item() == -3 and "on its side" in note
    long_and_wide = pd.DataFrame({f"c{i}": range(50) for i in range(15)})
    shown, note = file_preview(long_and_wide, max_columns=12, max_rows=40)
    assert shown.shape == (40, 12) and note == "10 more row(s); 3 more column(s)"
    narrow = pd.DataFrame({"a": [1, 2]})
    shown, note = file_preview(narrow)
    assert shown.equals(narrow) and note == ""
