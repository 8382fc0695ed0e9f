"""What a researcher checks first about a dataset (thesis 6.3.1): ``describe(dataset)``.

Split sizes, feature dimensions, sequence lengths, label statistics (with the 7-class bins
of Acc-7: labels clipped to [-3, 3] and rounded half to even, as MMSA's metrics do) and every
repair the loader made. Used by ``python -m ambcore data inspect`` and the data chapter.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ambcore.data.types import SPLITS, MultimodalDataset

__all__ = ["describe", "format_report", "seven_class_counts", "SEVEN_CLASSES"]

SEVEN_CLASSES = (-3, -2, -1, 0, 1, 2, 3)


def seven_class_counts(labels: np.ndarray) -> dict[int, int]:
    """Counts of the Acc-7 classes: ``np.round(np.clip(y, -3, 3))``."""
    classes = np.round(np.clip(np.asarray(labels, dtype=np.float64), -3, 3)).astype(int)
    return {c: int((classes == c).sum()) for c in SEVEN_CLASSES}


def _length_stats(lengths: list[int]) -> dict[str, float]:
    if not lengths:
        return {"min": 0, "mean": 0.0, "median": 0.0, "max": 0}
    x = np.asarray(lengths)
    return {
        "min": int(x.min()),
        "mean": round(float(x.mean()), 2),
        "median": float(np.median(x)),
        "max": int(x.max()),
    }


def describe(dataset: MultimodalDataset) -> dict[str, Any]:
    """A JSON-serialisable report of ``dataset`` (sizes, dims, lengths, labels, repairs)."""
    splits = {}
    for name in SPLITS:
        split = dataset.splits[name]
        y = np.asarray(split.labels, dtype=np.float64)
        labels = {
            "mean": round(float(y.mean()), 4) if len(y) else None,
            "std": round(float(y.std()), 4) if len(y) else None,
            "min": float(y.min()) if len(y) else None,
            "max": float(y.max()) if len(y) else None,
            "positive (>0)": int((y > 0).sum()),
            "zero": int((y == 0).sum()),
            "negative (<0)": int((y < 0).sum()),
            "seven_class_counts": {str(k): v for k, v in seven_class_counts(y).items()},
        }
        splits[name] = {
            "utterances": len(split),
            "words": _length_stats([len(t.split()) for t in split.texts]),
            "visual_steps": _length_stats([len(v) for v in split.visual]),
            "acoustic_steps": _length_stats([len(a) for a in split.acoustic]),
            "labels": labels,
        }
    return {
        "name": dataset.name,
        "source": dataset.source,
        "format": dataset.format,
        "synthetic": dataset.is_synthetic,
        "aligned": dataset.aligned,
        "fingerprint_sha256": dataset.fingerprint,
        "visual_dim": dataset.visual_dim,
        "acoustic_dim": dataset.acoustic_dim,
        "sizes": {name: len(dataset.splits[name]) for name in SPLITS},
        "splits": splits,
        "repairs": dict(dataset.repairs),
    }


def format_report(report: dict[str, Any]) -> str:
    """The ``describe`` report as readable text."""
    lines = [
        f"dataset:   {report['name']}" + ("   [SYNTHETIC: not CMU-MOSEI]" if report["synthetic"] else ""),
        f"source:    {report['source']}",
        f"format:    {report['format']} ({'word-aligned' if report['aligned'] else 'unaligned'})",
        f"sha256:    {report['fingerprint_sha256']}",
        f"features:  visual {report['visual_dim']}-d, acoustic {report['acoustic_dim']}-d",
        "",
        f"{'split':<6} {'N':>7} {'words mean/max':>15} {'visual mean/max':>16} "
        f"{'acoustic mean/max':>18} {'label mean':>11} {'std':>6}",
    ]
    for name, s in report["splits"].items():
        lab = s["labels"]
        mean = "-" if lab["mean"] is None else f"{lab['mean']:+.3f}"
        std = "-" if lab["std"] is None else f"{lab['std']:.3f}"
        lines.append(
            f"{name:<6} {s['utterances']:>7} "
            f"{s['words']['mean']:>9.1f}/{s['words']['max']:<5} "
            f"{s['visual_steps']['mean']:>10.1f}/{s['visual_steps']['max']:<5} "
            f"{s['acoustic_steps']['mean']:>12.1f}/{s['acoustic_steps']['max']:<5} "
            f"{mean:>11} {std:>6}"
        )
    lines += ["", "7-class label counts (Acc-7 bins, round(clip(y, -3, 3))):"]
    lines.append(f"{'split':<6} " + " ".join(f"{c:>+6d}" for c in SEVEN_CLASSES))
    for name, s in report["splits"].items():
        counts = s["labels"]["seven_class_counts"]
        lines.append(f"{name:<6} " + " ".join(f"{counts[str(c)]:>6d}" for c in SEVEN_CLASSES))
    lines += ["", "repairs:"]
    if report["repairs"]:
        lines += [f"  {key}: {count}" for key, count in report["repairs"].items()]
    else:
        lines.append("  none (no NaN/inf values, no length adjustments)")
    return "\n".join(lines)
