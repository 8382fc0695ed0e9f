"""``python -m ambcore data ...``: inspect a dataset, write the synthetic one (thesis 6.3.1).

- ``data inspect PATH_OR_NAME [--json]``: splits, sizes, feature dims, sequence lengths, label
  statistics and every repair made while loading.
- ``data synth --out FILE [--n-train N ...] [--aligned | --unaligned] [--seed S]``: write the
  synthetic MOSEI-shaped dataset in the MMSA pickle layout; with ``--mosei-format`` ``--out`` is
  a folder that receives ``aligned_50.pkl`` and ``unaligned_50.pkl`` with every key of MMSA's
  CMU-MOSEI files.

Each subcommand is one ``add_*`` function in ``SUBCOMMANDS`` taking the ``data`` command's
subparsers; adding a subcommand means appending one function.
"""

from __future__ import annotations

import argparse
import json
import time

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
    p.set_defaults(func=run_inspect)


def run_inspect(args) -> int:
    from ambcore.config import get_config
    from ambcore.data.loaders import load_dataset
    from ambcore.data.report import describe, format_report

    dataset = load_dataset(args.path_or_name, get_config(args.preset))
    report = describe(dataset)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _add_synth(sub) -> None:
    from ambcore.config import Config

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
        "--mosei-format",
        action="store_true",
        help="write OUT/aligned_50.pkl and OUT/unaligned_50.pkl as MMSA's CMU-MOSEI "
        "files (text_bert, text, annotations, classification_labels; unaligned "
        "padded to 500 steps); still SYNTHETIC data",
    )
    p.set_defaults(func=run_synth)


def run_synth(args) -> int:
    from ambcore.data.synthetic import make_synthetic_dataset
    from ambcore.errors import AmbError

    sizes = {"--n-train": args.n_train, "--n-valid": args.n_valid, "--n-test": args.n_test}
    for flag, value in sizes.items():
        if value < 1:
            raise AmbError(f"data synth: {flag} must be at least 1, got {value}")
    start = time.perf_counter()
    if args.mosei_format:
        return _synth_mosei_format(args, start)
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


def _synth_mosei_format(args, start: float) -> int:
    from ambcore.data.synthetic import write_mosei_format

    paths = write_mosei_format(args.out, args.n_train, args.n_valid, args.n_test, args.seed)
    for layout, path in paths.items():
        print(
            f"wrote {path} (SYNTHETIC, MOSEI format, {layout}, {args.n_train}/{args.n_valid}/"
            f"{args.n_test}, seed {args.seed}, {path.stat().st_size / 1e6:.1f} MB)"
        )
    print(f"in {time.perf_counter() - start:.1f} s")
    return 0


def _add_from_sdk(sub) -> None:
    """``data from-sdk``: defined beside the SDK converter in ``ambcore.data.sdk``."""
    try:
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
