"""CMU-MultimodalSDK computational sequences (``.csd``) to MMSA pickles (thesis 6.3.1, data).

Researchers who start from the official SDK files (``CMU_MOSEI_TimestampedWords.csd``,
``CMU_MOSEI_VisualFacet42.csd``, ``CMU_MOSEI_COVAREP.csd``, ``CMU_MOSEI_Labels.csd`` and the
standard folds) convert them here into the MMSA layout that ``ambcore.data.load_dataset``
reads, so everything downstream sees one format.

The ``.csd`` layout (HDF5, one file per computational sequence)::

    /<root name>/data/<video_id>/features   (m, d)  words: (m, 1) bytes, b"sp" = pause
    /<root name>/data/<video_id>/intervals  (m, 2)  [start, end] in seconds
    /<root name>/metadata/<key>             (1,)    a JSON string per key

What the conversion does, and how it relates to the SDK's own pipeline
----------------------------------------------------------------------
The SDK's ``mmdataset.align(reference, collapse_functions=[avg])`` keeps, for each reference
interval, every frame whose *clipped* overlap with it is longer than ``epsilon = 1e-5`` s
and collapses those frames with an unweighted ``numpy.average``. It skips reference intervals
shorter than ``epsilon``; a word with no overlapping frame gets no entry, and the SDK's
``impute`` then fills it with zeros. Aligning the words to the label segments (``align`` on the
labels without a collapse function) keeps the words that overlap a segment by more than
``epsilon``, each with the vector of the whole word. Pause tokens (``b"sp"``) are aligned like
any word; the standard MOSEI processing built on the SDK (its tutorial, and the MAG-BERT and
MISA data scripts) then removes every ``sp`` entry together with its visual and acoustic
vectors, so that the modalities stay aligned. Each word's vector depends only on its own
interval, so removing pauses before averaging gives the same vectors; we do that (and count
the pauses removed) because it is cheaper.

Differences from the SDK, all deliberate and reported:

- Speed and memory: the SDK compares every word with every frame of its video in Python
  (days and ~32 GB for MOSEI). Here one video is read at a time and each modality is averaged
  over all words at once: frames are sorted by start, the range of frames overlapping each
  word is found with two ``numpy.searchsorted`` calls, and the sums come from a cumulative sum.
- Non-finite feature values (COVAREP has ``-inf``) are set to 0 frame by frame *before*
  averaging and counted; the SDK scripts apply ``numpy.nan_to_num`` to the averages, which
  turns ``-inf`` into ``-1.8e308``.
- A video missing from one of the files, a malformed video group, a video outside the folds
  and an utterance with no words are skipped and counted by reason (the SDK's ``unify`` and
  ``hard_unify`` drop them with a log line).
- Clip ids are the row of the segment in the video's label sequence, as in the SDK's
  ``"<video>[<row>]"`` keys; the MMSA id is ``"<video>$_$<row>"``.

Folds: the SDK ships them as Python lists in ``cmu_mosei_std_folds.py``. ``load_folds``
reads that file *without executing it* (its list literals are parsed with ``ast``), or a JSON
file ``{"train": [...], "valid": [...], "test": [...]}``, or a text file of
``<split> <video_id>`` lines. To produce the JSON from an SDK checkout::

    python -c "import json; from mmsdk.mmdatasdk.dataset.standard_datasets.CMU_MOSEI import \\
        cmu_mosei_std_folds as f; json.dump({'train': f.standard_train_fold, \\
        'valid': f.standard_valid_fold, 'test': f.standard_test_fold}, open('folds.json', 'w'))"
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from tqdm.auto import tqdm

from ambcore.atomic import atomic_file
from ambcore.data.types import SPLITS
from ambcore.errors import DataError

__all__ = [
    "EPSILON",
    "PAUSE_TOKEN",
    "CsdFile",
    "VideoSequence",
    "overlap_ranges",
    "SortedFrames",
    "average_frames_over_intervals",
    "load_folds",
    "ConversionReport",
    "convert_sdk_to_mmsa",
    "CsdWriter",
    "write_csd",
]

EPSILON = 1e-5  # the SDK's interval tolerance in seconds (mmdatasdk/dataset/dataset.py)
PAUSE_TOKEN = "sp"  # TimestampedWords marks a pause in speech with this word
FOLD_ALIASES = {"train": "train", "valid": "valid", "dev": "valid", "test": "test"}
SDK_FOLD_NAMES = {  # names in the SDK's cmu_mosei_std_folds.py / cmu_mosi_std_folds.py
    "standard_train_fold": "train",
    "standard_valid_fold": "valid",
    "standard_test_fold": "test",
}
MAX_EXAMPLES = 5  # skipped ids kept per reason in the report


# ---- reading ---------------------------------------------------------------------------------


@dataclass
class VideoSequence:
    """One video of one computational sequence, frames in file order."""

    video_id: str
    features: np.ndarray  # (m, d); words: (m, 1) bytes/str
    intervals: np.ndarray  # (m, 2) float64 seconds


class CsdFile:
    """A ``.csd`` file opened for reading one video at a time (never loaded whole).

    >>> with CsdFile("CMU_MOSEI_COVAREP.csd") as csd:
    ...     csd.root_name, len(csd.video_ids), csd.read("zhpQhgha_KU").features.shape
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"{self.path}: no such .csd file")
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as exc:
            raise DataError(f"{self.path}: not an HDF5 computational sequence ({exc})") from None
        try:
            self._index()
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
            self.close()
            if isinstance(exc, DataError):
                raise
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
            raise DataError(
                f"{self.path}: unreadable, the file is damaged or truncated "
                f"({type(exc).__name__}: {first}); expected an intact .csd file"
            ) from None

    def _index(self) -> None:
        """Root name, data and metadata groups, video ids (``__init__``'s checked step)."""
        roots = list(self._h5.keys())
        if len(roots) != 1:
            raise DataError(
                f"{self.path}: expected one root group named after the sequence, found "
                f"{len(roots)}: {roots[:5]}"
            )
        self.root_name = roots[0]
        root = self._h5[self.root_name]
        for group in ("data", "metadata"):
            if not isinstance(root.get(group), h5py.Group):
                raise DataError(
                    f"{self.path}: missing group /{self.root_name}/{group} (a computational "
                    f"sequence has /<root>/data/<video>/{{features,intervals}} and "
                    f"/<root>/metadata)"
                )
        self._data = root["data"]
        self._metadata_group = root["metadata"]
        self.video_ids: list[str] = list(self._data.keys())
        self._video_set = set(self.video_ids)

    # context manager -------------------------------------------------------------------------
    def __enter__(self) -> CsdFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._h5.close()

    def __contains__(self, video_id: str) -> bool:
        return video_id in self._video_set

    @property
    def metadata(self) -> dict[str, Any]:
        """``metadata/<key>`` decoded from JSON (plain strings where not JSON), as the SDK does."""
        out: dict[str, Any] = {}
        for key, dataset in self._metadata_group.items():
            value = dataset[()]
            if isinstance(value, np.ndarray):
                value = value.reshape(-1)[0] if value.size else ""
            if isinstance(value, bytes):
                value = value.decode("utf-8", errors="replace")
            try:
                out[key] = json.loads(value)
            except (TypeError, ValueError):
                out[key] = str(value)
        return out

    def shape(self, video_id: str) -> tuple[int, ...]:
        """Shape of ``features`` without reading it (validated like ``read``)."""
        try:
            return tuple(self._group(video_id)["features"].shape)
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
            if isinstance(exc, DataError):
                raise
            raise self._damaged(video_id, exc) from None

    def feature_dim(self) -> int:
        """``d`` of the first video (every video of a sequence has the same width)."""
        for video_id in self.video_ids:
            try:
                return self.shape(video_id)[1]
            except DataError:
                continue
        raise DataError(f"{self.path}: no readable video group under /{self.root_name}/data")

    def _group(self, video_id: str) -> h5py.Group:
        where = f"{self.path}: /{self.root_name}/data/{video_id}"
        group = self._data.get(video_id)
        if not isinstance(group, h5py.Group):
            raise DataError(f"{where}: missing video group")
        for name in ("features", "intervals"):
            if not isinstance(group.get(name), h5py.Dataset):
                raise DataError(f"{where}: missing dataset '{name}'")
        f_shape, i_shape = group["features"].shape, group["intervals"].shape
        if len(f_shape) != 2:
            raise DataError(f"{where}/features: shape {f_shape}, expected rank 2 (frames, dims)")
        if len(i_shape) != 2 or i_shape[1] != 2:
            raise DataError(f"{where}/intervals: shape {i_shape}, expected (frames, 2)")
        if f_shape[0] != i_shape[0]:
            raise DataError(
                f"{where}: features has {f_shape[0]} rows but intervals has {i_shape[0]}; "
                "expected one [start, end] per feature row"
            )
        return group

    def read(self, video_id: str) -> VideoSequence:
        """Read one video; a malformed group raises ``DataError`` naming file, video and shape,
        a damaged file (HDF5 errors) one ``DataError`` line naming file and video."""
        try:
            group = self._group(video_id)
            features = group["features"][()]
            intervals = np.asarray(group["intervals"][()], dtype=np.float64)
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
            if isinstance(exc, DataError):
                raise
            raise self._damaged(video_id, exc) from None
        return VideoSequence(video_id, features, intervals)

    def _damaged(self, video_id: str, exc: Exception) -> DataError:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        return DataError(
            f"{self.path}: /{self.root_name}/data/{video_id}: unreadable, the file is damaged "
            f"or truncated ({type(exc).__name__}: {first}); expected an intact .csd file"
        )


def decode_words(features: np.ndarray) -> list[str]:
    """(m, 1) bytes / vlen bytes / str -> list of m words."""
    flat = features.reshape(len(features), -1)[:, 0] if features.size else features.reshape(-1)
    return [w.decode("utf-8", errors="replace") if isinstance(w, bytes) else str(w) for w in flat]


# ---- alignment -------------------------------------------------------------------------------


def overlap_ranges(
    starts: np.ndarray,
    ends: np.ndarray,
    q_starts: np.ndarray,
    q_ends: np.ndarray,
    eps: float = EPSILON,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Index ranges ``[lo, hi)`` of the items overlapping each query by more than ``eps``.

    Items are sorted by start and must have non-decreasing ends (true for frames at a fixed
    rate and for words); then the overlapping items of a query are contiguous: those with
    ``end > q_start + eps`` (from ``lo`` on) and ``start < q_end - eps`` (before ``hi``).
    Returns None when the ends are not monotone (nested intervals); callers then fall back to
    an explicit mask. Items shorter than ``eps`` must have been removed by the caller.
    """
    if len(ends) > 1 and np.any(np.diff(ends) < 0):
        return None
    lo = np.searchsorted(ends, q_starts + eps, side="right")
    hi = np.searchsorted(starts, q_ends - eps, side="left")
    hi = np.maximum(hi, lo)
    too_short = (q_ends - q_starts) <= eps  # the SDK never aligns to such an interval
    hi[too_short] = lo[too_short]
    return lo, hi


def _range_means(features: np.ndarray, lo: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(q, d) float64 mean of ``features[lo[k] : lo[k] + counts[k]]`` for each query k, 0 where
    the count is 0. Each query sums its own frames (gathered, then ``np.add.reduceat``): a
    difference of one running sum would cancel every later word after a frame of 1e20."""
    means = np.zeros((len(lo), features.shape[1]), dtype=np.float64)
    hit = np.flatnonzero(counts > 0)
    if hit.size == 0:
        return means
    sizes = counts[hit]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rows = np.repeat(lo[hit] - offsets, sizes) + np.arange(int(sizes.sum()))  # frames, per query
    sums = np.add.reduceat(features[rows].astype(np.float64), offsets, axis=0)  # (hits, d)
    means[hit] = sums / sizes[:, None]
    return means


def _overlap_mask(starts, ends, q_start, q_end, eps=EPSILON) -> np.ndarray:
    clipped = np.minimum(ends, q_end) - np.maximum(starts, q_start)
    return clipped > eps


class SortedFrames:
    """One video's frames of one modality, prepared once for every word and segment query.

    Frames shorter than ``eps`` are dropped (they can never overlap by more than ``eps``) and
    the rest are sorted by start time, as the SDK sorts them before aligning.
    """

    def __init__(self, intervals: np.ndarray, features: np.ndarray, eps: float = EPSILON):
        keep = np.flatnonzero((intervals[:, 1] - intervals[:, 0]) > eps)
        order = keep[np.argsort(intervals[keep, 0], kind="stable")]
        self.eps = eps
        self.starts = intervals[order, 0]  # (m,)
        self.ends = intervals[order, 1]  # (m,)
        self.features = features[order]  # (m, d)
        # Nested intervals (an end before the previous end) break the contiguity that the
        # searchsorted path relies on; not seen in the SDK's feature files, handled anyway.
        self.nested = len(self.ends) > 1 and bool(np.any(np.diff(self.ends) < 0))

    def average(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean of the frames overlapping each query (q, 2): ``(means (q, d) f32, counts (q,))``."""
        n_queries, dim = len(queries), self.features.shape[1]
        means = np.zeros((n_queries, dim), dtype=np.float32)
        counts = np.zeros(n_queries, dtype=np.int64)
        if n_queries == 0:
            return means, counts
        q_starts, q_ends = queries[:, 0], queries[:, 1]
        ranges = (
            None
            if self.nested
            else overlap_ranges(self.starts, self.ends, q_starts, q_ends, self.eps)
        )
        if ranges is not None:
            lo, hi = ranges
            counts[:] = hi - lo
            means[:] = _range_means(self.features, lo, counts)
            return means, counts
        for q in range(n_queries):  # nested frames: an explicit mask per query
            if q_ends[q] - q_starts[q] <= self.eps:
                continue
            mask = _overlap_mask(self.starts, self.ends, q_starts[q], q_ends[q], self.eps)
            counts[q] = mask.sum()
            if counts[q]:
                means[q] = self.features[mask].astype(np.float64).mean(axis=0)
        return means, counts

    def select(self, segment: np.ndarray) -> np.ndarray:
        """The frames (time order) overlapping ``segment`` = [start, end] by more than ``eps``."""
        if self.nested:
            return self.features[_overlap_mask(self.starts, self.ends, *segment, self.eps)]
        lo, hi = overlap_ranges(self.starts, self.ends, segment[:1], segment[1:], self.eps)
        return self.features[lo[0] : hi[0]]


def average_frames_over_intervals(
    frame_intervals: np.ndarray,
    frame_features: np.ndarray,
    query_intervals: np.ndarray,
    eps: float = EPSILON,
) -> tuple[np.ndarray, np.ndarray]:
    """For each query interval, the unweighted mean of the frames overlapping it.

    A frame counts when its overlap with the query, clipped to both, is longer than ``eps``
    (the SDK's rule). Queries with no such frame get zeros (the SDK's imputation) and a
    count of 0. Features must be finite (see ``sanitize``): one NaN would spoil the
    cumulative sum for every later word.

    Returns ``(means (q, d) float32, counts (q,) int64)``.
    """
    return SortedFrames(frame_intervals, frame_features, eps).average(query_intervals)


def sanitize(features: np.ndarray) -> tuple[np.ndarray, int]:
    """float32 copy with NaN/inf set to 0, and the number of values replaced."""
    out = np.asarray(features, dtype=np.float32)
    bad = ~np.isfinite(out)
    n_bad = int(bad.sum())
    if n_bad:
        out = out.copy()
        out[bad] = 0.0
    return out, n_bad


# ---- folds -----------------------------------------------------------------------------------


def load_folds(path: str | Path) -> dict[str, list[str]]:
    """Standard folds as ``{"train": [...], "valid": [...], "test": [...]}`` of video ids.

    Accepts JSON (``dev`` is read as ``valid``), the SDK's ``cmu_mosei_std_folds.py`` (its
    list literals are parsed, never executed), or text lines ``<split> <video_id>``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such folds file")
    text = path.read_text(encoding="utf-8")
    raw: dict[str, Any] = {}
    if path.suffix == ".json":
        try:
            loaded = json.loads(text)
        except ValueError as exc:
            raise DataError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(loaded, dict):
            raise DataError(f"{path}: expected a JSON object with keys train/valid/test")
        raw = {FOLD_ALIASES.get(k, k): v for k, v in loaded.items()}
    elif path.suffix == ".py":
        try:
            tree = ast.parse(text, filename=str(path))
        except SyntaxError as exc:
            raise DataError(f"{path}: not parseable Python ({exc})") from None
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                name = getattr(node.targets[0], "id", None)
                if name in SDK_FOLD_NAMES:
                    try:
                        raw[SDK_FOLD_NAMES[name]] = ast.literal_eval(node.value)
                    except ValueError:
                        raise DataError(f"{path}: {name} is not a literal list of ids") from None
    else:
        raw = defaultdict(list)
        for line_no, line in enumerate(text.splitlines(), 1):
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            if len(parts) != 2 or parts[0] not in FOLD_ALIASES:
                raise DataError(f"{path}:{line_no}: expected '<train|valid|test> <video_id>'")
            raw[FOLD_ALIASES[parts[0]]].append(parts[1])
    missing = [s for s in SPLITS if s not in raw]
    if missing:
        raise DataError(f"{path}: no fold for {missing}; expected train, valid and test")
    folds: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for split in SPLITS:
        if not isinstance(raw[split], (list, tuple)):
            kind = type(raw[split]).__name__
            raise DataError(f"{path}: fold '{split}' is {kind}, expected a list of video ids")
        ids = list(dict.fromkeys(str(v) for v in raw[split]))  # de-duplicated, order kept
        for vid in ids:
            if vid in owner:
                raise DataError(f"{path}: video {vid!r} is in both '{owner[vid]}' and '{split}'")
            owner[vid] = split
        folds[split] = ids
    return folds


# ---- conversion ------------------------------------------------------------------------------


@dataclass
class ConversionReport:
    """What a conversion did: counts per split, and every skipped item with its reason."""

    n_videos: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    n_utterances: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    n_words: int = 0  # words kept in utterances (pauses excluded)
    n_pauses_removed: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    words_without_frames: Counter = field(default_factory=Counter)  # modality -> words zeroed
    nonfinite_values_zeroed: Counter = field(default_factory=Counter)  # modality -> values
    truncated: Counter = field(default_factory=Counter)  # "aligned" / "unaligned visual"... -> n
    tokens_repaired: int = 0  # empty words or words with inner whitespace, joined with "_"
    slow_path_videos: int = 0  # videos whose frames nest (explicit mask instead of searchsorted)
    outputs: dict[str, str] = field(default_factory=dict)  # layout -> path
    seconds: float = 0.0

    def skip(self, reason: str, item: str, n: int = 1) -> None:
        self.skipped[reason] += n
        if len(self.examples[reason]) < MAX_EXAMPLES:
            self.examples[reason].append(item)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_videos": dict(self.n_videos),
            "n_utterances": dict(self.n_utterances),
            "n_words": self.n_words,
            "n_pauses_removed": self.n_pauses_removed,
            "skipped": dict(self.skipped),
            "skipped_examples": {k: list(v) for k, v in self.examples.items() if v},
            "words_without_frames": dict(self.words_without_frames),
            "nonfinite_values_zeroed": dict(self.nonfinite_values_zeroed),
            "truncated": dict(self.truncated),
            "tokens_repaired": self.tokens_repaired,
            "slow_path_videos": self.slow_path_videos,
            "outputs": dict(self.outputs),
            "seconds": round(self.seconds, 3),
        }

    def format(self) -> str:
        lines = [
            f"videos:     {sum(self.n_videos.values())} "
            + " / ".join(f"{s} {self.n_videos[s]}" for s in SPLITS),
            f"utterances: {sum(self.n_utterances.values())} "
            + " / ".join(f"{s} {self.n_utterances[s]}" for s in SPLITS),
            f"words:      {self.n_words} (pause tokens '{PAUSE_TOKEN}' removed: "
            f"{self.n_pauses_removed})",
        ]
        for modality, n in sorted(self.words_without_frames.items()):
            lines.append(f"words with no {modality} frame (zero vector): {n}")
        for modality, n in sorted(self.nonfinite_values_zeroed.items()):
            lines.append(f"non-finite {modality} values set to 0: {n}")
        for what, n in sorted(self.truncated.items()):
            lines.append(f"utterances truncated ({what}): {n}")
        if self.tokens_repaired:
            n = self.tokens_repaired
            lines.append(f"words empty or with inner spaces (joined with '_'): {n}")
        if self.slow_path_videos:
            lines.append(f"videos with nested frame intervals (slow path): {self.slow_path_videos}")
        if self.skipped:
            lines.append("skipped:")
            for reason, n in sorted(self.skipped.items()):
                example = ", ".join(self.examples.get(reason, []))
                lines.append(f"  {n:>7}  {reason}  (e.g. {example})")
        else:
            lines.append("skipped: nothing")
        for layout, path in self.outputs.items():
            lines.append(f"wrote {layout}: {path}")
        lines.append(f"time: {self.seconds:.1f} s")
        return "\n".join(lines)


class _SplitBuffer:
    """Preallocated padded arrays for one split of one layout (rows filled in order)."""

    def __init__(self, capacity: int, length: int, visual_dim: int, acoustic_dim: int):
        self.length = length
        self.vision = np.zeros((capacity, length, visual_dim), dtype=np.float32)
        self.audio = np.zeros((capacity, length, acoustic_dim), dtype=np.float32)
        self.vision_lengths = np.zeros(capacity, dtype=np.int64)
        self.audio_lengths = np.zeros(capacity, dtype=np.int64)
        self.n = 0

    def add(self, vision: np.ndarray, audio: np.ndarray) -> tuple[bool, bool]:
        """Append one utterance (steps beyond ``length`` cut); returns (vision cut, audio cut)."""
        i, L = self.n, self.length
        lv, la = min(len(vision), L), min(len(audio), L)
        self.vision[i, :lv] = vision[:lv]
        self.audio[i, :la] = audio[:la]
        self.vision_lengths[i], self.audio_lengths[i] = lv, la
        self.n += 1
        return len(vision) > L, len(audio) > L

    def arrays(self) -> dict[str, Any]:
        n = self.n
        return {
            "vision": self.vision[:n],
            "audio": self.audio[:n],
            "vision_lengths": self.vision_lengths[:n],
            "audio_lengths": self.audio_lengths[:n],
        }

    def close(self) -> None:
        pass


@dataclass
class _DiskArray:
    """A C-order float32 array of ``shape`` stored raw in ``path``; pickled by streaming the
    file (``_StreamingPickler``), never held in memory."""

    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype = np.dtype(np.float32)


class _DiskSplitBuffer:
    """Like ``_SplitBuffer``, but the padded rows go to raw temporary files in ``folder`` as
    they come (one utterance in memory at a time): the unaligned layout of a MOSEI-sized
    conversion holds ~5 GiB, which stays on disk until it is streamed into the pickle."""

    def __init__(self, folder: Path, length: int, visual_dim: int, acoustic_dim: int):
        self.length, self.dims, self.n = length, (visual_dim, acoustic_dim), 0
        self.paths, self._files = [], []
        for _ in ("vision", "audio"):
            fd, tmp = tempfile.mkstemp(prefix=".unaligned.", suffix=".tmp", dir=folder)
            self.paths.append(Path(tmp))
            self._files.append(os.fdopen(fd, "wb"))
        self.vision_lengths: list[int] = []
        self.audio_lengths: list[int] = []

    def add(self, vision: np.ndarray, audio: np.ndarray) -> tuple[bool, bool]:
        """Append one zero-padded utterance; returns (vision cut, audio cut)."""
        L = self.length
        all_lengths = (self.vision_lengths, self.audio_lengths)
        for steps, dim, file, lengths in zip((vision, audio), self.dims, self._files, all_lengths):
            row = np.zeros((L, dim), dtype=np.float32)
            kept = min(len(steps), L)
            row[:kept] = steps[:kept]
            file.write(row.tobytes())
            lengths.append(kept)
        self.n += 1
        return len(vision) > L, len(audio) > L

    def arrays(self) -> dict[str, Any]:
        for file in self._files:
            file.flush()
        n, L = self.n, self.length
        return {
            "vision": _DiskArray(self.paths[0], (n, L, self.dims[0])),
            "audio": _DiskArray(self.paths[1], (n, L, self.dims[1])),
            "vision_lengths": np.array(self.vision_lengths, dtype=np.int64),
            "audio_lengths": np.array(self.audio_lengths, dtype=np.int64),
        }

    def close(self) -> None:
        for file, path in zip(self._files, self.paths):
            file.close()
            path.unlink(missing_ok=True)


class _StreamingPickler(pickle._Pickler):
    """The pure-Python pickler, plus ``_DiskArray``: written as numpy's protocol-5 form,
    ``numpy._core.numeric._frombuffer(bytearray, dtype, shape, "C")``, with the bytes copied
    from the file in chunks straight to the output."""

    CHUNK = 16 << 20
    dispatch = dict(pickle._Pickler.dispatch)

    def _write_raw(self, opcode: bytes, data) -> None:
        """``opcode`` + 8-byte length + ``data`` outside any frame (as write_large_bytes)."""
        self.framer.commit_frame(force=True)
        self.framer.file_write(opcode + len(data).to_bytes(8, "little"))
        self.framer.file_write(data)

    def save_picklebuffer(self, obj: pickle.PickleBuffer) -> None:
        """numpy arrays in-band without the pure-Python pickler's ``tobytes`` copy (nor its
        memo entry for that temporary copy)."""
        with obj.raw() as view:
            self._write_raw(pickle.BINBYTES8 if view.readonly else pickle.BYTEARRAY8, view)

    def save_disk_array(self, obj: _DiskArray) -> None:
        nbytes = int(np.prod(obj.shape)) * obj.dtype.itemsize
        if obj.path.stat().st_size != nbytes:
            raise DataError(f"{obj.path}: {obj.path.stat().st_size} bytes, expected {nbytes}")
        self.save(np._core.numeric._frombuffer)
        self.write(pickle.MARK)
        self.framer.commit_frame(force=True)  # as write_large_bytes does: end the frame first
        self.framer.file_write(pickle.BYTEARRAY8 + nbytes.to_bytes(8, "little"))
        with open(obj.path, "rb") as source:
            for chunk in iter(lambda: source.read(self.CHUNK), b""):
                self.framer.file_write(chunk)
        self.save(obj.dtype)
        self.save(tuple(obj.shape))
        self.save("C")
        self.write(pickle.TUPLE + pickle.REDUCE)

    dispatch[_DiskArray] = save_disk_array
    dispatch[pickle.PickleBuffer] = save_picklebuffer


@dataclass
class _Utterance:
    uid: str
    text: str
    label: float


def _split_dict(utts: list[_Utterance], buffer, with_lengths: bool) -> dict:
    arrays = buffer.arrays()
    out: dict[str, Any] = {
        "raw_text": np.array([u.text for u in utts], dtype=object),
        "id": np.array([u.uid for u in utts], dtype=object),
        "audio": arrays["audio"],
        "vision": arrays["vision"],
        "regression_labels": np.array([u.label for u in utts], dtype=np.float32),
    }
    if with_lengths:
        out["audio_lengths"] = arrays["audio_lengths"]
        out["vision_lengths"] = arrays["vision_lengths"]
    return out


def write_pickle_atomic(obj: dict, path: Path) -> None:
    """Write a plain dict of numpy arrays to ``path`` via a temporary file and a rename.

    Protocol 5 streams each array's buffer straight to the file (no in-memory copy of the
    largest array), and ``_DiskArray`` values are copied from their files in chunks;
    ``ambcore.data.safe_pickle`` admits the ``_frombuffer`` they name.
    """
    with atomic_file(path) as file:
        _StreamingPickler(file, protocol=5).dump(obj)


def _open_all(paths: dict[str, str | Path]) -> dict[str, CsdFile]:
    opened: dict[str, CsdFile] = {}
    try:
        for name, p in paths.items():
            opened[name] = CsdFile(p)
    except BaseException:
        for csd in opened.values():
            csd.close()
        raise
    return opened


def convert_sdk_to_mmsa(
    words: str | Path,
    visual: str | Path,
    acoustic: str | Path,
    labels: str | Path,
    folds: str | Path | dict[str, list[str]],
    out_dir: str | Path,
    max_len: int = 50,
    unaligned_len: int = 500,
    progress: bool = True,
) -> ConversionReport:
    """Convert SDK ``.csd`` files to ``aligned_<max_len>.pkl`` (+ ``unaligned_<len>.pkl``).

    aligned: per utterance, one visual and one acoustic vector per word (pauses removed),
    the first ``max_len`` words, zero-padded after the last word (``raw_text`` keeps the whole
    transcript). unaligned (``unaligned_len > 0``): the frames overlapping the segment in time
    order, the first ``unaligned_len`` of them, zero-padded, with ``vision_lengths`` /
    ``audio_lengths``. Videos are read one at a time; memory is the aligned arrays plus one
    video: the unaligned rows are written to temporary files in ``out_dir`` as they come and
    streamed from there into the pickle.
    """
    if max_len < 1:
        raise DataError(f"max_len={max_len}: expected at least 1 word per utterance")
    start_time = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fold_map = folds if isinstance(folds, dict) else load_folds(folds)
    report = ConversionReport()
    files = _open_all({"words": words, "visual": visual, "acoustic": acoustic, "labels": labels})
    layouts: dict[str, tuple[dict, bool]] = {}
    try:
        try:
            dims = (files["visual"].feature_dim(), files["acoustic"].feature_dim())
            _report_outside_folds(files, fold_map, report)
            capacity = _capacities(files, fold_map)
            aligned = {s: _SplitBuffer(capacity[s], max_len, *dims) for s in SPLITS}
            layouts[f"aligned_{max_len}"] = (aligned, False)
            if unaligned_len > 0:
                disk = {s: _DiskSplitBuffer(out_dir, unaligned_len, *dims) for s in SPLITS}
                layouts[f"unaligned_{unaligned_len}"] = (disk, True)
            buffers = [b for b, _ in layouts.values()]
            utterances = _convert_all(files, fold_map, dims, buffers, report, progress)
        finally:
            for csd in files.values():
                csd.close()
        _write_layouts(layouts, utterances, out_dir, report)
    finally:  # the unaligned rows' temporary files go, whatever happened
        for split_buffers, _ in layouts.values():
            for buffer in split_buffers.values():
                buffer.close()
    report.seconds = time.perf_counter() - start_time
    (out_dir / "conversion_report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def _report_outside_folds(files: dict[str, CsdFile], fold_map, report: ConversionReport) -> None:
    in_folds = {v for ids in fold_map.values() for v in ids}
    for name, csd in files.items():
        outside = [v for v in csd.video_ids if v not in in_folds]
        for vid in outside[:MAX_EXAMPLES]:
            report.examples[f"{name}: video not in any fold"].append(vid)
        if outside:
            report.skipped[f"{name}: video not in any fold"] += len(outside)


def _capacities(files: dict[str, CsdFile], fold_map) -> dict[str, int]:
    """Upper bound on utterances per split: label rows of the fold's videos (shapes only)."""
    capacity = {}
    for split in SPLITS:
        total = 0
        for vid in fold_map[split]:
            if vid in files["labels"]:
                try:
                    total += files["labels"].shape(vid)[0]
                except DataError:
                    pass
        capacity[split] = total
    return capacity


def _convert_all(files, fold_map, dims, buffers, report, progress) -> dict[str, list[_Utterance]]:
    """Every fold's videos, one at a time, into ``buffers`` (aligned first, then unaligned)."""
    utterances: dict[str, list[_Utterance]] = {s: [] for s in SPLITS}
    total_videos = sum(len(fold_map[s]) for s in SPLITS)
    bar = tqdm(total=total_videos, unit="video", desc="from-sdk", disable=not progress)
    for split in SPLITS:
        aligned = buffers[0][split]
        unaligned = buffers[1][split] if len(buffers) > 1 else None
        for vid in fold_map[split]:
            bar.update(1)
            _convert_video(vid, split, files, dims, aligned, unaligned, utterances[split], report)
    bar.close()
    return utterances


def _write_layouts(layouts, utterances, out_dir: Path, report: ConversionReport) -> None:
    for layout, (buffers, with_lengths) in layouts.items():
        data = {s: _split_dict(utterances[s], buffers[s], with_lengths) for s in SPLITS}
        path = out_dir / f"{layout}.pkl"
        write_pickle_atomic(data, path)
        report.outputs[layout] = str(path)


def _convert_video(
    vid: str,
    split: str,
    files: dict[str, CsdFile],
    dims: tuple[int, int],
    aligned: _SplitBuffer,
    unaligned: _DiskSplitBuffer | None,
    utterances: list[_Utterance],
    report: ConversionReport,
) -> None:
    """Align one video and append its utterances; problems are counted in ``report``."""
    seqs = _read_video(vid, split, files, dims, report)
    if seqs is None:
        return
    tokens, w_int = _clean_words(seqs["words"], report, vid)
    word_vectors, frames = _word_averages(seqs, w_int, report)
    n_kept = 0
    label_seq = seqs["labels"]
    seg_int = label_seq.intervals
    ranges = overlap_ranges(w_int[:, 0], w_int[:, 1], seg_int[:, 0], seg_int[:, 1])
    for row in range(len(seg_int)):
        idx = _utterance_words(vid, row, label_seq, w_int, ranges, report)
        if idx is None:
            continue
        cut_v, _ = aligned.add(word_vectors["visual"][idx], word_vectors["acoustic"][idx])
        if cut_v:
            report.truncated[f"aligned: more than {aligned.length} words"] += 1
        if unaligned is not None:
            _add_unaligned(unaligned, frames, seg_int[row], report)
        label = float(label_seq.features[row, 0])
        utterances.append(_Utterance(f"{vid}$_${row}", " ".join(tokens[i] for i in idx), label))
        report.n_words += len(idx)
        n_kept += 1
    if n_kept:
        report.n_utterances[split] += n_kept
        report.n_videos[split] += 1
    else:
        report.skip("video has no usable utterance", vid)


def _read_video(vid, split, files, dims, report) -> dict[str, VideoSequence] | None:
    """The video's four sequences, or None (counted in ``report``) when one is unusable."""
    missing = [name for name, csd in files.items() if vid not in csd]
    if missing:
        for name in missing:
            report.skip(f"video in '{split}' fold but missing from {name}", vid)
        return None
    try:
        seqs = {name: csd.read(vid) for name, csd in files.items()}
    except DataError as exc:
        report.skip("malformed video group", f"{vid} ({exc})")
        return None
    for name, expected in (("visual", dims[0]), ("acoustic", dims[1])):
        if seqs[name].features.shape[1] != expected:
            report.skip(f"{name} feature width differs from the file's first video", vid)
            return None
    if seqs["labels"].features.shape[1] < 1:
        report.skip("labels: no sentiment column", vid)
        return None
    return seqs


def _clean_words(word_seq: VideoSequence, report: ConversionReport, vid: str):
    """Words without pauses and without words shorter than EPSILON (the SDK skips those),
    sorted by start; each token one non-empty whitespace-free string (raw_text is split on
    whitespace to recover one word per feature step). Returns (tokens, intervals (w, 2))."""
    tokens = decode_words(word_seq.features)
    is_pause = np.array([t == PAUSE_TOKEN for t in tokens], dtype=bool)
    report.n_pauses_removed += int(is_pause.sum())
    w_int = word_seq.intervals
    too_short = ((w_int[:, 1] - w_int[:, 0]) < EPSILON) & ~is_pause
    if too_short.any():
        reason = "word shorter than 1e-5 s (the SDK does not align it)"
        report.skip(reason, vid, int(too_short.sum()))
    keep = np.flatnonzero(~is_pause & ~too_short)
    keep = keep[np.argsort(w_int[keep, 0], kind="stable")]
    tokens = [tokens[i] for i in keep]
    for i, token in enumerate(tokens):
        if not token or len(token.split()) != 1:
            tokens[i] = "_".join(token.split()) or "_"
            report.tokens_repaired += 1
    return tokens, w_int[keep]


def _word_averages(seqs, w_int: np.ndarray, report: ConversionReport):
    """Per-word averages of both modalities (all words of the video at once), and the sorted
    frames (for the unaligned layout)."""
    word_vectors, frames = {}, {}
    for name in ("visual", "acoustic"):
        feats, n_bad = sanitize(seqs[name].features)
        if n_bad:
            report.nonfinite_values_zeroed[name] += n_bad
        frames[name] = SortedFrames(seqs[name].intervals, feats)
        report.slow_path_videos += int(frames[name].nested)
        word_vectors[name], counts = frames[name].average(w_int)
        report.words_without_frames[name] += int((counts == 0).sum())
    return word_vectors, frames


def _utterance_words(vid, row, label_seq, w_int, ranges, report) -> np.ndarray | None:
    """Indices of the words overlapping label segment ``row`` by more than EPSILON, or None
    (counted in ``report``) when the segment, its label or its words are unusable."""
    uid = f"{vid}$_${row}"
    segment = label_seq.intervals[row]
    if segment[1] - segment[0] < EPSILON:
        report.skip("label segment shorter than 1e-5 s", uid)
        return None
    if not np.isfinite(float(label_seq.features[row, 0])):
        report.skip("label is not finite", uid)
        return None
    if ranges is not None:
        idx = np.arange(ranges[0][row], ranges[1][row])
    else:
        idx = np.flatnonzero(_overlap_mask(w_int[:, 0], w_int[:, 1], segment[0], segment[1]))
    if len(idx) == 0:
        report.skip("utterance has no words", uid)
        return None
    return idx


def _add_unaligned(unaligned: _DiskSplitBuffer, frames, segment, report: ConversionReport) -> None:
    vision, audio = frames["visual"].select(segment), frames["acoustic"].select(segment)
    cut_v, cut_a = unaligned.add(vision, audio)
    if cut_v:
        report.truncated[f"unaligned visual: more than {unaligned.length} frames"] += 1
    if cut_a:
        report.truncated[f"unaligned acoustic: more than {unaligned.length} frames"] += 1


# ---- writing (tests and the benchmark build SDK-layout files with this) ----------------------


class CsdWriter:
    """Write a computational sequence in the SDK's layout, one video at a time.

    Mirrors ``mmdatasdk``'s ``write_CSD``: ``/<root>/data/<video>/{features,intervals}`` and
    ``/<root>/metadata/<key>`` holding ``json.dumps(value)`` in a (1,) variable-length string.
    """

    def __init__(self, path: str | Path, root_name: str, metadata: dict[str, Any] | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._h5 = h5py.File(self.path, "w")
        root = self._h5.create_group(root_name)
        self._data = root.create_group("data")
        meta = root.create_group("metadata")
        for key, value in {"root name": root_name, **(metadata or {})}.items():
            ds = meta.create_dataset(key, (1,), dtype=h5py.special_dtype(vlen=str))
            ds[0] = json.dumps(value)

    def add(self, video_id: str, features: np.ndarray, intervals: np.ndarray) -> None:
        group = self._data.create_group(video_id)
        group.create_dataset("features", data=features)
        group.create_dataset("intervals", data=intervals)

    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> CsdWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_csd(
    path: str | Path,
    root_name: str,
    videos: dict[str, tuple[np.ndarray, np.ndarray]],
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``{video_id: (features (m, d), intervals (m, 2))}`` as a ``.csd`` file."""
    with CsdWriter(path, root_name, metadata) as writer:
        for vid, (features, intervals) in videos.items():
            writer.add(vid, features, intervals)
    return Path(path)


# ---- command line: ``python -m ambcore data from-sdk`` -----------------------------------------


def add_from_sdk_parser(data_subparsers) -> None:
    """Register ``from-sdk`` under the ``data`` command (called by ``ambcore.commands.data``)."""
    p = data_subparsers.add_parser(
        "from-sdk",
        help="convert CMU-MultimodalSDK .csd files to MMSA pickles (word-aligned + unaligned)",
        description=(
            "Align SDK computational sequences to words (average of the frames overlapping each "
            "word; 'sp' pauses removed), cut utterances at the label segments, split by the "
            "standard folds, and write aligned_<max-len>.pkl and unaligned_<unaligned-len>.pkl "
            "in the MMSA layout plus conversion_report.json."
        ),
    )
    p.add_argument("--words", required=True, help="e.g. CMU_MOSEI_TimestampedWords.csd")
    p.add_argument("--visual", required=True, help="e.g. CMU_MOSEI_VisualFacet42.csd")
    p.add_argument("--acoustic", required=True, help="e.g. CMU_MOSEI_COVAREP.csd")
    p.add_argument("--labels", required=True, help="e.g. CMU_MOSEI_Labels.csd (column 0)")
    p.add_argument(
        "--folds",
        required=True,
        help='JSON {"train": [...], "valid": [...], "test": [...]}, the SDK\'s '
        "cmu_mosei_std_folds.py (parsed, not run), or '<split> <video_id>' lines",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--max-len", type=int, default=50, help="words per aligned utterance")
    p.add_argument(
        "--unaligned-len", type=int, default=500, help="frames per unaligned utterance; 0: skip"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_from_sdk)


def run_from_sdk(args) -> int:
    report = convert_sdk_to_mmsa(
        args.words,
        args.visual,
        args.acoustic,
        args.labels,
        args.folds,
        args.out,
        max_len=args.max_len,
        unaligned_len=args.unaligned_len,
        progress=not args.no_progress,
    )
    print(report.format())
    return 0
