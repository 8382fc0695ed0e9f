"""``python -m ambcore data ...``: inspect a dataset, write the synthetic one (thesis 6.3.1).

- ``data inspect PATH_OR_NAME [--json] [--dataset mosei|mosi|sims]``: splits, sizes, feature
  dims, the dataset they fit, sequence lengths, label statistics and every repair made while
  loading; ``--dataset`` refuses a file that does not fit the dataset named.
- ``data synth --out FILE [--n-train N ...] [--aligned | --unaligned] [--seed S]``: write the
  synthetic MOSEI-shaped dataset in the MMSA pickle layout; with ``--format mosei|mosi|sims``
  ``--out`` is a folder that receives that dataset's MMSA files with their feature sizes and
  every key (``aligned_50.pkl`` and ``unaligned_50.pkl`` for MOSEI and MOSI,
  ``unaligned_39.pkl`` with Chinese text for CH-SIMS; ``ambcore.data.specs``), ``text_bert``
  tokenised by ``--tokenizer DIR`` if given. ``--mosei-format`` is ``--format mosei``.

Each subcommand is one ``add_*`` function in ``SUBCOMMANDS`` taking the ``data`` command's
subparsers; adding a subcommand means appending one function.
"""

from __future__ import annotations

import argparse
import json
import time

from ambcore.config import Config, get_config
from ambcore.data.loaders import load_dataset
from ambcore.data.report import describe, format_report
from ambcore.data.specs import DATASET_CHOICES, DATASETS
from ambcore.data.synthetic import make_synthetic_dataset, write_mmsa_format
from ambcore.errors import AmbError

__all__ = ["register", "SUBCOMMANDS"]


def _add_inspect(sub) -> None:
    p = sub.add_parser(
        "inspect",
        help="describe a dataset (splits, dims, lengths, labels, repairs)",
        description="Load a dataset (a pickle path, or 'synthetic') and print its report.",
    )
    p.add_argument("path_or_name", help="an MMSA/MAG-BERT/MISA pickle, or 'synthetic'")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--preset", default="embedded", help="config preset (synthetic sizes)")
    p.add_argument(
        "--dataset",
        choices=DATASET_CHOICES,
        default=None,
        help="refuse a file whose feature sizes or labels do not fit this dataset "
        "(config key dataset; default: the preset's, auto)",
    )
    p.set_defaults(func=run_inspect)


def run_inspect(args) -> int:
    overrides = {"dataset": args.dataset} if args.dataset else {}
    dataset = load_dataset(args.path_or_name, get_config(args.preset, **overrides))
    report = describe(dataset)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _add_synth(sub) -> None:
    default = Config()
    p = sub.add_parser(
        "synth",
        help="write the synthetic MOSEI-shaped dataset (MMSA pickle layout)",
        description=(
            "Write the seeded, planted-signal synthetic dataset (see ambcore.data.synthetic). "
            "MOSEI's sizes are --n-train 16326 --n-valid 1871 --n-test 4659."
        ),
    )
    p.add_argument("--out", required=True, help="output .pkl file (a folder with --mosei-format)")
    p.add_argument("--n-train", type=int, default=default.synthetic_n_train)
    p.add_argument("--n-valid", type=int, default=default.synthetic_n_valid)
    p.add_argument("--n-test", type=int, default=default.synthetic_n_test)
    p.add_argument("--seed", type=int, default=default.synthetic_seed)
    layout = p.add_mutually_exclusive_group()
    layout.add_argument(
        "--aligned",
        dest="aligned",
        action="store_true",
        default=True,
        help="word-aligned, 50 steps (aligned_50 layout; default)",
    )
    layout.add_argument(
        "--unaligned",
        dest="aligned",
        action="store_false",
        help="frames per word with audio/vision lengths (unaligned layout)",
    )
    p.add_argument(
        "--format",
        dest="mmsa_format",
        choices=tuple(DATASETS),
        default=None,
        help="write into the folder OUT the dataset's MMSA files with its feature sizes and "
        "keys (text_bert, text, annotations, classification_labels; SIMS: per-modality "
        "labels, Chinese text): mosei and mosi aligned_50.pkl + unaligned_50.pkl, sims "
        "unaligned_39.pkl; still SYNTHETIC data",
    )
    p.add_argument(
        "--mosei-format",
        dest="mmsa_format",
        action="store_const",
        const="mosei",
        help="the same as --format mosei",
    )
    p.add_argument(
        "--tokenizer",
        default=None,
        metavar="DIR",
        help="with --format: a local tokenizer folder for text_bert (for sims a Chinese "
        "BERT's); default: the bundled MiniLM's (bert-base-uncased's vocabulary)",
    )
    p.set_defaults(func=run_synth)


def run_synth(args) -> int:
    sizes = {"--n-train": args.n_train, "--n-valid": args.n_valid, "--n-test": args.n_test}
    for flag, value in sizes.items():
        if value < 1:
            raise AmbError(f"data synth: {flag} must be at least 1, got {value}")
    start = time.perf_counter()
    if args.mmsa_format:
        return _synth_mmsa_format(args, start)
    if args.tokenizer:
        raise AmbError("data synth: --tokenizer needs --format (it tokenises MMSA's text_bert)")
    path = make_synthetic_dataset(
        args.n_train, args.n_valid, args.n_test, args.seed, args.aligned, out_path=args.out
    )
    layout = "aligned" if args.aligned else "unaligned"
    print(
        f"wrote {path} (SYNTHETIC, {layout}, {args.n_train}/{args.n_valid}/{args.n_test}, "
        f"seed {args.seed}, {path.stat().st_size / 1e6:.1f} MB) in "
        f"{time.perf_counter() - start:.1f} s"
    )
    return 0


def _synth_mmsa_format(args, start: float) -> int:
    spec = DATASETS[args.mmsa_format]
    paths = write_mmsa_format(
        args.out, spec.key, args.n_train, args.n_valid, args.n_test, args.seed, args.tokenizer
    )
    for layout, path in paths.items():
        print(
            f"wrote {path} (SYNTHETIC, {spec.name} format, {layout}, {args.n_train}/"
            f"{args.n_valid}/{args.n_test}, seed {args.seed}, {path.stat().st_size / 1e6:.1f} MB)"
        )
    print(f"in {time.perf_counter() - start:.1f} s")
    return 0


def _add_from_sdk(sub) -> None:
    """``data from-sdk``: defined beside the SDK converter in ``ambcore.data.sdk``."""
    try:
        # lazy and optional: an install without the SDK converter has no `data from-sdk`
        from ambcore.data.sdk import add_from_sdk_parser
    except ModuleNotFoundError as exc:  # an install without the SDK converter
        if exc.name != "ambcore.data.sdk":
            raise
        return
    add_from_sdk_parser(sub)


SUBCOMMANDS = [_add_inspect, _add_synth, _add_from_sdk]


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="inspect datasets, write the synthetic one")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    for add in SUBCOMMANDS:
        add(sub)
