"""``model summary``: parameter counts by component (thesis 6.3.2).

python -m ambcore model summary --preset NAME [--random-init] [--set k=v ...] [--json]
python -m ambcore model standin --out DIR [--tiny]
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
    s.add_argument(
        "--preset",
        default=os.environ.get("AMB_PRESET", "embedded"),
        help=f"one of: {', '.join(PRESETS)} (default: $AMB_PRESET or embedded)",
    )
    s.add_argument(
        "--random-init",
        action="store_true",
        help="random PLM weights from its config (no weights needed; e.g. bert-base)",
    )
    s.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field (repeatable), e.g. --set text_adaptation=finetune",
    )
    s.add_argument(
        "--visual-dim", type=int, default=None, help="visual feature size (default 35, MOSEI FACET)"
    )
    s.add_argument(
        "--acoustic-dim",
        type=int,
        default=None,
        help="acoustic feature size (default 74, MOSEI COVAREP)",
    )
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    s.set_defaults(func=_summary)
    t = sub.add_parser(
        "standin",
        help="write a bert-base-uncased stand-in (random weights) as a local model folder",
        description="Write bert-base-uncased's architecture with seeded RANDOM weights and the "
        "bundled all-MiniLM-L6-v2 tokenizer files (bert-base-uncased's vocabulary) as a local "
        "Hugging Face folder; pass it as --plm DIR to run the paper preset's code path without "
        "a download. Not a trained language model.",
    )
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument(
        "--tiny",
        action="store_true",
        help="a 4-layer width-32 BERT instead of bert-base (for tests)",
    )
    t.set_defaults(func=_standin)


def _summary(args: argparse.Namespace) -> int:
    # lazy: torch and transformers load only when the command runs; `model --help` stays light
    from ambcore.models.summary import (
        MOSEI_ACOUSTIC_DIM,
        MOSEI_VISUAL_DIM,
        format_summary,
        model_summary,
    )

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


def _standin(args: argparse.Namespace) -> int:
    # lazy: transformers loads only when the command runs; `model --help` stays light
    from ambcore.models.plm import save_standin

    out = save_standin(args.out, tiny=args.tiny)
    size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    kind = "tiny BERT" if args.tiny else "bert-base-uncased architecture"
    print(f"wrote {out} ({kind}, RANDOM weights, MiniLM tokenizer files, {size:.1f} MB)")
    return 0
