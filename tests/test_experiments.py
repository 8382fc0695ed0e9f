"""The experiment definitions of chapter 6.3 (ambcore.experiments): cells, grids, run folders,
committed sweep specs, and the results tables built from run folders that the tests write."""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import pytest
import torch

from ambcore import experiments as ex
from ambcore import report, runs
from ambcore.config import PRESETS, get_config
from ambcore.errors import AmbError
from ambcore.metrics import sentiment_metrics
from ambcore.report import collect_runs, summarize, thesis_rows
from ambcore.sweep import load_spec, plan, run_sweep


@pytest.fixture(autouse=True)
def _runs_root(tmp_path, monkeypatch):
    monkeypatch.setenv("AMB_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("AMB_DATA", raising=False)


# ---- cells ------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_cell_builds_a_valid_config(preset):
    for name in ex.CELL_NAMES:
        cfg = ex.cell_config(name, preset, seed=2)
        assert cfg.preset == preset and cfg.seed == 2
        for key, value in ex.cell_overrides(name, preset).items():
            assert getattr(cfg, key) == value, (name, key)


def test_cells_are_the_thesis_rows():
    assert ex.ABLATION_CELLS == (
        "amb",
        "amb-text-only",
        "amb-no-text",
        "amb-ft",
        "misa",
        "misa-adapters",
        "mag-bert",
    )
    assert set(ex.ROBUSTNESS_CELLS) == {"amb", "amb-ft", "misa", "amb-noise-aug"}
    in_62 = {ex.CELLS[c].label for c in ex.CELL_NAMES if "6.2" in ex.CELLS[c].tables}
    thesis_62 = {("MISA (FT)" if m == "MISA" else m) for m in thesis_rows("6.2")["model"]}
    assert in_62 == thesis_62
    in_61 = {ex.CELLS[c].label for c in ex.CELL_NAMES if "6.1" in ex.CELLS[c].tables}
    assert in_61 == {"AMB", "MISA (FT)", "MAG-BERT (FT)"}


def test_adaptation_of_each_cell():
    ft = ex.cell_config("amb-ft", "paper")
    assert (ft.text_adaptation, ft.finetune_layers) == ("finetune", "last:3")
    assert ft.amb_finetune_embeddings
    mag = ex.cell_config("mag-bert", "embedded")
    assert (mag.model, mag.text_adaptation, mag.finetune_layers) == ("mag-bert", "finetune", "all")
    assert ex.cell_config("misa-adapters", "embedded").text_adaptation == "adapters"
    assert ex.cell_config("amb-no-text", "embedded").variant == "no-text"
    assert ex.cell_config("amb-noise-aug", "embedded").noise_augment_rate == ex.AUGMENT_RATE
    # The smoke preset's tiny BERT has two layers.
    assert ex.cell_config("misa", "smoke").finetune_layers == "last:1"


def test_misa_recipe_in_full_on_paper_and_scaled_on_smaller_presets():
    from ambcore.models.misa import ORIGINAL_MOSEI_SETTINGS

    paper = ex.cell_config("misa", "paper")
    for key, value in ORIGINAL_MOSEI_SETTINGS.items():
        assert getattr(paper, key) == value, key
    embedded, base = ex.cell_config("misa", "embedded"), get_config("embedded")
    for key in ex.SCALED_KEYS:
        assert getattr(embedded, key) == getattr(base, key), key
    recipe = get_config("embedded", **ex.cell_overrides("misa", "embedded", tuned=False))
    assert (recipe.lr, recipe.loss) == (ORIGINAL_MOSEI_SETTINGS["lr"], "mse")
    assert embedded.lr == ex.tuned_values("misa", "embedded").get("lr", recipe.lr)


def test_amb_ft_budget_follows_the_thesis_scheme():
    """bert-base (random weights on the meta device): AMB-FT trains the embeddings and the last
    three layers instead of the adapters. The thesis' AMB-FT minus AMB (47.2 - 8.6 M) is that
    exchange plus BERT's pooler, which the original code leaves trainable and the paper preset's
    AMB-FT carries (amb_finetune_pooler)."""
    from ambcore.models import build_model

    def trainable(cell):
        cfg = ex.cell_config(cell, "paper", plm_random_init=True)
        with torch.device("meta"):
            model = build_model(cfg, 35, 74)
        return sum(p.numel() for p in model.parameters() if p.requires_grad), model

    n_ft, model = trainable("amb-ft")
    n_amb, _ = trainable("amb")
    hidden = model.plm.config.hidden_size
    pooler = hidden * hidden + hidden
    thesis = thesis_rows("6.2").set_index("model")["trainable_params_m"]
    assert sum(p.numel() for p in model.plm.pooler.parameters()) == pooler
    exchange = (n_ft - n_amb) / 1e6
    assert round(exchange, 1) == pytest.approx(thesis["AMB-FT"] - thesis["AMB"])


# ---- grids, run folders, specs ---------------------------------------------------------------


def test_grids():
    assert ex.grid("paper").rates[-1] == 1.0 and len(ex.grid("paper").seeds) >= 3
    assert ex.grid("paper").n_draws >= 3
    assert ex.grid("embedded", n_seeds=3).seeds == (0, 1, 2)
    for preset in PRESETS:
        g = ex.grid(preset)
        assert g.rates[0] == 0.0 and g.rates[-1] == 1.0 and list(g.rates) == sorted(g.rates)
    with pytest.raises(AmbError, match="no experiment grid"):
        ex.grid("nope")


@pytest.mark.parametrize("shared", [{}, {"plm": "tiny-random"}])
def test_training_chapter_folder_is_the_amb_cell_of_the_sweep(shared):
    spec = load_spec(ex.ablation_spec("embedded", shared=shared))
    folders = {(c.name, c.seed): c.run_dir for c in plan(spec)}
    chapter_cfg = get_config("embedded", seed=0, **shared)  # what 03_train trains
    assert ex.run_dir(chapter_cfg, "amb") == folders[("amb", 0)]
    misa_cfg = ex.cell_config("misa", "embedded", seed=0, **shared)
    assert ex.run_dir(misa_cfg, "misa") == folders[("misa", 0)]


def test_runs_root_names_shared_changes():
    assert ex.runs_root("embedded").name == "embedded"
    assert ex.runs_root("embedded", {"plm": "embedded"}).name == "embedded"  # no change
    other = ex.runs_root("embedded", {"plm": "tiny-random"}).name
    assert other.startswith("embedded-") and other != ex.runs_root("embedded", {"lr": 0.1}).name


def test_committed_spec_files_are_generated_from_this_module():
    for kind in ("ablation", "robustness"):
        for preset in ex.GRIDS:
            path = ex.spec_path(kind, preset)
            assert path.exists(), f"{path} missing: run ambcore.experiments.write_spec_files()"
            assert path.read_text() == ex.spec_text(kind, preset), f"{path} is out of date"
            spec = load_spec(path)
            assert spec.seeds == ex.grid(preset).seeds
            assert spec.runs_dir == ex.runs_root(preset)


# ---- run folders written here --------------------------------------------------------------

DATA = "SYNTHETIC MOSEI-shaped (seed 1234)"


def fake_train(cfg, run_dir, resume=True):
    """A run folder as train_and_evaluate leaves it, with metrics of generated predictions."""
    key = f"{cfg.model}/{cfg.variant}/{cfg.text_adaptation}/{cfg.seed}"
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    noise = {"no-text": 2.0, "text-only": 0.6}.get(cfg.variant, 0.4)
    metrics = {}
    for split, n in (("valid", 40), ("test", 60)):
        y_true = np.round(rng.uniform(-3, 3, n) * 3) / 3
        metrics[split] = sentiment_metrics(y_true + rng.normal(0, noise, n), y_true)
    runs.write_json(run_dir / "config.json", cfg.to_dict())
    runs.write_json(run_dir / "env.json", {"plm": {"name": cfg.plm, "random_init": True}})
    runs.write_json(
        run_dir / "metrics.json",
        {
            **metrics,
            "data": DATA,
            "is_synthetic": True,
            "plm": cfg.plm,
            "model": cfg.model,
            "n_trainable_params": 1000 if cfg.text_adaptation == "adapters" else 5000,
            "best_epoch": 1,
            "epochs_run": 2,
        },
    )
    runs.write_json(run_dir / "DONE", {})


def test_sweep_adopts_the_training_chapters_run_and_tables_group_it(tmp_path):
    chapter_cfg = get_config("smoke", seed=0, **ex.tuned_values("amb", "smoke"))
    fake_train(chapter_cfg, ex.run_dir(chapter_cfg, "amb"))  # the training chapter's run
    calls = []

    def counting(cfg, run_dir, resume=True):
        calls.append(run_dir.relative_to(ex.runs_root("smoke")).as_posix())
        fake_train(cfg, run_dir)

    spec = ex.ablation_spec("smoke", n_seeds=2)
    result = run_sweep(spec, train_fn=counting, progress=False)
    assert not result.failed and "amb/seed0" not in calls and "amb/seed1" in calls
    assert len(calls) == 2 * len(ex.ABLATION_CELLS + ex.CONTROL_CELLS) - 1

    frame = collect_runs(ex.runs_root("smoke"))
    summary = summarize(frame)
    amb = summary.set_index("cell").loc["amb"]
    assert amb["n_seeds"] == 2 and amb["seeds"] == "0,1"

    written = ex.write_ablation_results(frame, summary, tmp_path / "results")
    t62 = pd.read_csv(written["table_6_2"])
    ours = t62[t62["Source"].str.startswith("this book")].set_index("Model")
    thesis_62 = thesis_rows("6.2")
    assert len(ours) == len(thesis_62) == len(t62) - len(ours)  # each thesis row + ours
    row = ours.loc["AMB text-only"]
    seeds = frame[frame["cell"] == "amb-text-only"]
    assert row["MAE"] == pytest.approx(seeds["test_mae"].mean())
    assert row["Corr std"] == pytest.approx(seeds["test_corr"].std(ddof=1))
    assert row["Data"] == DATA and row["n seeds"] == 2
    t61 = pd.read_csv(written["table_6_1"])
    assert set(t61.loc[t61["Source"].str.startswith("this book"), "Model"]) == {
        "AMB",
        "MISA (FT)",
        "MAG-BERT (FT)",
    }
    assert set(pd.read_csv(written["ablation_runs"])["cell"]) == set(
        ex.ABLATION_CELLS + ex.CONTROL_CELLS
    )
    # The Results chapter formats the file as read back.
    formatted = report.format_table(t62)
    assert formatted["MAE"].str.contains("±").sum() == len(ours)


def test_a_foreign_run_in_a_cell_folder_is_refused():
    cfg = get_config("smoke", seed=0, lr=0.5)
    fake_train(cfg, ex.runs_root("smoke") / "amb" / "seed0")
    with pytest.raises(AmbError, match="another config than cell 'amb'.*lr"):
        run_sweep(ex.ablation_spec("smoke"), train_fn=fake_train, progress=False)


def test_modality_drops_and_planted_truth():
    rows = []
    corr_at = {
        "deletion": (0.8, 0.2),
        "replacement": (0.8, 0.1),
        "visual": (0.8, 0.6),
        "acoustic": (0.8, 0.75),
    }
    for kind, (clean, worst) in corr_at.items():
        for rate, corr in ((0.0, clean), (0.5, (clean + worst) / 2), (1.0, worst)):
            rows.append(
                {
                    "row_name": "AMB",
                    "kind": kind,
                    "rate": rate,
                    "corr_mean": corr,
                    "corr_std": 0.01,
                    "n_runs": 3,
                }
            )
    drops = ex.modality_drops(pd.DataFrame(rows))
    by_kind = drops.set_index("kind")["drop"]
    for kind, (clean, worst) in corr_at.items():
        assert by_kind[kind] == pytest.approx(clean - worst)
    check = ex.planted_truth_check(drops, "AMB")
    assert check["recovered"] and check["text_drop"] == pytest.approx(0.7)
    swapped = drops.copy()
    swapped.loc[swapped["kind"] == "acoustic", "drop"] = 0.5
    assert not ex.planted_truth_check(swapped, "AMB")["recovered"]

    def family(p_visual_acoustic, diff=-0.3):
        rows = [
            {
                "key": f"AMB|{a}<{b}",
                "diff": diff,
                "lo": diff - 0.1,
                "hi": diff + 0.1,
                "p_holm": p_visual_acoustic if a == "visual" else 0.001,
            }
            for a, b in ex.MODALITY_PAIRS
        ]
        return pd.DataFrame(rows)

    intro, lines = ex.planted_truth_text(drops, family(0.01), synthetic=True, n_runs=3, rate=1.0)
    assert "planted" in intro and "rate 1" in intro and "single run" not in intro
    assert lines[0].startswith("AMB: text +0.700, visual +0.200, acoustic +0.050 - recovers it: ")
    assert "visual noise costs more than acoustic noise (corr -0.300" in lines[0]
    one_text = family(0.01)
    one_text.loc[0, "p_holm"] = (
        0.5  # deletion against visual not distinguishable; replacement called
    )
    _, lines = ex.planted_truth_text(drops, one_text, synthetic=True, n_runs=3, rate=1.0)
    assert "recovers it" in lines[0] and "deletion against visual: not distinguishable" in lines[0]
    no_text = family(0.01)
    no_text.loc[[0, 1], "p_holm"] = 0.5
    assert "does not recover it" in ex.planted_truth_text(drops, no_text, True, 3, 1.0)[1][0]
    _, lines = ex.planted_truth_text(drops, family(0.4), synthetic=True, n_runs=3, rate=1.0)
    assert (
        "does not recover it" in lines[0]
        and "visual against acoustic: not distinguishable" in lines[0]
    )
    _, lines = ex.planted_truth_text(
        drops, family(float("nan")), synthetic=True, n_runs=1, rate=1.0
    )
    assert "does not recover it" in lines[0] and "not testable" in lines[0]
    intro, lines = ex.planted_truth_text(drops, family(0.01), synthetic=False, n_runs=3, rate=1.0)
    assert "no planted ground truth" in intro and "recover" not in lines[0]


def test_design_study_cells_and_verdicts():
    """The open-choice study: the default AMB cell plus one cell per alternative, and verdicts
    from the design family (ambcore.stats: runs and test videos, Holm across the family)."""
    import numpy as np
    import pandas as pd

    from ambcore import stats

    assert ex.DESIGN_CELLS == ("amb", "amb-per-layer", "amb-independent", "amb-pfeiffer")
    assert not set(ex.DESIGN_CELLS[1:]) & set(ex.ABLATION_CELLS)
    spec = ex.design_spec("embedded")
    assert spec["seeds"] == list(ex.grid("embedded").seeds) and len(spec["seeds"]) >= 5
    assert [c["name"] for c in spec["cells"]] == list(ex.DESIGN_CELLS)
    assert ex.cell_config("amb-pfeiffer", "embedded").adapter_placement == "pfeiffer"

    def row(cell, corr, std, n=5):
        return {
            "cell": cell,
            "n_seeds": n,
            "trainable_params_m": 1.0,
            **{
                f"{m}_{s}": v
                for m in ("test_mae", "test_corr", "test_acc7")
                for s, v in (("mean", corr), ("std", std))
            },
        }

    summary = pd.DataFrame(
        [
            row("amb", 0.50, 0.01),
            row("amb-per-layer", 0.60, 0.01),
            row("amb-independent", 0.505, 0.02),
            row("amb-pfeiffer", 0.5, 0.0, n=1),
        ]
    )
    rng = np.random.default_rng(0)
    ids, y = stats._simulated_test_split(60, rng)
    error = rng.normal(0, stats.SIM_VIDEO_ERROR, 60)
    preds = {
        "amb": stats.simulate_cell(y, ids, error, 5, rng),
        "amb-per-layer": stats.simulate_cell(y, ids, error, 5, rng, shift=1.0),
        "amb-independent": stats.simulate_cell(y, ids, error, 5, rng),
        "amb-pfeiffer": stats.simulate_cell(y, ids, error, 1, rng),
    }
    family = ex.design_family(preds)
    assert set(family["key"]) == set(ex.DESIGN_ALTERNATIVES) and set(family["b"]) == {"amb"}
    study = ex.design_study(summary, family, synthetic=True)
    assert len(study) == 6 and study["verdict"].iloc[0] == ""
    verdicts = study.set_index("cell")["verdict"]
    assert "MAE is higher than" in verdicts["amb-per-layer"]
    assert "not distinguishable" in verdicts["amb-independent"]
    assert "single run" in verdicts["amb-pfeiffer"]
    assert "not planted" in verdicts["amb-independent"]
    assert study.set_index("cell").loc["amb-per-layer", "corr"] == "0.600 ± 0.010"
    with pytest.raises(AmbError, match="amb-pfeiffer"):
        ex.design_study(summary[summary["cell"] != "amb-pfeiffer"], family, synthetic=True)


def test_beyond_study_cells_seeds_and_verdicts():
    """The thesis' future work (7.2) as a study of its own: AMB plus a cross-attention fusion
    cell and a feedback-shift cell, each changing one config value, on the first seeds of the
    grid; the verdicts come from the same test as the design study's."""
    import numpy as np
    import pandas as pd

    from ambcore import stats

    assert ex.BEYOND_CELLS == ("amb", "amb-cross-attention", "amb-shift")
    spec = ex.beyond_spec("embedded")
    assert spec["seeds"] == list(ex.grid("embedded").seeds)[: ex.BEYOND_SEEDS["embedded"]]
    assert len(ex.beyond_spec("paper")["seeds"]) == 5
    assert ex.beyond_spec("embedded", n_seeds=2)["seeds"] == [0, 1]
    by_cell = {c["name"]: c["overrides"] for c in spec["cells"]}
    amb = by_cell["amb"]
    assert by_cell["amb-cross-attention"] == {**amb, "fusion_module": "cross_attention"}
    assert by_cell["amb-shift"] == {**amb, "fusion_feedback": "shift"}
    assert ex.cell_config("amb-shift", "embedded").fusion_feedback == "shift"
    assert ex.spec_text("beyond", "paper") == (ex.SPEC_DIR / "beyond_paper.yaml").read_text()

    rng = np.random.default_rng(1)
    ids, y = stats._simulated_test_split(60, rng)
    error = rng.normal(0, stats.SIM_VIDEO_ERROR, 60)
    preds = {
        "amb": stats.simulate_cell(y, ids, error, 5, rng),
        "amb-cross-attention": stats.simulate_cell(y, ids, error, 5, rng, shift=1.0),
        "amb-shift": stats.simulate_cell(y, ids, error, 3, rng),
    }
    family = ex.design_family(preds, pairs=ex.BEYOND_FAMILY)
    assert set(family["key"]) == set(ex.BEYOND_ALTERNATIVES) and set(family["b"]) == {"amb"}
    summary = pd.DataFrame(
        [
            {"cell": c, "n_seeds": n, "trainable_params_m": 1.0}
            | {
                f"{m}_{s}": 0.5
                for m in ("test_mae", "test_corr", "test_acc7")
                for s in ("mean", "std")
            }
            for c, n in (("amb", 5), ("amb-cross-attention", 3), ("amb-shift", 3))
        ]
    )
    study = ex.design_study(summary, family, True, alternatives=ex.BEYOND_ALTERNATIVES)
    verdicts = study.set_index("cell")["verdict"]
    assert verdicts["amb-cross-attention"].startswith("fusion module: ")
    assert "MAE is higher than" in verdicts["amb-cross-attention"]
    assert "not distinguishable" in verdicts["amb-shift"]


def test_cells_take_the_values_tuned_for_their_model(tmp_path, monkeypatch):
    """With a matching tuning record every row that trains its own parameters takes its own
    study's values (AMB, AMB-FT, MISA, MISA-Adapters, MAG-BERT); AMB's variants and design
    alternatives take AMB's; tuned=False gives the recipe; the committed recipes file is what
    the tuning spec reads."""
    from ambcore import tune

    record = tune.current_record("smoke")
    assert record is not None, "results/tuning_smoke.json must match experiments/tune_smoke.yaml"
    assert set(record["chosen"]) == {"amb", "amb-ft", "misa", "misa-adapters", "mag-bert"}
    for cell in ("amb", "amb-ft", "misa", "misa-adapters", "mag-bert"):
        own = record["chosen"][cell]["params"]
        over = ex.cell_overrides(cell, "smoke")
        assert own and {k: over[k] for k in own} == own, cell
    amb = record["chosen"]["amb"]["params"]
    for cell in ("amb-text-only", "amb-no-text", "amb-pfeiffer", "amb-noise-aug"):
        over = ex.cell_overrides(cell, "smoke")
        assert {k: over[k] for k in amb} == amb, cell
    for cell in ("misa", "misa-adapters"):
        assert ex.cell_overrides(cell, "smoke", tuned=False)["lr"] == 1e-4  # MISA's recipe
    assert "lr" not in ex.cell_overrides("amb", "smoke", tuned=False)
    assert load_spec(ex.spec_path("recipes", "smoke")).cells == tuple(
        (c["name"], c["overrides"]) for c in ex.recipes_spec("smoke")["cells"]
    )
    # no record matching (another results folder with a stale one, a project without one)
    monkeypatch.setattr(tune, "spec_for_preset", lambda preset: tmp_path / "none.yaml")
    assert (
        ex.cell_overrides("misa", "smoke")["lr"] == 1e-4 and ex.tuned_values("amb", "smoke") == {}
    )


def test_train_spec_prints_the_outcomes_and_raises_on_failed_runs(monkeypatch, capsys):
    from types import SimpleNamespace

    frame = pd.DataFrame(
        {
            "cell": ["amb", "misa"],
            "seed": [0, 0],
            "outcome": ["skipped", "trained"],
            "seconds": [0.0, 12.4],
        }
    )
    failed = []
    result = SimpleNamespace(frame=lambda: frame, failed=failed)
    monkeypatch.setattr(ex, "run_experiment", lambda spec, parallel=0: result)
    spec = {"name": "ablation_smoke"}
    assert ex.train_spec(spec, collect_only=True) is None
    assert "nothing is trained" in capsys.readouterr().out
    outcomes = ex.train_spec(spec)
    out = capsys.readouterr().out
    assert list(outcomes["outcome"]) == ["skipped", "trained"] and "trained 1 run(s) in 12 s" in out
    failed.append(SimpleNamespace(error="misa/seed0: boom"))
    with pytest.raises(RuntimeError, match="misa/seed0: boom"):
        ex.train_spec(spec)


def test_cells_table_rounds_floats_and_names_the_thesis_rows():
    spec = {
        "cells": [
            {
                "name": "misa",
                "overrides": {"model": "misa", "lr": 3.169379995161721e-05, "misa_cmd_moments": 5},
            }
        ]
    }
    table = ex.cells_table(spec)
    assert table.loc[0, "thesis row"] == "MISA (FT)" and table.loc[0, "tables"] == "6.1, 6.2"
    assert table.loc[0, "overrides"] == "model=misa, lr=3.17e-05, misa_cmd_moments=5"
