"""Benchmark of the SDK conversion on MOSEI-sized SYNTHETIC ``.csd`` files (thesis 6.3.1, data).

CMU-MOSEI itself is never available here, so this generates files in the SDK's exact layout
with MOSEI's shape: about 3,200 videos and 23,000 labelled utterances, COVAREP-like acoustic
frames at 100 Hz (74 dims), FACET-like visual frames at 30 Hz (35 dims) with face-lost gaps,
``-inf`` values sprinkled in the acoustic features as in COVAREP, ~2.8 words per second with
``sp`` pauses, and 7 label columns. It then times ``python -m ambcore data from-sdk``'s work
(``convert_sdk_to_mmsa``) in a child process and records wall time and peak RSS::

    python -m ambcore.bench.sdk                       # full size -> results/sdk_bench.json
    python -m ambcore.bench.sdk --videos 50 --out /tmp/small.json

The feature values are random: the numbers measure speed and memory, nothing about MOSEI.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np
from tqdm.auto import tqdm

from ambcore.data.sdk import PAUSE_TOKEN, CsdWriter
from ambcore.paths import PROJECT_ROOT

__all__ = ["SyntheticSdkSpec", "generate_synthetic_sdk", "run_benchmark"]

VOCAB = (
    "i the and it to a was that this movie is of you so like really but just in my "
    "not good they he she what very think have all great about one had be there bad"
).split()


@dataclass(frozen=True)
class SyntheticSdkSpec:
    """Sizes of the generated dataset; the defaults are CMU-MOSEI's."""

    n_videos: int = 3200
    utterances_per_video: float = 7.2  # Poisson mean; 3,200 x 7.2 ~ 23,000 (MOSEI: 23,453)
    words_per_utterance: float = 19.0  # Poisson mean (MOSEI: ~447k words / 23k utterances)
    word_seconds: tuple[float, float] = (0.15, 0.55)  # uniform word duration, ~2.8 words/s
    pause_probability: float = 0.15  # an "sp" token after a word
    acoustic_hz: float = 100.0  # COVAREP
    acoustic_dim: int = 74
    visual_hz: float = 30.0  # FACET 4.2
    visual_dim: int = 35
    visual_gap_fraction: float = 0.05  # frames lost to face-tracking failure (in runs)
    acoustic_neginf_rate: float = 1e-4  # COVAREP's -inf values, per value
    fold_fractions: tuple[float, float, float] = (0.697, 0.093, 0.210)  # 2,249/300/678 videos
    feature_dtype: str = "float32"
    seed: int = 0


def generate_synthetic_sdk(
    out_dir: str | Path, spec: SyntheticSdkSpec = SyntheticSdkSpec(), progress: bool = True
) -> dict[str, Path]:
    """Write words/visual/acoustic/labels ``.csd`` files and ``folds.json`` into ``out_dir``.

    Returns the paths by role (``words``, ``visual``, ``acoustic``, ``labels``, ``folds``).
    Videos are generated and written one at a time, so memory stays at one video.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    dtype = np.dtype(spec.feature_dtype)
    paths = {
        "words": out_dir / "SYNTH_MOSEI_TimestampedWords.csd",
        "visual": out_dir / "SYNTH_MOSEI_VisualFacet42.csd",
        "acoustic": out_dir / "SYNTH_MOSEI_COVAREP.csd",
        "labels": out_dir / "SYNTH_MOSEI_Labels.csd",
        "folds": out_dir / "folds.json",
    }
    meta = {"dataset name": "SYNTHETIC MOSEI-shaped", "computational sequence version": "0"}
    writers = {
        "words": CsdWriter(paths["words"], "words", meta),
        "visual": CsdWriter(paths["visual"], "FACET 4.2", meta),
        "acoustic": CsdWriter(paths["acoustic"], "COVAREP", meta),
        "labels": CsdWriter(paths["labels"], "All Labels", meta),
    }
    video_ids = [f"synth{index:05d}" for index in range(spec.n_videos)]
    try:
        for vid in tqdm(video_ids, desc="generate .csd", unit="video", disable=not progress):
            _write_video(vid, spec, rng, dtype, writers)
    finally:
        for writer in writers.values():
            writer.close()
    cuts = np.cumsum(np.array(spec.fold_fractions) / sum(spec.fold_fractions) * spec.n_videos)
    order = rng.permutation(spec.n_videos)
    n_train, n_valid = int(round(cuts[0])), int(round(cuts[1]))
    folds = {
        "train": sorted(video_ids[i] for i in order[:n_train]),
        "valid": sorted(video_ids[i] for i in order[n_train:n_valid]),
        "test": sorted(video_ids[i] for i in order[n_valid:]),
    }
    paths["folds"].write_text(json.dumps(folds))
    return paths


def _write_video(vid, spec, rng, dtype, writers) -> None:
    words, word_intervals, segments = [], [], []
    t = rng.uniform(0.5, 3.0)
    for _ in range(max(1, rng.poisson(spec.utterances_per_video))):
        first = len(words)
        for _ in range(max(1, rng.poisson(spec.words_per_utterance))):
            duration = rng.uniform(*spec.word_seconds)
            words.append(VOCAB[rng.integers(len(VOCAB))])
            word_intervals.append((t, t + duration))
            t += duration
            if rng.random() < spec.pause_probability:
                duration = rng.uniform(0.1, 0.6)
                words.append(PAUSE_TOKEN)
                word_intervals.append((t, t + duration))
                t += duration
        start, end = word_intervals[first][0], word_intervals[-1][1]
        segments.append((start - rng.uniform(0, 0.1), end + rng.uniform(0, 0.1)))
        gap = rng.uniform(0.5, 4.0)  # silence between utterances, marked as a pause
        words.append(PAUSE_TOKEN)
        word_intervals.append((t, t + gap))
        t += gap
    duration = t + rng.uniform(1.0, 10.0)

    writers["words"].add(
        vid, np.array(words, dtype="S")[:, None], np.array(word_intervals, dtype=np.float64)
    )
    n_acoustic = int(duration * spec.acoustic_hz)
    acoustic = rng.standard_normal((n_acoustic, spec.acoustic_dim), dtype=np.float32)
    n_inf = rng.binomial(acoustic.size, spec.acoustic_neginf_rate)
    acoustic.reshape(-1)[rng.integers(acoustic.size, size=n_inf)] = -np.inf
    writers["acoustic"].add(
        vid, acoustic.astype(dtype, copy=False), _grid(n_acoustic, spec.acoustic_hz)
    )

    n_visual = int(duration * spec.visual_hz)
    keep = np.ones(n_visual, dtype=bool)
    lost_runs = rng.binomial(n_visual, spec.visual_gap_fraction / 30)  # runs of ~30 frames
    for start in rng.integers(n_visual, size=lost_runs):
        keep[start : start + rng.integers(10, 50)] = False
    visual = rng.standard_normal((int(keep.sum()), spec.visual_dim), dtype=np.float32)
    writers["visual"].add(
        vid, visual.astype(dtype, copy=False), _grid(n_visual, spec.visual_hz)[keep]
    )

    labels = np.column_stack(
        [
            np.round(rng.uniform(-3, 3, len(segments)) * 3) / 3,  # sentiment, thirds as in MOSEI
            rng.uniform(0, 3, (len(segments), 6)),  # six emotions
        ]
    )
    writers["labels"].add(vid, labels, np.array(segments, dtype=np.float64))


def _grid(n: int, hz: float) -> np.ndarray:
    starts = np.arange(n, dtype=np.float64) / hz
    return np.column_stack([starts, starts + 1.0 / hz])


def _run_python(code: str) -> str:
    """Standard output of ``code`` run by a fresh interpreter in the project root (raises
    ``subprocess.CalledProcessError`` when it fails)."""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return proc.stdout


def _convert_in_child(
    paths: dict[str, Path], out_dir: Path, max_len: int, unaligned_len: int
) -> dict:
    """Run the conversion in a fresh interpreter so its peak RSS is its own."""
    code = (
        "import json, resource, time, sys\n"
        "from ambcore.data.sdk import convert_sdk_to_mmsa\n"
        "t = time.perf_counter()\n"
        f"r = convert_sdk_to_mmsa({str(paths['words'])!r}, {str(paths['visual'])!r}, "
        f"{str(paths['acoustic'])!r}, {str(paths['labels'])!r}, {str(paths['folds'])!r}, "
        f"{str(out_dir)!r}, max_len={max_len}, unaligned_len={unaligned_len}, progress=True)\n"
        "wall = time.perf_counter() - t\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "result = {'wall_s': wall, 'peak_rss_mib': peak, 'report': r.to_dict()}\n"
        "print('RESULT ' + json.dumps(result))\n"
    )
    line = next(row for row in _run_python(code).splitlines() if row.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def _baseline_rss_mib() -> float:
    """Peak RSS of an interpreter that only imports the converter (the fixed cost)."""
    code = (
        "import resource, ambcore.data.sdk\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    return float(_run_python(code).strip().splitlines()[-1])


def _machine() -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "h5py": h5py.__version__,
    }
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(
                row.split(":", 1)[1].strip() for row in f if row.startswith("model name")
            )
        with open("/proc/meminfo") as f:
            info["mem_total_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except (OSError, StopIteration):
        pass
    return info


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).glob("*") if p.is_file())


def run_benchmark(
    spec: SyntheticSdkSpec = SyntheticSdkSpec(),
    max_len: int = 50,
    unaligned_lens: tuple[int, ...] = (0, 500),
    work_dir: str | Path | None = None,
    keep: bool = False,
    command: str = "",
) -> dict:
    """Generate once, then convert once per unaligned length (0: aligned output only).

    Each conversion runs in its own child process, timed, with its peak RSS; running the
    aligned-only conversion separately shows the memory of the alignment itself, apart from
    the padded unaligned arrays (N x 500 x 109 float32, ~5 GB at MOSEI size).
    """
    work = Path(tempfile.mkdtemp(prefix="sdk_bench_", dir=work_dir))
    try:
        t0 = time.perf_counter()
        paths = generate_synthetic_sdk(work / "csd", spec)
        generate_s = time.perf_counter() - t0
        runs = []
        for unaligned_len in unaligned_lens:
            out_dir = work / f"mmsa_{unaligned_len}"
            conversion = _convert_in_child(paths, out_dir, max_len, unaligned_len)
            report = conversion["report"]
            runs.append(
                {
                    "outputs": sorted(report["outputs"]),
                    "max_len": max_len,
                    "unaligned_len": unaligned_len,
                    "convert_wall_s": round(conversion["wall_s"], 1),
                    "convert_peak_rss_mib": round(conversion["peak_rss_mib"], 1),
                    "output_pickles_mib": round(_dir_size(out_dir) / 2**20, 1),
                }
            )
            shutil.rmtree(out_dir, ignore_errors=True)
        result = {
            "data": "SYNTHETIC MOSEI-shaped .csd files (random values; not CMU-MOSEI)",
            "command": command,
            "spec": asdict(spec),
            "input_csd_mib": round(_dir_size(work / "csd") / 2**20, 1),
            "generate_s": round(generate_s, 1),
            "videos": sum(report["n_videos"].values()),
            "utterances": report["n_utterances"],
            "words": report["n_words"],
            "pauses_removed": report["n_pauses_removed"],
            "skipped": report["skipped"],
            "words_without_frames": report["words_without_frames"],
            "nonfinite_values_zeroed": report["nonfinite_values_zeroed"],
            "runs": runs,
            "interpreter_baseline_rss_mib": round(_baseline_rss_mib(), 1),
            "machine": _machine(),
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ambcore.bench.sdk", description=__doc__.split("\n\n")[0]
    )
    defaults = SyntheticSdkSpec()
    parser.add_argument("--videos", type=int, default=defaults.n_videos)
    parser.add_argument("--utterances-per-video", type=float, default=defaults.utterances_per_video)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument(
        "--unaligned-len",
        type=int,
        nargs="+",
        default=[0, 500],
        help="one conversion per value; 0: aligned output only",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--work-dir", default=None, help="temporary files (default: TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--out", default=str(PROJECT_ROOT / "results" / "sdk_bench.json"))
    args = parser.parse_args(argv)
    spec = SyntheticSdkSpec(
        n_videos=args.videos, utterances_per_video=args.utterances_per_video, seed=args.seed
    )
    given = argv if argv is not None else sys.argv[1:]
    command = " ".join(["python -m ambcore.bench.sdk", *given])
    result = run_benchmark(
        spec, args.max_len, tuple(args.unaligned_len), args.work_dir, args.keep, command
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    headline = {key: result[key] for key in ("videos", "utterances", "words", "runs")}
    print(json.dumps(headline, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
