"""The Status page's tables: what produced this build of the book (machine, device, packages,
git revision, preset, data and language model), the wall and CPU time of every chapter as the
main job measured it, and the benchmark records under results/.

The QuantEcon lectures' habit: a status page records the machine and the environment that
produced the book. The page itself is ``notebooks/08_status.py``; this module builds its tables
from ``ambcore.runs.collect_env``, the main job's ``timings.json`` (``ambcore.book``) and the
benchmark files (``ambcore.bench``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import torch

from ambcore import paths, runs
from ambcore.bench import efficiency_frame, summary_frame, targets_frame
from ambcore.bench.paper import paper_geometry_frame
from ambcore.book import CHAPTERS, default_timings_path
from ambcore.config import Config
from ambcore.errors import AmbError
from ambcore.pages import banner

__all__ = [
    "BOOK_PACKAGES",
    "environment_report",
    "revision_label",
    "device_label",
    "build_provenance_table",
    "load_timings",
    "timings_table",
    "BenchmarkRecord",
    "benchmark_tables",
]


# ---- what produced this build ---------------------------------------------------------------


# Beyond the training packages that a run folder's env.json records.
BOOK_PACKAGES = (
    "pandas",
    "matplotlib",
    "jupyter-book",
    "myst-nb",
    "sphinx",
    "papermill",
    "jupytext",
)


def environment_report() -> dict[str, Any]:
    """Machine, device, package versions and git revision of the calling process.

    The same record a run folder's ``env.json`` holds (``ambcore.runs.collect_env``), plus the
    CPU model, the memory and the versions of the packages that build the book.
    """
    env = runs.collect_env("cuda" if torch.cuda.is_available() else "cpu")
    for name in BOOK_PACKAGES:
        try:
            env["versions"][name] = version(name)
        except PackageNotFoundError:
            env["versions"][name] = None
    if torch.cuda.is_available():
        env["device_count"] = torch.cuda.device_count()
    env["cpu_model"] = runs.cpu_model()
    env["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    return env


def revision_label(env: Mapping[str, Any]) -> str:
    """The git revision of ``env`` (``environment_report``) as the Status page names it:
    "unknown" outside a checkout, "(with uncommitted changes)" appended when the tree is dirty."""
    revision = env["git_revision"] or "unknown"
    return revision + " (with uncommitted changes)" if env["git_dirty"] else revision


def device_label(env: Mapping[str, Any]) -> str:
    """The device of ``env`` (``environment_report``), with its name where it has one:
    ``cuda (NVIDIA H100)``, ``cpu``."""
    return env["device"] + (f" ({env['device_name']})" if env["device_name"] else "")


def build_provenance_table(env: Mapping[str, Any], cfg: Config):
    """What produced this build of the book, one row each (columns ``what``, ``value``): the
    preset, data and language model of ``cfg`` (as ``banner`` names them), the git revision,
    the device and the machine of ``env`` (``environment_report``), the python and platform."""
    shown = banner(cfg)
    rows = [
        ("preset", cfg.preset),
        ("data", shown.data),
        ("language model", shown.plm),
        ("git revision", revision_label(env)),
        ("device", env["device"]),
        ("device name", env["device_name"] or "–"),
        ("CPU", env["cpu_model"]),
        ("CPU cores", env["cpu_count"]),
        ("torch threads", env["torch_threads"]),
        ("memory (GiB)", env["memory_gib"]),
        ("python", env["python"]),
        ("platform", env["platform"]),
    ]
    return pd.DataFrame(rows, columns=["what", "value"])


# ---- the chapters' times --------------------------------------------------------------------


def load_timings(path: Path | str | None = None) -> dict | None:
    """The main job's timings JSON, or None when there is none (a notebook run on its own, or
    a record with nothing in it); a corrupt file is an error naming it."""
    path = Path(path) if path else default_timings_path()
    return (runs.read_json_object(path) or None) if path.exists() else None


def timings_table(timings: Mapping[str, Any] | None):
    """One row per chapter of the book: status and wall time (s)."""
    chapters = (timings or {}).get("chapters", {})
    rows = []
    for chapter in CHAPTERS:
        entry = chapters.get(chapter.name, {})
        status = entry.get("status", "not run")
        if entry.get("earlier_build"):
            status += " (earlier build)"
        rows.append(
            {
                "chapter": chapter.name,
                "title": chapter.title,
                "status": status,
                "wall time (s)": entry.get("seconds"),
                "CPU time (s)": entry.get("cpu_seconds"),
                "preset": entry.get("preset", ""),
                "finished (UTC)": entry.get("finished", ""),
            }
        )
    return pd.DataFrame(rows)


# ---- benchmark records ----------------------------------------------------------------------


def _label(value: Any) -> str:
    """A record's value as caption text: a list as its items joined by commas."""
    return ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        flat = {}
        for i, item in enumerate(value):
            flat.update(_flatten(item, f"{prefix}[{i}]"))
        return flat
    if isinstance(value, list):
        return {prefix: ", ".join(map(str, value))}
    return {prefix: value}


@dataclass(frozen=True)
class BenchmarkRecord:
    """One benchmark file under results/, as a table with a caption naming its device."""

    name: str
    caption: str
    table: Any  # pandas DataFrame
    targets: Any = None  # pandas DataFrame of an ``ambcore bench`` record's targets, else None
    efficiency: Any = None  # its FLOPs and achieved GFLOP/s (``ambcore.bench.efficiency_frame``)
    paper: Any = None  # its paper-geometry step (``ambcore.bench.paper.paper_geometry_frame``)

    def tables(self) -> list[tuple[Any, str]]:
        """(frame, caption) of every table the Status page shows for this record, in order."""
        shown = [(self.table, f"Benchmark {self.caption}")]
        if self.efficiency is not None and not self.efficiency.empty:
            shown.append(
                (
                    self.efficiency,
                    f"FLOPs and achieved rate of {self.name}: one training "
                    "epoch and one evaluation pass (fast path), counted by FlopCounterMode, "
                    "against the probe × threads",
                )
            )
        if self.paper is not None and not self.paper.empty:
            shown.append(
                (
                    self.paper,
                    f"The paper preset at bert-base geometry, {self.name}: one "
                    "training step and one evaluation batch here, and a MOSEI epoch (the "
                    "seconds at a given TFLOP/s are an ESTIMATE, not a measurement)",
                )
            )
        if self.targets is not None and not self.targets.empty:
            shown.append(
                (
                    self.targets,
                    f"Targets of {self.name}: the ratio by each estimator "
                    "(median of rounds or pairs; fastest rounds or steps)",
                )
            )
        return shown


def numerics_frame(payload: Mapping[str, Any]) -> pd.DataFrame:
    """The precision study of ``python -m ambcore bench --numerics`` (``ambcore.bench.numerics``):
    one row per metric, the arms' means, their difference with its 95 % interval, the
    Holm-adjusted p-value and the verdict."""
    rows = [
        {
            "metric": row["metric"],
            f"{row['a']} (n={row['n_a']})": row["estimate_a"],
            f"{row['b']} (n={row['n_b']})": row["estimate_b"],
            "difference": row["diff"],
            "95 % interval": f"[{row['lo']:+.3f}, {row['hi']:+.3f}]",
            "p (Holm)": row["p_holm"],
            "verdict": row["verdict"],
        }
        for row in payload["comparison"]
    ]
    return pd.DataFrame(rows)


def benchmark_tables(results_dir: Path | str | None = None) -> list[BenchmarkRecord]:
    """Every benchmark JSON under results/ (``bench*.json``, ``*_bench*.json``,
    ``numerics*.json``).

    Records of ``python -m ambcore bench`` become one row per model and path
    (``ambcore.bench.summary_frame``); precision studies (``bench --numerics``) one row per
    metric (``numerics_frame``); any other record (the SDK alignment benchmark) a key/value
    table. A file that is not valid JSON shows as an "unreadable" row.
    """
    results_dir = Path(results_dir or paths.results_dir())
    files = sorted(
        {
            *results_dir.glob("bench*.json"),
            *results_dir.glob("*_bench*.json"),
            *results_dir.glob("numerics*.json"),
        }
    )
    records = []
    for path in files:
        try:
            payload = runs.read_json(path)
        except (OSError, AmbError) as exc:
            table = pd.DataFrame([{"key": "error", "value": f"unreadable: {exc}"}])
            records.append(BenchmarkRecord(path.name, f"results/{path.name} (unreadable)", table))
            continue
        where = ", ".join(
            f"{key} {_label(payload[key])}"
            for key in ("device", "device_name", "preset", "data")
            if isinstance(payload, Mapping) and payload.get(key)
        )
        caption = f"results/{path.name}" + (f" ({where})" if where else "")
        targets = efficiency = paper = None
        if isinstance(payload, Mapping) and isinstance(payload.get("models"), Mapping):
            table = summary_frame(payload)
            targets = targets_frame(payload)
            efficiency = efficiency_frame(payload)
            paper = paper_geometry_frame(payload)
        elif isinstance(payload, Mapping) and isinstance(payload.get("comparison"), list):
            table = numerics_frame(payload)
            decision = payload.get("decision") or {}
            keep = decision.get("keep_bf16_default")
            caption += (
                f": {payload.get('model', '')} runs of the same seeds in each arm, compared by "
                f"the verdicts' test (Holm over the metrics); decision: "
                f"{'keep' if keep else 'drop'} bf16 autocast as the CUDA default"
            )
        else:
            flat = _flatten(payload)
            table = pd.DataFrame(
                [{"key": k, "value": v} for k, v in flat.items()], columns=["key", "value"]
            )
        records.append(BenchmarkRecord(path.name, caption, table, targets, efficiency, paper))
    return records
