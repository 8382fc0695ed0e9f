"""The experiments of thesis chapter 6.3 as sweep cells: tables 6.1/6.2, figures 6.2/6.3.

This module is the one place that says *what* is trained for the ablation (6.3.2-6.3.3) and
robustness (6.3.4) chapters and *where* each run lives:

- ``CELLS``: every configuration as a named sweep cell with its config overrides (AMB, its
  missing-modality variants, AMB-FT, MISA, MISA-Adapters, MAG-BERT, and AMB trained with noise
  augmentation).
- ``GRIDS``: per preset, the seeds and the robustness grid (corruption rates, noise draws).
  ``paper`` keeps the thesis' grids; ``embedded`` is sized to fit the 10-minute book on two CPU
  cores; ``smoke`` to run each chapter in about a minute in CI.
- ``runs_root`` / ``run_dir``: ``<runs>/<preset>[-<hash>]/<cell>/seed<seed>``, the layout of
  ``ambcore.sweep`` (``<runs_dir>/<cell>/seed<seed>``) with ``runs_dir = runs_root(...)``. The
  training chapter's AMB run is the ``amb`` cell's seed 0 folder, so the ablation sweep finds it
  finished and does not train it again. The hash names the overrides every cell shares
  (another PLM, another dataset file): two different setups never share a folder.
- ``design_spec`` / ``design_study``: the study of the choices the thesis leaves open (the
  [CLS] projection, the fusion wiring, the adapter placement): AMB's default design (the
  ``amb`` cell's runs) against one cell per alternative, same seeds.
- ``ablation_spec`` / ``robustness_spec``: sweep specs (dicts for ``ambcore.sweep.load_spec``);
  ``write_spec_files`` writes them as the YAML files under ``experiments/`` that
  ``python -m ambcore sweep experiments/ablation_embedded.yaml`` runs (a test keeps the files
  and this module in agreement).

Baselines and their original settings. MISA trains BERT's embeddings and its last three
layers (``finetune_layers="last:3"``) with its own recipe (``ambcore.models.misa
.ORIGINAL_MOSEI_SETTINGS``: lr 1e-4, batch 16, gradient values clipped at 1.0, MSE loss,
patience 6, learning rate halved from the best epoch twice before stopping); MAG-BERT
fine-tunes the whole BERT with its recipe (``ambcore.models.magbert.ORIGINAL_SETTINGS``: AdamW
lr 1e-5 with weight decay 0.01, linear warm-up over 10 % of the steps, batch 48, MSE). With
the paper preset the recipes apply in full; with the smaller
presets the settings that size the model or the training time (``SCALED_KEYS``: hidden sizes,
batch size, epochs, patience, text length) stay the preset's, so that every model of a
preset trains on the same budget. MISA-Adapters uses MISA's recipe with adapters instead of
fine-tuning. AMB-FT changes only the adaptation of AMB (embeddings + last three layers, the
thesis' 47.2 M on bert-base).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import multiprocessing
import os
import signal
import statistics
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml
from tqdm.auto import tqdm

from ambcore import interrupt, paths, report, runs, stats, sweep, tune
from ambcore.config import PRESETS, Config, get_config
from ambcore.errors import AmbError
from ambcore.models.magbert import ORIGINAL_SETTINGS
from ambcore.models.misa import ORIGINAL_MOSEI_SETTINGS
from ambcore.noise import NOISE_GRANULARITIES, NOISE_KINDS
from ambcore.overrides import from_env
from ambcore.report import pair_sentence
from ambcore.robustness import ROBUSTNESS_PREDICTIONS, robustness_curve, robustness_predictions
from ambcore.runs import atomic_write_text, machine_block
from ambcore.threads import child_environment, threads_per_process
from ambcore.tune import record_name

__all__ = [
    "Cell",
    "CELLS",
    "CELL_NAMES",
    "ABLATION_CELLS",
    "CONTROL_CELLS",
    "ROBUSTNESS_CELLS",
    "DESIGN_ALTERNATIVES",
    "DESIGN_CELLS",
    "design_spec",
    "design_study",
    "design_verdict",
    "design_family",
    "DESIGN_FAMILY",
    "BEYOND_ALTERNATIVES",
    "BEYOND_CELLS",
    "BEYOND_FAMILY",
    "BEYOND_SEEDS",
    "beyond_spec",
    "AUGMENT_RATE",
    "SCALED_KEYS",
    "Grid",
    "GRIDS",
    "grid",
    "cell_overrides",
    "cell_config",
    "shared_changes",
    "runs_root",
    "run_dir",
    "ablation_spec",
    "robustness_spec",
    "spec_path",
    "write_spec_files",
    "SPEC_DIR",
    "write_ablation_results",
    "robustness_curves",
    "robustness_curves_of_runs",
    "modality_drops",
    "planted_truth_check",
    "planted_truth_text",
    "modality_family",
    "MODALITY_PAIRS",
    "overrides_of",
    "run_experiment",
    "DEFAULT_EPOCH_SECONDS",
    "epoch_seconds",
    "scheduling_costs",
    "finished_runs",
    "spec_text",
]

SPEC_DIR = paths.PROJECT_ROOT / "experiments"

# Noise-augmented training (beyond the thesis): the fraction of training samples perturbed,
# each with one randomly chosen kind of noise over its whole modality (ambcore.noise).
AUGMENT_RATE = 0.3

# Keys of the baselines' original recipes that size the model or the training time; the
# smaller presets keep their own values for these (see the module docstring).
SCALED_KEYS = (
    "misa_hidden",
    "misa_fusion_ffn_dim",
    "batch_size",
    "max_epochs",
    "patience",
    "max_text_len",
)


@dataclass(frozen=True)
class Cell:
    """One configuration of chapter 6.3: a sweep cell (its folder name) and its overrides."""

    name: str  # sweep cell and folder name
    label: str  # the thesis' name of the row ("AMB-FT", "MISA (FT)", ...)
    overrides: Mapping[str, Any]  # on top of the preset (before SCALED_KEYS are restored)
    tables: tuple[str, ...] = ()  # thesis tables that have this row
    robustness: bool = False  # a curve of figure 6.3
    recipe: str = ""  # where non-default training settings come from


def _misa_recipe() -> dict[str, Any]:
    return dict(ORIGINAL_MOSEI_SETTINGS)


def _magbert_recipe() -> dict[str, Any]:
    return dict(ORIGINAL_SETTINGS)


def _cells() -> tuple[Cell, ...]:
    misa = _misa_recipe()
    misa_adapters = {
        k: v for k, v in misa.items() if k not in ("finetune_layers", "misa_finetune_embeddings")
    }
    misa_adapters["text_adaptation"] = "adapters"
    return (
        Cell("amb", "AMB", {"model": "amb"}, ("6.1", "6.2"), robustness=True),
        Cell("amb-text-only", "AMB text-only", {"model": "amb", "variant": "text-only"}, ("6.2",)),
        Cell("amb-no-text", "AMB no-text", {"model": "amb", "variant": "no-text"}, ("6.2",)),
        Cell(
            "amb-ft",
            "AMB-FT",
            {
                "model": "amb",
                "text_adaptation": "finetune",
                "finetune_layers": "last:3",
                "amb_finetune_embeddings": True,
            },
            ("6.2",),
            robustness=True,
        ),
        Cell(
            "misa",
            "MISA (FT)",
            misa,
            ("6.1", "6.2"),
            robustness=True,
            recipe="ambcore.models.misa.ORIGINAL_MOSEI_SETTINGS",
        ),
        Cell(
            "misa-adapters",
            "MISA-Adapters",
            misa_adapters,
            ("6.2",),
            recipe="ambcore.models.misa.ORIGINAL_MOSEI_SETTINGS, adapters",
        ),
        Cell(
            "mag-bert",
            "MAG-BERT (FT)",
            _magbert_recipe(),
            ("6.1",),
            recipe="ambcore.models.magbert.ORIGINAL_SETTINGS",
        ),
        Cell(
            "amb-shuffled-av",
            "AMB, audio-visual shuffled",
            {"model": "amb", "av_shuffle": True},
            recipe="negative control: audio-visual features permuted across utterances",
        ),
        Cell(
            "amb-noise-aug",
            "AMB + noise augmentation",
            {"model": "amb", "noise_augment_rate": AUGMENT_RATE},
            (),
            robustness=True,
            recipe=f"noise_augment_rate={AUGMENT_RATE} (beyond the thesis)",
        ),
    )


# The choices the thesis leaves open (ambcore.models.amb): one cell per alternative to AMB's
# default design; the default itself is the "amb" cell, whose runs the study reuses.
DESIGN_ALTERNATIVES: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    # cell: (choice, default setting, alternative setting, overrides)
    "amb-per-layer": ("[CLS] projection", "shared", "per layer", {"cls_projection": "per_layer"}),
    "amb-independent": ("fusion wiring", "chain", "independent", {"fusion_connect": "independent"}),
    "amb-pfeiffer": (
        "adapter placement",
        "ours",
        "Pfeiffer (AdapterHub)",
        {"adapter_placement": "pfeiffer"},
    ),
}


# The questions the thesis leaves for future work (7.2), as alternatives to AMB in the same
# form: a cross-attention fusion module ("the only part of the architecture that would have to
# change would be the feedforward network in the fusion layer") and the fused state fed back
# into the PLM (MAG-BERT's shift). Each cell changes that one choice and takes AMB's values.
BEYOND_ALTERNATIVES: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    "amb-cross-attention": (
        "fusion module",
        "feed-forward",
        "cross-attention over the AV sequences",
        {"fusion_module": "cross_attention"},
    ),
    "amb-shift": (
        "feedback into the PLM",
        "none",
        "shift (MAG-BERT's gate)",
        {"fusion_feedback": "shift"},
    ),
}


def _alternative_cells(alternatives: Mapping[str, tuple], recipe: str) -> tuple[Cell, ...]:
    return tuple(
        Cell(name, f"AMB, {choice}: {alternative}", {"model": "amb", **overrides}, recipe=recipe)
        for name, (choice, _, alternative, overrides) in alternatives.items()
    )


CELLS: dict[str, Cell] = {
    c.name: c
    for c in _cells()
    + _alternative_cells(DESIGN_ALTERNATIVES, "a choice the thesis leaves open")
    + _alternative_cells(BEYOND_ALTERNATIVES, "future work of the thesis (7.2)")
}
CELL_NAMES = tuple(CELLS)
ABLATION_CELLS = tuple(c.name for c in CELLS.values() if c.tables)
# The controls of the chapter's test (ambcore.report.CONTROLS) train in the ablation's sweep.
CONTROL_CELLS = ("amb-shuffled-av",)
ROBUSTNESS_CELLS = tuple(c.name for c in CELLS.values() if c.robustness)
DESIGN_CELLS = ("amb", *DESIGN_ALTERNATIVES)
BEYOND_CELLS = ("amb", *BEYOND_ALTERNATIVES)
# Seeds of the beyond-the-thesis study per preset (the first of the grid's): the embedded book
# trains each alternative on 3 seeds to stay within its time (AMB's row has all of its runs;
# the test takes cells of different sizes); the paper study trains all five.
BEYOND_SEEDS = {"smoke": 1, "embedded": 3, "paper": 5}


def _get_cell(name: str) -> Cell:
    if name not in CELLS:
        raise AmbError(f"unknown experiment cell {name!r}; cells: {', '.join(CELL_NAMES)}")
    return CELLS[name]


def cell_overrides(name: str, preset: str, tuned: bool = True) -> dict[str, Any]:
    """The config overrides of cell ``name`` for ``preset``: its recipe (``SCALED_KEYS`` kept
    from the preset unless it is ``paper``), then, with ``tuned``, the values the preset's
    tuning record chose for the cell's model (``tuned_values``), then ``AMB_SET``."""
    cell = _get_cell(name)
    if preset not in PRESETS:
        raise AmbError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
    chosen = tuned_values(name, preset) if tuned else {}
    if preset == "paper":
        return {**cell.overrides, **chosen, **_env_set()}
    out = {k: v for k, v in cell.overrides.items() if k not in SCALED_KEYS}
    if str(out.get("finetune_layers", "")).startswith("last:"):
        out["finetune_layers"] = f"last:{GRIDS[preset].finetune_last}"
    return {**out, **chosen, **_env_set()}


def tuned_values(cell: str, preset: str) -> dict[str, Any]:
    """The values the tuning record of ``preset`` chose for ``cell`` (``ambcore.tune``:
    ``current_record``, ``chosen_values``): its own study's when it has one (AMB, AMB-FT, MISA,
    MISA-Adapters, MAG-BERT), else its model's (AMB's variants, AMB + noise augmentation and
    the design alternatives take AMB's). ``cell`` may also be a model name. {} without a
    matching record."""
    model = CELLS[cell].overrides.get("model", "amb") if cell in CELLS else cell
    return tune.chosen_values(tune.current_record(preset), cell, model)


def _env_set() -> dict[str, Any]:
    """``AMB_SET`` (``ambcore.overrides``): values every cell takes, over its own recipe."""
    return from_env()


def cell_config(name: str, preset: str, seed: int = 0, **shared: Any) -> Config:
    """The config of cell ``name`` under ``preset`` with the ``shared`` overrides (the cell's own
    overrides win, as in ``ambcore.sweep``)."""
    values = {k: v for k, v in shared.items() if k != "seed"}
    return get_config(preset, **{**values, **cell_overrides(name, preset)}, seed=seed)


# ---- grids -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """How many runs and noise evaluations a preset affords."""

    seeds: tuple[int, ...]
    rates: tuple[float, ...]  # corruption rates of figure 6.3 (0 = clean, up to 1.0)
    n_draws: int  # independent noise draws per (run, kind, rate)
    note: str = ""
    # "last:K" of the fine-tuned cells (AMB-FT, MISA): 3 of bert-base's 12 layers in the
    # thesis; the smoke preset's tiny BERT has only 2.
    finetune_last: int = 3
    # Runs at once (ambcore.experiments.run_experiment): 0 = one per CPU core / GPU; 1 = in
    # this process (no subprocess start-up, best for tiny runs).
    parallel: int = 0


GRIDS: dict[str, Grid] = {
    "smoke": Grid(
        seeds=(0,),
        rates=(0.0, 0.5, 1.0),
        n_draws=1,
        finetune_last=1,
        parallel=1,
        note="CI: a tiny random BERT, one seed, three rates",
    ),
    # Five seeds, so that a run-level comparison of two cells can reach significance (ambcore.stats;
    # the training chapter's AMB run is seed 0; tuning trains at seed 100, never evaluated): every cell is a full MiniLM
    # training of up to 4 epochs over 320 utterances, about 23 CPU-seconds (AMB, one thread)
    # to 30 (the fine-tuned baselines; results/phases-embedded.json); two runs at a time
    # on two cores. Four rates: the clean pass (once for all kinds, see robustness_curves)
    # and three corruption levels, 13 passes over the test split per run instead of 20.
    # AMB and MISA compute their text features once per test batch for every visual/acoustic
    # pass (ambcore.models.text_cache): 8 against 22 CPU s for one AMB run's curves.
    "embedded": Grid(
        seeds=(0, 1, 2, 3, 4),
        rates=(0.0, 0.25, 0.5, 1.0),
        n_draws=1,
        note="sized for the 10-minute book on two CPU cores",
    ),
    "paper": Grid(
        seeds=(0, 1, 2, 3, 4),
        rates=(0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0),
        n_draws=3,
        note="five runs per cell as MMSA reports them, rates up to 1.0",
    ),
}


def grid(preset: str, n_seeds: int | None = None) -> Grid:
    """The preset's grid; ``n_seeds`` (if given and > 0) replaces its seeds by 0..n_seeds-1."""
    if preset not in GRIDS:
        raise AmbError(f"no experiment grid for preset {preset!r}; presets: {', '.join(GRIDS)}")
    g = GRIDS[preset]
    if n_seeds:
        g = dataclasses.replace(g, seeds=tuple(range(int(n_seeds))))
    return g


# ---- where runs live ------------------------------------------------------------------------


def shared_changes(preset: str, shared: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The shared overrides that really change ``preset`` (type-checked; seed excluded).

    A dataset given through AMB_DATA (the paper preset's ``data=""``) is not a change: the
    notebooks and ``python -m ambcore sweep experiments/ablation_paper.yaml`` then agree on
    ``<runs>/paper``. A dataset given as ``data=PATH`` gets its own folder."""
    base = get_config(preset)
    cfg = get_config(preset, **{k: v for k, v in dict(shared or {}).items() if k != "seed"})
    return {k: v for k, v in cfg.to_dict().items() if k != "seed" and v != getattr(base, k)}


def runs_root(preset: str, shared: Mapping[str, Any] | None = None) -> Path:
    """``<runs>/<preset>``, or ``<runs>/<preset>-<hash>`` when ``shared`` overrides change the
    preset (e.g. another PLM or a dataset file); the sweep's ``runs_dir``."""
    changed = shared_changes(preset, shared)
    if _env_set():  # a dry run's shrunk runs never share a folder with full ones
        changed = {**changed, "AMB_SET": _env_set()}
    name = preset
    if changed:
        digest = hashlib.sha256(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:8]
        name = f"{preset}-{digest}"
    return paths.runs_dir() / name


def run_dir(cfg: Config, cell: str) -> Path:
    """The run folder of ``cfg`` as cell ``cell``: ``runs_root(...)/<cell>/seed<seed>``.

    The shared overrides are recovered as the fields where ``cfg`` differs from the cell's own
    config (valid for every field the cell does not set itself). The training chapter calls
    ``run_dir(cfg, "amb")`` and thereby trains the ablation's AMB seed.
    """
    own = cell_config(cell, cfg.preset, seed=cfg.seed)
    shared = {k: v for k, v in cfg.to_dict().items() if k != "seed" and v != getattr(own, k)}
    return runs_root(cfg.preset, shared) / cell / f"seed{cfg.seed}"


# ---- sweep specs ------------------------------------------------------------------------------


def _spec(
    name: str,
    cells: Sequence[str],
    preset: str,
    n_seeds: int | None,
    shared: Mapping[str, Any] | None,
    runs_dir: str | os.PathLike | None,
    tuned: bool = True,
) -> dict[str, Any]:
    g = grid(preset, n_seeds)
    shared = dict(shared or {})
    if runs_dir is None:
        root = runs_root(preset, shared)
        # Relative to the runs folder when it is the default one (portable spec files).
        runs_dir = root.name if root.parent == paths.runs_dir() else str(root)
    spec: dict[str, Any] = {
        "name": f"{name}_{preset}",
        "preset": preset,
        "runs_dir": str(runs_dir),
        "seeds": list(g.seeds),
    }
    if shared:
        spec["overrides"] = shared
    spec["cells"] = [{"name": c, "overrides": cell_overrides(c, preset, tuned)} for c in cells]
    return spec


def ablation_spec(
    preset: str,
    n_seeds: int | None = None,
    shared: Mapping[str, Any] | None = None,
    runs_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The sweep of tables 6.1/6.2: every ablation cell and the controls of the test
    (``CONTROL_CELLS``) over the preset's seeds."""
    return _spec("ablation", ABLATION_CELLS + CONTROL_CELLS, preset, n_seeds, shared, runs_dir)


def robustness_spec(
    preset: str,
    n_seeds: int | None = None,
    shared: Mapping[str, Any] | None = None,
    runs_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The runs of figure 6.3: AMB, MISA, AMB-FT (shared with the ablation, found finished)
    and AMB with noise augmentation."""
    return _spec("robustness", ROBUSTNESS_CELLS, preset, n_seeds, shared, runs_dir)


def design_spec(
    preset: str,
    n_seeds: int | None = None,
    shared: Mapping[str, Any] | None = None,
    runs_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The study of the choices the thesis leaves open: AMB (the ablation's runs, found
    finished) and one cell per alternative (``DESIGN_ALTERNATIVES``), over the preset's seeds."""
    return _spec("design", DESIGN_CELLS, preset, n_seeds, shared, runs_dir)


def beyond_spec(
    preset: str,
    n_seeds: int | None = None,
    shared: Mapping[str, Any] | None = None,
    runs_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The study of the thesis' future work (7.2): AMB (the ablation's runs, found finished)
    and one cell per alternative (``BEYOND_ALTERNATIVES``) over the first ``BEYOND_SEEDS`` of
    the preset's seeds (``n_seeds`` given: that many)."""
    spec = _spec("beyond", BEYOND_CELLS, preset, n_seeds, shared, runs_dir)
    if not n_seeds:
        spec["seeds"] = spec["seeds"][: BEYOND_SEEDS.get(preset, len(spec["seeds"]))]
    return spec


def recipes_spec(
    preset: str,
    n_seeds: int | None = None,
    shared: Mapping[str, Any] | None = None,
    runs_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The ablation's cells at their recipes' values, untouched by tuning: where the tuning
    studies start (``experiments/tune_<preset>.yaml`` reads it) and a way to train the
    recipes as published (runs folder ``<preset>-recipes``)."""
    if runs_dir is None:
        runs_dir = runs_root(preset, shared).with_name(f"{runs_root(preset, shared).name}-recipes")
    return _spec("recipes", ABLATION_CELLS, preset, n_seeds, shared, runs_dir, tuned=False)


_SPECS = {
    "recipes": recipes_spec,
    "ablation": ablation_spec,
    "robustness": robustness_spec,
    "design": design_spec,
    "beyond": beyond_spec,
}


def cells_table(spec: Mapping[str, Any]):
    """The cells of a spec as a table: cell, the thesis row, its tables, and its overrides
    (floats to 3 significant digits: tuned values are exact in the spec, rounded here)."""

    def shown(value: Any) -> str:
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    return pd.DataFrame(
        [
            {
                "cell": c["name"],
                "thesis row": CELLS[c["name"]].label,
                "tables": ", ".join(CELLS[c["name"]].tables),
                "overrides": ", ".join(f"{k}={shown(v)}" for k, v in c["overrides"].items()),
            }
            for c in spec["cells"]
        ]
    )


def spec_path(kind: str, preset: str, folder: str | os.PathLike | None = None) -> Path:
    return Path(folder or SPEC_DIR) / f"{kind}_{preset}.yaml"


def spec_text(kind: str, preset: str) -> str:
    """The committed YAML of spec ``kind`` (``_SPECS``: recipes, ablation, robustness, design)
    for ``preset``."""
    spec = _SPECS[kind](preset, runs_dir=f"{preset}-recipes" if kind == "recipes" else preset)
    if kind == "recipes":
        values = "the cells at their recipes' values (where tuning starts)"
    elif tuned_values("amb", preset) or tuned_values("misa", preset):
        values = f"with the values chosen by results/{record_name(preset)}"
    else:
        values = "at the recipes' values (no tuning record for this preset)"
    part = "the thesis' future work (7.2)" if kind == "beyond" else "thesis chapter 6.3"
    header = (
        f"# Sweep spec generated by ambcore.experiments.write_spec_files(): the {kind} runs of\n"
        f"# {part} for the {preset} preset ({GRIDS[preset].note}),\n"
        f"# {values}.\n"
        f"#   python -m ambcore sweep {spec_path(kind, preset, 'experiments')}\n"
        "# runs_dir is relative to the runs folder (AMB_RUNS, default <root>/runs).\n"
    )
    return header + yaml.safe_dump(spec, sort_keys=False, default_flow_style=None, width=100)


def write_spec_files(folder: str | os.PathLike | None = None) -> list[Path]:
    """Write ``experiments/<kind>_<preset>.yaml`` for every kind of ``_SPECS`` and preset (the
    recipes first: the tuning specs read them; the others take the tuning records' values)."""
    return [
        atomic_write_text(spec_path(kind, preset, folder), spec_text(kind, preset))
        for kind in _SPECS
        for preset in GRIDS
    ]


# ---- results files for the book ------------------------------------------------------------


def write_ablation_results(
    runs_frame, summary, results_dir, acc2: str = "non0", family=None
) -> dict[str, Path]:
    """Write the ablation's results files into ``results_dir``, in the layout of
    ``ambcore.report.write_report`` (which the Results chapter reads): ``table_6_1.csv`` and
    ``table_6_2.csv`` (``report.table_6_1/6_2``: the thesis' and cited rows, ours beside them),
    ``figure_6_2_points.csv``, and ``ablation_runs.csv`` / ``ablation_summary.csv`` (one row per
    run / per cell), and with ``family`` (``report.ablation_family``) ``ablation_comparisons.csv``
    (every comparison of the chapter, every metric). Unlike ``write_report`` it takes the
    frames, so that only the ablation's cells are written (a runs folder also holds the
    robustness chapter's runs)."""
    results_dir = Path(results_dir)
    frames = {
        "table_6_1": report.table_6_1(summary, acc2),
        "table_6_2": report.table_6_2(summary, acc2),
        "figure_6_2_points": report.acc7_vs_params(summary),
        "ablation_runs": runs_frame,
        "ablation_summary": summary,
    }
    if family is not None:
        frames["ablation_comparisons"] = family
    return {
        name: atomic_write_text(results_dir / f"{name}.csv", frame.to_csv(index=False))
        for name, frame in frames.items()
    }


def _mean_std(row, metric: str) -> str:
    std = row[f"{metric}_std"]
    return (
        f"{row[f'{metric}_mean']:.3f} ± {std:.3f}"
        if std == std
        else f"{row[f'{metric}_mean']:.3f} (one seed)"
    )


DESIGN_METRICS = {"test_mae": "MAE", "test_corr": "corr", "test_acc7": "Acc-7"}
# Family 2 of the Ablation chapter: each alternative against AMB's default, every metric of
# ambcore.stats.METRICS, Holm-adjusted together (the difference is the alternative minus AMB).
DESIGN_FAMILY = tuple((cell, cell, "amb") for cell in DESIGN_ALTERNATIVES)


# The beyond-the-thesis chapter's family, in the same form: each alternative minus AMB.
BEYOND_FAMILY = tuple((cell, cell, "amb") for cell in BEYOND_ALTERNATIVES)


def design_family(
    predictions, runs_frame=None, n_boot: int = 1000, seed: int = 0, pairs=DESIGN_FAMILY
):
    """``ambcore.stats.family`` of ``pairs``: the design study's comparisons (``DESIGN_FAMILY``)
    or the beyond-the-thesis study's (``BEYOND_FAMILY``)."""
    return stats.family(predictions, pairs, runs_frame=runs_frame, n_boot=n_boot, seed=seed)


def design_verdict(
    family, cell: str, synthetic: bool, alpha: float = 0.05, alternatives=DESIGN_ALTERNATIVES
) -> str:
    """The sentence for one alternative (``report.pair_sentence`` of its row of the design
    family), led by the choice it changes."""
    choice, default, alternative, _ = alternatives[cell]
    names = {cell: f"{alternative} ({choice})", "amb": f"{default} (AMB's default)"}
    return f"{choice}: " + pair_sentence(family, cell, names, synthetic, alpha)


def design_study(summary, family, synthetic: bool, alternatives=DESIGN_ALTERNATIVES):
    """One row per setting of each open choice: trainable parameters (M), test MAE / corr /
    Acc-7 as mean ± std over seeds, and for the alternatives ``design_verdict``'s sentence.
    ``summary`` is ``ambcore.report.summarize`` output holding AMB and every cell of
    ``alternatives`` (``DESIGN_ALTERNATIVES``, or ``BEYOND_ALTERNATIVES`` for the chapter
    beyond the thesis); ``family`` is ``design_family``'s of the same pairs."""
    by_cell = summary.set_index("cell")
    missing = [c for c in ("amb", *alternatives) if c not in by_cell.index]
    if missing:
        raise AmbError(f"design_study: no finished runs of cell(s) {missing} in the summary")
    rows = []
    for cell, (choice, default, alternative, _) in alternatives.items():
        for name, setting in (("amb", f"{default} (AMB's default)"), (cell, alternative)):
            row = by_cell.loc[name]
            rows.append(
                {
                    "choice": choice,
                    "setting": setting,
                    "cell": name,
                    "n_seeds": int(row["n_seeds"]),
                    "trainable (M)": round(float(row["trainable_params_m"]), 3),
                    **{label: _mean_std(row, m) for m, label in DESIGN_METRICS.items()},
                    "verdict": ""
                    if name == "amb"
                    else design_verdict(family, cell, synthetic, alternatives=alternatives),
                }
            )
    return pd.DataFrame(rows)


# ---- robustness (figure 6.3) -------------------------------------------------------------------

ROBUSTNESS_FILE = "robustness.csv"  # inside a run folder: its curves for one grid


def _cached_curves(run_dir: Path, rates: Sequence[float], n_draws: int):
    """The run's ``robustness.csv`` if it holds exactly this grid, else None."""
    cache = run_dir / ROBUSTNESS_FILE
    if not cache.exists() or not (run_dir / ROBUSTNESS_PREDICTIONS).exists():
        return None
    frame = pd.read_csv(cache)
    same = (
        sorted(frame["rate"].unique()) == sorted(set(rates))
        and set(frame["n_draws"]) == {n_draws}
        and set(frame["kind"]) == set(NOISE_KINDS)
        and set(NOISE_GRANULARITIES) <= set(frame.get("granularity", ()))
    )
    return frame if same else None


def robustness_curves(
    run_dir: str | os.PathLike, rates: Sequence[float], n_draws: int, progress: bool = False
):
    """``ambcore.robustness.robustness_curve`` of a run for all four kinds, cached in the run folder
    (``robustness.csv``; recomputed when the rates or draws differ). Noise seeds are the
    run's seed, so every run of a model gets independent draws."""
    run_dir = Path(run_dir)
    rates = [float(r) for r in rates]
    frame = _cached_curves(run_dir, rates, n_draws)
    if frame is None:
        seed = runs.read_config(run_dir).seed
        frame = robustness_curve(
            run_dir,
            NOISE_KINDS,
            rates=rates,
            n_draws=n_draws,
            seed=seed,
            progress=progress,
            predictions_out=run_dir / ROBUSTNESS_PREDICTIONS,
        )
        # the clean split predicted once; the noisy predictions kept for the chapter's tests
        runs.atomic_write_text(run_dir / ROBUSTNESS_FILE, frame.to_csv(index=False))
    frame["run"] = str(run_dir)  # the folder may have moved since the cache was written
    # The cell's name in the book: AMB with noise augmentation is not "AMB".
    cell_file = run_dir / "sweep.json"
    if cell_file.exists():
        cell = runs.read_json(cell_file).get("cell")
        if cell in CELLS:
            frame["row_name"] = CELLS[cell].label
    return frame


def robustness_curves_of_runs(
    run_dirs: Sequence[str | os.PathLike],
    rates: Sequence[float],
    n_draws: int,
    parallel: int = 0,
    progress: bool = True,
):
    """``robustness_curves`` of every run, concatenated in the order of ``run_dirs``.

    Runs without a valid cache are evaluated ``parallel`` at a time in worker processes with
    one CPU thread each (0: one per CPU core; 1, or a GPU machine: in this process, one after
    another): on two cores, two single-thread evaluations finish well before two-thread ones
    in turn."""
    run_dirs = [Path(r) for r in run_dirs]
    rates = [float(r) for r in rates]
    todo = {r for r in run_dirs if _cached_curves(r, rates, n_draws) is None}
    if parallel <= 0:
        parallel = 1 if torch.cuda.is_available() else (os.cpu_count() or 1)
    bar = tqdm(
        total=len(run_dirs),
        initial=len(run_dirs) - len(todo),
        desc="noise",
        unit="run",
        disable=not progress,
    )
    if min(parallel, len(todo)) > 1:
        # spawned workers read OMP_NUM_THREADS when they import torch; they end with this
        # process, and an error or Ctrl-C here stops them at once instead of waiting for them
        workers = min(parallel, len(todo))
        with (
            _threads_per_process(threads_per_process(workers)),
            interrupt.watched(),
            ProcessPoolExecutor(
                workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=interrupt.die_with_parent,
            ) as pool,
        ):
            try:
                with interrupt.signals_ignored([signal.SIGINT]):  # the workers leave Ctrl-C here
                    jobs = [pool.submit(robustness_curves, r, rates, n_draws) for r in todo]
                for job in as_completed(jobs):
                    job.result()  # raises the worker's error; the curves are now cached
                    bar.update(1)
            except BaseException:
                interrupt.stop_pool(pool)
                raise
        todo = set()
    frames = []
    for run_dir in run_dirs:  # cached ones are read back; the rest computed here
        frames.append(robustness_curves(run_dir, rates, n_draws))
        if run_dir in todo:
            bar.update(1)
    bar.close()
    return pd.concat(frames, ignore_index=True)


def modality_drops(curve_summary, metric: str = "corr"):
    """Per model and kind of noise: ``metric`` on clean inputs, at the highest rate, the drop
    between them, and the spread over runs at the highest rate (std). From
    ``ambcore.robustness.summarize_curves`` output."""
    rows = []
    for (model, kind), part in curve_summary.groupby(["row_name", "kind"], sort=False):
        part = part.sort_values("rate")
        clean, worst = part.iloc[0], part.iloc[-1]
        rows.append(
            {
                "model": model,
                "kind": kind,
                "clean_rate": clean["rate"],
                "max_rate": worst["rate"],
                f"{metric}_clean": clean[f"{metric}_mean"],
                f"{metric}_at_max": worst[f"{metric}_mean"],
                "drop": clean[f"{metric}_mean"] - worst[f"{metric}_mean"],
                "std_at_max": worst[f"{metric}_std"],
                "n_runs": int(part["n_runs"].min()),
            }
        )
    return pd.DataFrame(rows)


def planted_truth_check(drops, model: str) -> dict[str, Any]:
    """Does ``model``'s robustness recover the synthetic dataset's planted ordering (text
    dominant, visual informative, acoustic weak)? From ``modality_drops``: the text drop is the
    larger of deletion/replacement; recovered when text > visual > acoustic drop."""
    part = drops[drops["model"] == model].set_index("kind")["drop"]
    missing = [k for k in ("deletion", "replacement", "visual", "acoustic") if k not in part]
    if missing:
        raise AmbError(f"planted_truth_check: model {model!r} has no curve for {missing}")
    text = float(max(part["deletion"], part["replacement"]))
    visual, acoustic = float(part["visual"]), float(part["acoustic"])
    return {
        "model": model,
        "text_drop": text,
        "visual_drop": visual,
        "acoustic_drop": acoustic,
        "text_dominant": text > visual and text > acoustic,
        "visual_over_acoustic": visual > acoustic,
        "recovered": text > visual > acoustic,
    }


# The robustness chapter's family: per model, the correlation at the highest rate of each text
# noise against visual noise, and of visual against acoustic noise (ambcore.stats.compare over
# the model's runs and the test videos; Holm across every model's comparisons). A lower
# correlation under a kind of noise is a larger drop from the same clean runs.
MODALITY_PAIRS = (("deletion", "visual"), ("replacement", "visual"), ("visual", "acoustic"))


def modality_family(
    run_dirs_by_model: Mapping[str, Sequence[str | os.PathLike]], n_boot: int = 1000, seed: int = 0
):
    """``ambcore.stats.family`` of ``MODALITY_PAIRS`` for every model (``{row name: its run
    folders}``), on the correlation of the noisy predictions each run kept at the highest rate
    (``ambcore.robustness.robustness_predictions``). The two conditions of a pair are the same
    runs: treating them as independent samples makes the test conservative, not liberal."""
    predictions, pairs = {}, []
    for model, run_dirs in run_dirs_by_model.items():
        for kind in NOISE_KINDS:
            predictions[f"{model}|{kind}"] = robustness_predictions(run_dirs, kind)
        pairs += [(f"{model}|{a}<{b}", f"{model}|{a}", f"{model}|{b}") for a, b in MODALITY_PAIRS]
    return stats.family(predictions, pairs, metrics=("corr",), n_boot=n_boot, seed=seed)


def planted_truth_text(
    drops, family, synthetic: bool, n_runs: int, rate: float, alpha: float = 0.05
) -> tuple[str, list[str]]:
    """The robustness chapter's reading: an introduction and one line per model with its text,
    visual and acoustic drops in correlation at ``rate`` (``modality_drops``) and what the
    tests of ``family`` (``modality_family``) say of the ordering text > visual > acoustic.
    Without synthetic data there is no planted truth to recover, so the lines state what the
    tests found."""
    lines = []
    for model in dict.fromkeys(drops["model"]):
        check = planted_truth_check(drops, model)
        found = []
        for a, b in MODALITY_PAIRS:
            rows = family[family["key"] == f"{model}|{a}<{b}"]
            if rows.empty or rows["p_holm"].isna().all():
                found.append((a, b, None, "not testable (a single run or no noisy predictions)"))
                continue
            r = rows.iloc[0]
            called = bool(r["p_holm"] < alpha and r["diff"] < 0)
            word = (
                f"{a} noise costs more than {b} noise"
                if called
                else f"{a} against {b}: not distinguishable"
                if r["p_holm"] >= alpha
                else f"{a} noise costs less than {b} noise"
            )
            found.append(
                (
                    a,
                    b,
                    called,
                    f"{word} (corr {r['diff']:+.3f} [{r['lo']:+.3f}, "
                    f"{r['hi']:+.3f}], p = {r['p_holm']:.2g})",
                )
            )
        tested = "; ".join(text for *_, text in found)
        # text dominant: at least one of the two text corruptions costs more than visual noise
        # (both are in the Holm family); then visual above acoustic
        text_step = any(called for a, b, called, _ in found if b == "visual" and a != "visual")
        recovered = text_step and all(called for a, _, called, _ in found if a == "visual")
        head = (
            f"{model}: text {check['text_drop']:+.3f}, visual {check['visual_drop']:+.3f}, "
            f"acoustic {check['acoustic_drop']:+.3f}"
        )
        if synthetic:
            verdict = "recovers it" if recovered else "does not recover it"
            lines.append(f"{head} - {verdict}: {tested}")
        else:
            lines.append(f"{head}: {tested}")
    many = f"{n_runs} run(s) per model, Holm-adjusted across every model's three comparisons"
    if not synthetic:
        return (
            "This build is not on the synthetic dataset, so there is no planted ground truth; "
            f"drops in correlation at rate {rate:g} and the tests of their ordering ({many}):"
        ), lines
    intro = (
        "The synthetic dataset plants text as the dominant modality, the visual features as "
        "informative and the acoustic ones as weak. If a model uses what was planted, corrupting "
        "text costs the most correlation, visual noise less, acoustic noise least. A model "
        "recovers it when the test (ambcore.stats: runs and test videos) calls each step of that "
        "ordering: at least one text corruption costing more than visual noise, and visual noise "
        f"more than acoustic noise. Drops in correlation at rate {rate:g} and the tests ({many}"
        + ("; a single run cannot be tested" if n_runs < 2 else "")
        + "):"
    )
    return intro, lines


# ---- running ------------------------------------------------------------------------------------


def overrides_of(cfg: Config) -> dict[str, Any]:
    """The fields where ``cfg`` differs from its preset (seed excluded): the overrides a chapter
    shares with every cell (e.g. ``plm`` and ``data`` from its parameters)."""
    base = get_config(cfg.preset, **_env_set())  # AMB_SET is every cell's already
    return {k: v for k, v in cfg.to_dict().items() if k != "seed" and v != getattr(base, k)}


@contextlib.contextmanager
def _threads_per_process(n: int):
    """Child processes started inside the block use ``n`` CPU threads each (OpenMP/MKL) and
    wait passively (``ambcore.threads``).

    Two runs with one thread each use two cores far better than one run with two threads,
    whose threads spin-wait for each other on a busy machine."""
    with child_environment(n):
        yield


# ---- scheduling: run costs measured by earlier runs ---------------------------------------

# Seconds of one training epoch assumed for a cell that no earlier run has measured, when no
# other cell of the sweep has been measured either (then every cell costs the same per epoch
# and the longer budget starts first). An unmeasured cell next to measured ones costs their
# median per epoch. Only the order in which parallel runs start depends on these estimates.
DEFAULT_EPOCH_SECONDS = 10.0


def epoch_seconds(run_dir: str | os.PathLike) -> dict[str, float] | None:
    """What an earlier run measured: its mean seconds per training epoch (``history.csv``) and
    the calibration probe of the machine that ran it (``env.json``, GFLOP/s; None if absent).
    None when the run has no finished epoch."""
    paths = runs.RunPaths(Path(run_dir))
    if not paths.history.exists():
        return None
    try:
        history = runs.read_history(paths.root)
    except (OSError, ValueError):  # an unreadable or empty history is no measurement
        return None
    seconds = history["seconds"].dropna() if "seconds" in history else []
    if len(seconds) == 0:
        return None
    probe = None
    if paths.env.exists():
        probe = ((runs.read_json(paths.env).get("machine") or {}).get("probe") or {}).get("gflops")
    return {"epoch_s": float(seconds.mean()), "probe_gflops": float(probe) if probe else None}


def _scaled(measured: dict[str, float], probe_now: float | None) -> float:
    """Seconds per epoch on this machine: a faster probe here means a shorter epoch."""
    then = measured["probe_gflops"]
    if then and probe_now:
        return measured["epoch_s"] * then / probe_now
    return measured["epoch_s"]


def scheduling_costs(cells, probe_now: float | None = None) -> dict[str, float]:
    """Estimated training seconds per sweep cell name, for the order of parallel runs.

    A cell's cost is its seconds per epoch, the median over its runs (any seed) that have
    finished an epoch, scaled by the ratio of the calibration probes (``ambcore.runs
    .matmul_probe``) of the machine that measured it and this one (``probe_now``), times its
    ``max_epochs``. Unmeasured cells: the median of the measured ones per epoch, else
    ``DEFAULT_EPOCH_SECONDS``. ``cells``: ``ambcore.sweep.SweepCell`` objects."""
    by_name: dict[str, list] = {}
    for cell in cells:
        by_name.setdefault(cell.name, []).append(cell)
    per_epoch: dict[str, float] = {}
    for name, group in by_name.items():
        folders = {c.run_dir.parent for c in group}
        runs_of_cell = sorted(d for f in folders if f.is_dir() for d in f.glob("seed*"))
        measured = [m for m in map(epoch_seconds, runs_of_cell) if m is not None]
        if measured:
            per_epoch[name] = statistics.median(_scaled(m, probe_now) for m in measured)
    fallback = statistics.median(per_epoch.values()) if per_epoch else DEFAULT_EPOCH_SECONDS
    return {
        name: per_epoch.get(name, fallback) * max(g[0].cfg.max_epochs, 1)
        for name, g in by_name.items()
    }


def run_experiment(spec: Mapping[str, Any], parallel: int = 0, progress: bool = True):
    """Run a spec of this module with ``ambcore.sweep.run_sweep``: finished cells are skipped,
    unfinished ones resumed.

    ``parallel``: runs at once. 0 picks one per GPU on a GPU machine, else one per CPU core (at
    most 2 on two cores); 1 trains in this process. Parallel runs go to one persistent worker
    process per slot (``ambcore.sweep_workers``), each with ``cores // parallel`` threads, started costliest first by
    ``scheduling_costs`` (earlier runs' ``history.csv``, scaled by the calibration probe).
    """
    loaded = sweep.load_spec(spec)
    cuda = torch.cuda.is_available()
    cores = os.cpu_count() or 1
    if parallel <= 0 and loaded.preset in GRIDS:
        parallel = GRIDS[loaded.preset].parallel
    if parallel <= 0:
        parallel = torch.cuda.device_count() if cuda else cores
    todo = sum(1 for _ in loaded.cells) * len(loaded.seeds)
    if parallel <= 1 or todo <= 1:
        return sweep.run_sweep(loaded, progress=progress)

    # Measured once here: the workers inherit the probe (ambcore.runs.machine_block).
    probe_now = machine_block()["probe"]["gflops"]
    costs = scheduling_costs(sweep.plan(loaded), probe_now)
    with _threads_per_process(1 if cuda else threads_per_process(parallel, cores=cores)):
        # One persistent worker per slot (ambcore.sweep_workers: imports and the PLM once);
        # AMB_SWEEP_WORKERS=fresh starts a process per run instead (the earlier path).
        workers = os.environ.get("AMB_SWEEP_WORKERS", "persistent")
        return sweep.run_sweep(
            loaded,
            max_parallel=parallel,
            workers=workers,
            progress=progress,
            cost=lambda cell: costs.get(cell.name, 0.0),
        )


def train_spec(spec: Mapping[str, Any], parallel: int = 0, collect_only: bool = False):
    """What a chapter's training cell does: ``run_experiment``, a table of the outcomes (cell,
    seed, outcome, seconds) printed, and one error listing the failed runs. ``collect_only``:
    train nothing. Returns the outcomes (None with ``collect_only``)."""
    if collect_only:
        print(f"collect_only: nothing is trained; reading the finished runs of {spec['name']}")
        return None
    result = run_experiment(spec, parallel=parallel)
    outcomes = result.frame()[["cell", "seed", "outcome", "seconds"]]
    print(outcomes.to_string(index=False, float_format=lambda s: f"{s:.0f}"))
    print(
        f"trained {int((outcomes['outcome'] != 'skipped').sum())} run(s) in "
        f"{outcomes['seconds'].sum():.0f} s of run time"
    )
    if result.failed:
        raise RuntimeError("failed runs:\n" + "\n\n".join(f.error for f in result.failed))
    return outcomes


def finished_runs(spec: Mapping[str, Any]) -> list[Path]:
    """The run folders of ``spec`` that are finished (DONE), in the spec's order."""
    return [c.run_dir for c in sweep.plan(sweep.load_spec(spec)) if c.status == "done"]
