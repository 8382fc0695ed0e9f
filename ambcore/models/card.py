"""The model card (``README.md``) of a model folder, with the Hub's metadata block.

``model.save_pretrained(dir)`` writes a card that says what the model is (class, AMB design,
variant, trainable parameters, inputs and output), which PLM it needs and its configuration. A
finished run rewrites the card of its ``best/`` (``checkpoint.write_model_card``) with the data it was
trained on (and the SYNTHETIC warning where it applies) and its metrics on valid and test, each
test number with its 95 % bootstrap interval over the test videos (``ambcore.stats.run_interval``).

The YAML block at the top is ``huggingface_hub.ModelCardData``: library ``ambcore``, tags,
the PLM as ``base_model`` when it is a Hub model, and ``model-index`` results on the test split.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

__all__ = ["model_card", "CARD_METRICS", "EMBEDDED_HUB_NAME"]

# (metrics.json key, column title) of the metrics table
CARD_METRICS = (
    ("mae", "MAE"),
    ("corr", "Corr"),
    ("acc7", "Acc-7"),
    ("acc2_non0", "Acc-2 (non-0)"),
    ("f1_non0", "F1 (non-0)"),
)
# The Hub model that the bundled all-MiniLM-L6-v2 is a copy of.
EMBEDDED_HUB_NAME = "sentence-transformers/all-MiniLM-L6-v2"
TASK = "multimodal-sentiment-analysis"


def _base_model(plm: str) -> str | None:
    if plm == "embedded":
        return EMBEDDED_HUB_NAME
    if plm == "tiny-random" or plm.startswith(("/", ".", "~")) or Path(plm).expanduser().exists():
        return None  # random, or a local folder: not a Hub name
    return plm


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    return f"{value:.3f}" if isinstance(value, (int, float)) else str(value)


def _metric_cell(metrics: Mapping, key: str, interval: Mapping | None) -> str:
    text = _fmt(metrics.get(key))
    if interval and key in interval:
        text += f" [{_fmt(interval[key]['lo'])}, {_fmt(interval[key]['hi'])}]"
    return text


def _metrics_section(metrics: Mapping | None, intervals: Mapping | None) -> list[str]:
    if not metrics:
        return [
            "No evaluation is recorded with this folder (it was not saved by a finished "
            "run); `ambcore evaluate RUN_DIR` evaluates a run."
        ]
    lines = [
        "| split | " + " | ".join(title for _, title in CARD_METRICS) + " |",
        "|---|" + "---|" * len(CARD_METRICS),
    ]
    rows = [
        ("valid", metrics.get("valid"), None),
        ("test", metrics.get("test"), intervals),
        ("test, mean-label predictor", metrics.get("test_baseline_train_mean"), None),
    ]
    for name, values, interval in rows:
        if values:
            cells = [_metric_cell(values, key, interval) for key, _ in CARD_METRICS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    n_test = (metrics.get("test") or {}).get("n")
    if intervals:
        with_ci = ", ".join(title for key, title in CARD_METRICS if key in intervals)
        lines += [
            "",
            f"Test numbers: the estimate and, for {with_ci}, its 95 % percentile interval "
            f"over a bootstrap of the test videos ({n_test or 'N'} utterances; "
            "`ambcore.stats.run_interval`): this run only, so another seed's spread is not "
            "in it. The "
            "mean-label predictor always predicts the training labels' mean: a model "
            "that does not beat it has learnt nothing.",
        ]
    elif metrics.get("valid_only"):
        lines += ["", "A validation-only run (tuning): no test split was given."]
    return lines


def _card_data(model, metrics: Mapping | None, intervals: Mapping | None) -> ModelCardData:
    cfg = model.cfg
    synthetic = bool(metrics and metrics.get("is_synthetic"))
    tags = [cfg.model, f"text-adaptation-{cfg.text_adaptation}"] + (
        ["synthetic-data"] if synthetic else []
    )
    eval_results = None
    test = (metrics or {}).get("test")
    if test:
        data_name = str(metrics.get("data"))
        if synthetic and "SYNTHETIC" not in data_name.upper():
            data_name = f"SYNTHETIC {data_name}"
        eval_results = [
            EvalResult(
                task_type=TASK,
                task_name="Multimodal sentiment analysis (score in [-3, 3])",
                dataset_type="synthetic"
                if synthetic
                else Path(str(metrics.get("data_source"))).stem,
                dataset_name=data_name,
                dataset_split="test",
                metric_type=key,
                metric_name=title,
                metric_value=float(test[key]),
            )
            for key, title in CARD_METRICS
            if isinstance(test.get(key), (int, float)) and test[key] == test[key]
        ]
        if intervals and eval_results:
            for result in eval_results:
                if result.metric_type in intervals:
                    ci = intervals[result.metric_type]
                    result.metric_args = {"ci95_lo": ci["lo"], "ci95_hi": ci["hi"]}
    return ModelCardData(
        library_name="ambcore",
        tags=sorted(set(model._hub_mixin_info.model_card_data.tags or []) | set(tags)),
        base_model=_base_model(cfg.plm),
        model_name=f"ambcore-{cfg.model}" if eval_results else None,
        eval_results=eval_results or None,
        metrics=[key for key, _ in CARD_METRICS] if eval_results else None,
    )


def model_card(
    model, metrics: Mapping | None = None, intervals: Mapping | None = None, **_ignored
) -> ModelCard:
    """The card of ``model``; ``metrics``: a run's metrics.json (data, splits' metrics),
    ``intervals``: ``stats.run_interval`` of its test predictions."""
    # lazy: ambcore.models imports this module (through checkpoint): a cycle at import time
    from ambcore.models import count_parameters, design_label

    cfg = model.cfg
    counts = count_parameters(model)["all"]
    meta = {
        "class": type(model).__name__,
        "variant": cfg.variant,
        "text adaptation": cfg.text_adaptation,
    }
    if design_label(cfg) is not None:
        meta["design"] = design_label(cfg)
    synthetic = bool(metrics and metrics.get("is_synthetic"))
    data_name = (metrics or {}).get("data")
    lines = [f"# {type(model).__name__}: multimodal sentiment analysis (ambcore)", ""]
    if synthetic:
        lines += [
            f"> **SYNTHETIC data.** This model was trained and evaluated on `{data_name}`, "
            "a synthetic MOSEI-shaped dataset generated by ambcore with a planted signal. "
            "Its numbers validate the pipeline and say nothing about CMU-MOSEI or any real "
            "data.",
            "",
        ]
    lines += [
        "A model of the Adapted Multimodal BERT study (thesis chapter 6), trained with the "
        "`ambcore` library: it reads an utterance's transcript, visual and acoustic feature "
        "sequences and predicts its sentiment score in [-3, 3] (a regression).",
        "",
        "## Model",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in meta.items()],
        f"| parameters | {counts['total']:,} ({counts['trainable']:,} trainable, stored in "
        f"`weights.safetensors`; the frozen PLM weights are not stored) |",
        f"| inputs | text; visual features (steps, {model.visual_dim}); acoustic features "
        f"(steps, {model.acoustic_dim}) |",
        "",
        "## Language model",
        "",
        f"`{cfg.plm}`"
        + (
            f" (a copy of the Hub's `{EMBEDDED_HUB_NAME}`, bundled with ambcore)"
            if cfg.plm == "embedded"
            else ""
        )
        + (", built with RANDOM weights" if cfg.plm_random_init or cfg.plm == "tiny-random" else "")
        + ". Loading needs the same PLM, offline: its frozen weights are checked against the "
        "SHA-256 recorded in `model.json` (`from_pretrained(..., plm=PATH)` names another "
        "copy of it).",
        "",
        "## Data",
        "",
    ]
    if metrics:
        lines += [
            f"Trained on `{data_name}` ({'SYNTHETIC' if synthetic else 'real'} data; "
            f"source `{metrics.get('data_source')}`), preset `{metrics.get('preset')}`, "
            f"seed {metrics.get('seed')}, best epoch {metrics.get('best_epoch')} of "
            f"{metrics.get('epochs_run')}.",
            "",
        ]
    else:
        lines += ["Not recorded with this folder.", ""]
    lines += ["## Metrics", "", *_metrics_section(metrics, intervals), ""]
    lines += [
        "## Use",
        "",
        "```python",
        "import ambcore",
        'model = ambcore.from_pretrained("path/to/this/folder")  # or the run folder',
        f"scores = model.predict(texts, visual, acoustic)  # lists of: strings, (steps, "
        f"{model.visual_dim}) and (steps, {model.acoustic_dim}) arrays",
        "```",
        "",
        "## Configuration",
        "",
        "The full `ambcore.config.Config` is `config.json`'s `cfg`:",
        "",
        "```json",
        json.dumps(cfg.to_dict(), indent=1, sort_keys=True),
        "```",
        "",
    ]
    data = _card_data(model, metrics, intervals)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))
