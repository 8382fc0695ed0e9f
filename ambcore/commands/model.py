"""``model summary``: parameter counts by component (thesis 6.3.2).

    python -m ambcore model summary --preset NAME [--random-init] [--set k=v ...] [--json]
"""

from __future__ import annotations

import argparse
import json
import os

from ambcore.config import PRESETS, apply_overrides, get_config


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("model", help="inspect models", description="Inspect models.")
    sub = p.add_subparsers(dest="model_command", required=True, metavar="SUBCOMMAND")
    s = sub.add_parser(
        "summary",
        help="total/trainable parameters by component",
        description="Build the model of a preset (+ --set overrides) and print its parameter "
        "counts by component (adapters, encoders, fusion, predictor, PLM).",
    )
    s.add_argument("--preset", default=os.environ.get("AMB_PRESET", "embedded"),
                   help=f"one of: {', '.join(PRESETS)} (default: $AMB_PRESET or embedded)")  # fmt: skip
    s.add_argument("--random-init", action="store_true",
                   help="random PLM weights from its config (no weights needed; e.g. bert-base)")  # fmt: skip
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (repeatable), e.g. --set text_adaptation=finetune")  # fmt: skip
    s.add_argument("--visual-dim", type=int, default=None, help="visual feature size (default 35, MOSEI FACET)")
    s.add_argument("--acoustic-dim", type=int, default=None,
                   help="acoustic feature size (default 74, MOSEI COVAREP)")  # fmt: skip
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    s.set_defaults(func=_summary)


def _summary(args: argparse.Namespace) -> int:
    from ambcore.models.summary import MOSEI_ACOUSTIC_DIM, MOSEI_VISUAL_DIM, format_summary, model_summary

    cfg = get_config(args.preset)
    if args.random_init:
        cfg = apply_overrides(cfg, {"plm_random_init": True})
    cfg = apply_overrides(cfg, args.overrides)
    summary = model_summary(
        cfg,
        visual_dim=args.visual_dim or MOSEI_VISUAL_DIM,
        acoustic_dim=args.acoustic_dim or MOSEI_ACOUSTIC_DIM,
    )
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0
