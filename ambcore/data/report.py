"""What a researcher checks first about a dataset (thesis 6.3.1): ``describe(dataset)``.

Split sizes, feature dimensions, sequence lengths, label statistics (with the 7-class bins
of Acc-7: labels clipped to [-3, 3] and rounded half to even, as MMSA's metrics do), every
repair the loader made, and the ids found in more than one split (possible leakage:
``shared_ids_note``). Used by ``python -m ambcore data inspect`` and the data chapter, which
shows the report's tables (``sizes_table``, ``label_table``, ``length_table``,
``repairs_table``) and sentences (``dataset_notice``, ``label_skew_note``) as they are.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ambcore.data import synthetic
from ambcore.data.specs import DATASETS
from ambcore.data.types import SPLITS, MultimodalDataset

__all__ = [
    "describe",
    "format_report",
    "seven_class_counts",
    "SEVEN_CLASSES",
    "synthetic_overrides",
    "dataset_notice",
    "headline",
    "sizes_table",
    "label_table",
    "length_table",
    "repairs_table",
    "shared_ids_note",
    "label_skew_note",
    "glue_values",
    "example_utterances",
    "utterance_line",
    "train_feature_stats",
    "dimension_correlations",
    "synthetic_design_table",
]

SEVEN_CLASSES = (-3, -2, -1, 0, 1, 2, 3)
SHARED_EXAMPLES = 5  # ids shown per pair of splits that share some


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


def _words(text: str, chinese: bool) -> int:
    """Words of a transcript; characters for Chinese (written without spaces)."""
    return len("".join(text.split())) if chinese else len(text.split())


def describe(dataset: MultimodalDataset) -> dict[str, Any]:
    """A JSON-serialisable report of ``dataset`` (sizes, dims, lengths, labels, repairs; the
    dataset it fits, ``kind``, ``ambcore.data.specs``; "words" are characters for CH-SIMS)."""
    spec = DATASETS.get(getattr(dataset, "kind", ""))
    chinese = spec is not None and spec.language == "zh"
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
            "words": _length_stats([_words(t, chinese) for t in split.texts]),
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
        "kind": spec.key if spec else "",
        "kind_description": spec.describe() if spec else "",
        "kind_whole_sizes": dict(zip(SPLITS, spec.splits)) if spec else {},
        "visual_dim": dataset.visual_dim,
        "acoustic_dim": dataset.acoustic_dim,
        "sizes": {name: len(dataset.splits[name]) for name in SPLITS},
        "splits": splits,
        "repairs": dict(dataset.repairs),
        "shared_ids": {
            pair: {"count": len(ids), "examples": ids[:SHARED_EXAMPLES]}
            for pair, ids in dataset.shared_ids.items()
        },
    }


def _real_name(report: dict[str, Any]) -> str:
    """The real dataset a synthetic one imitates: CMU-MOSEI unless it fits another."""
    description = report.get("kind_description") or "CMU-MOSEI"
    return description.split(" (")[0]


def format_report(report: dict[str, Any]) -> str:
    """The ``describe`` report as readable text."""
    lines = [
        f"dataset:   {report['name']}"
        + (f"   [SYNTHETIC: not {_real_name(report)}]" if report["synthetic"] else ""),
        f"source:    {report['source']}",
        f"format:    {report['format']} ({'word-aligned' if report['aligned'] else 'unaligned'})",
        f"sha256:    {report['fingerprint_sha256']}",
        f"features:  visual {report['visual_dim']}-d, acoustic {report['acoustic_dim']}-d",
    ]
    if report.get("kind"):
        whole = "/".join(f"{n:,}" for n in report["kind_whole_sizes"].values())
        lines.append(f"fits:      {report['kind_description']}; whole splits {whole}")
    lines += [
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
    lines += ["", "ids in more than one split (possible leakage between splits):"]
    shared = report.get("shared_ids") or {}
    if shared:
        lines += [
            f"  {pair}: {s['count']} (e.g. {', '.join(map(repr, s['examples']))})"
            for pair, s in shared.items()
        ]
    else:
        lines.append("  none")
    return "\n".join(lines)


# ---- the data chapter's tables and sentences ----------------------------------------------------


def synthetic_overrides(n_train=None, n_valid=None, n_test=None, synthetic_seed=None) -> dict:
    """Config overrides for the synthetic dataset's sizes and seed (``None``: the preset's)."""
    values = {
        "synthetic_n_train": n_train,
        "synthetic_n_valid": n_valid,
        "synthetic_n_test": n_test,
        "synthetic_seed": synthetic_seed,
    }
    return {key: value for key, value in values.items() if value is not None}


def dataset_notice(dataset: MultimodalDataset) -> str:
    """Markdown naming the dataset shown; a synthetic one is called out as not the dataset it
    imitates (CMU-MOSEI, or CMU-MOSI / CH-SIMS for files in their formats)."""
    if dataset.is_synthetic:
        spec = DATASETS.get(getattr(dataset, "kind", "")) or DATASETS["mosei"]
        return (
            f"> ## ⚠ SYNTHETIC DATA: this page does not show {spec.name}\n"
            f"> **{dataset.name}**, generated by `ambcore.data.synthetic` with a planted signal. "
            f"Every property below was designed in; none of it is evidence about {spec.name}."
        )
    return f"**Dataset shown: {dataset.name}**, read from `{dataset.source}`."


def headline(report: dict[str, Any]) -> str:
    """Two lines: the dataset's name, its layout and its feature widths."""
    return (
        f"dataset: {report['name']}\n"
        f"format:  {report['format']}, visual {report['visual_dim']}-d, "
        f"acoustic {report['acoustic_dim']}-d"
    )


def sizes_table(report: dict[str, Any]):
    """Utterances per split."""
    # lazy: `ambcore data inspect` imports this module and must not load pandas
    import pandas as pd

    return pd.DataFrame({"utterances": report["sizes"]}).rename_axis("split")


def label_table(report: dict[str, Any]):
    """Per split: label mean and std, the signs, and the counts of the seven Acc-7 classes."""
    # lazy: `ambcore data inspect` imports this module and must not load pandas
    import pandas as pd

    rows = {}
    for split, s in report["splits"].items():
        labels = s["labels"]
        rows[split] = {
            "mean": labels["mean"],
            "std": labels["std"],
            ">0": labels["positive (>0)"],
            "=0": labels["zero"],
            "<0": labels["negative (<0)"],
            **{f"{c:+d}": labels["seven_class_counts"][str(c)] for c in SEVEN_CLASSES},
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("split")


def length_table(report: dict[str, Any]):
    """Per split and kind (words, visual steps, acoustic steps): min, mean, median, max."""
    # lazy: `ambcore data inspect` imports this module and must not load pandas
    import pandas as pd

    rows = {
        (split, kind): s[kind]
        for split, s in report["splits"].items()
        for kind in ("words", "visual_steps", "acoustic_steps")
    }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(["split", "sequence"])


def repairs_table(report: dict[str, Any]):
    """Every repair the loader made with its count (one row saying so when there was none)."""
    # lazy: `ambcore data inspect` imports this module and must not load pandas
    import pandas as pd

    repairs = report["repairs"] or {"none: no NaN/inf values, no length adjustments": 0}
    return pd.DataFrame({"count": pd.Series(repairs, dtype="int64")}).rename_axis("repair")


def shared_ids_note(report: dict[str, Any]) -> str:
    """The sentence on ids found in more than one split: none, or each pair's count as
    possible leakage (a clip in train and test inflates the test scores)."""
    shared = report.get("shared_ids") or {}
    if not shared:
        return "No id appears in more than one split."
    pairs = "; ".join(
        f"{pair}: {s['count']:,} (e.g. {', '.join(f'`{u}`' for u in s['examples'])})"
        for pair, s in shared.items()
    )
    total = sum(s["count"] for s in shared.values())
    return (
        f"**Possible leakage: {total:,} id(s) appear in more than one split** ({pairs}). "
        "If they name the same clip, the model is tested on utterances it was trained or "
        "tuned on, and its test scores are too good; the loader keeps them and says so."
    )


def _label_shares(dataset: MultimodalDataset) -> tuple[float, float, float]:
    labels = np.asarray(dataset["train"].labels)
    return float((labels > 0).mean()), float((labels < 0).mean()), float(labels.mean())


def label_skew_note(dataset: MultimodalDataset) -> str:
    """The sentence on the training labels' skew, against the thesis' figure 5.3."""
    positive, negative, mean = _label_shares(dataset)
    shares = f"{100 * positive:.0f}% of the labels are positive and {100 * negative:.0f}% negative"
    if dataset.is_synthetic:
        return (
            f"On this **synthetic** training split {shares} (mean {mean:+.2f}). The generator "
            f"draws positive opinions with probability {synthetic.POSITIVE_SHARE:.2f} to imitate "
            "the slight positive skew that the thesis shows for CMU-MOSEI (figure 5.3); the "
            "resemblance is designed in and says nothing about MOSEI itself."
        )
    skew = "positive" if mean > 0 else "negative or no"
    return (
        f"On this dataset's training split {shares} (mean {mean:+.2f}): a {skew} skew. The "
        "thesis (figure 5.3) shows a slight shift towards positive sentiment for CMU-MOSEI."
    )


def glue_values(dataset: MultimodalDataset, report: dict[str, Any]) -> dict[str, str | int]:
    """The values the book refers to by name (``{glue:text}`data_...```)."""
    positive, negative, mean = _label_shares(dataset)
    values: dict[str, str | int] = {
        "data_name": dataset.name,
        "data_sha256": report["fingerprint_sha256"],
    }
    values.update({f"data_n_{split}": f"{report['sizes'][split]:,}" for split in SPLITS})
    values.update(
        data_visual_dim=report["visual_dim"],
        data_acoustic_dim=report["acoustic_dim"],
        data_label_mean=f"{mean:+.2f}",
        data_positive_pct=f"{100 * positive:.0f}",
        data_negative_pct=f"{100 * negative:.0f}",
        data_repairs_total=f"{sum(report['repairs'].values()):,}",
        data_av_only_pct=(
            f"{100 * synthetic.AV_ONLY_FRACTION:.0f}"
            if dataset.is_synthetic
            else "n/a (not synthetic)"
        ),
    )
    return values


def example_utterances(labels: np.ndarray, seed: int) -> list[int]:
    """Three utterances to show: the lowest label, one drawn with ``seed`` from between (the
    middle one when there are only three), and the highest."""
    order = np.argsort(labels)
    examples = [int(order[0]), int(order[len(order) // 2]), int(order[-1])]
    if len(labels) > 3:
        examples[1] = int(np.random.default_rng(seed).choice(order[1:-1]))
    return examples


def utterance_line(split, index: int) -> str:
    """Markdown: an utterance's id, label and transcript."""
    return f"**{split.ids[index]}**, label {split.labels[index]:+.2f}: “{split.texts[index]}”"


def train_feature_stats(sequences: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std (+1e-6) over every step of ``sequences``."""
    stacked = np.concatenate([x for x in sequences if len(x)])
    return stacked.mean(0), stacked.std(0) + 1e-6


def dimension_correlations(sequences: list[np.ndarray], labels: np.ndarray) -> np.ndarray:
    """Pearson correlation of each feature dimension's utterance mean with the label, (D,)."""
    means = np.stack([x.mean(0) if len(x) else np.zeros(x.shape[1]) for x in sequences])
    means = (means - means.mean(0)) / (means.std(0) + 1e-9)
    labels = np.asarray(labels, dtype=np.float64)
    centred = (labels - labels.mean()) / (labels.std() + 1e-9)
    return means.T @ centred / len(labels)


def synthetic_design_table():
    """The synthetic generator's utterance kinds: their shares and what the label follows."""
    # lazy: `ambcore data inspect` imports this module and must not load pandas
    import pandas as pd

    design = pd.DataFrame({"share of utterances": synthetic.KIND_PROBS})
    design = design.rename_axis("utterance kind (generator design)")
    design["label follows"] = [
        "face and voice" if kind in ("ironic", "neutral-av") else "words" for kind in design.index
    ]
    return design
