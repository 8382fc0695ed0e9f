"""Loaders for the dataset files users bring (thesis 6.3.1: CMU-MOSEI, word-aligned features).

``load_dataset(path_or_name)`` reads any supported layout into one ``MultimodalDataset``; the
layout is detected from the file's content, and feature dimensions are taken from the data:

- **MMSA** ``aligned_50.pkl`` / ``unaligned_50.pkl``: ``{"train"|"valid"|"test": {"raw_text",
  "id", "audio" (N, La, Da), "vision" (N, Lv, Dv), "regression_labels" (N,), optional
  "audio_lengths"/"vision_lengths" (N,)}}``. Files with length arrays are read as unaligned.
- **MAG-BERT** ``mosei.pkl``: ``{"train"|"dev"|"test": [((words, visual, acoustic), label,
  segment), ...]}``, word-aligned.
- **MISA** ``mosei.pkl``: the same with ``((token_ids, visual, acoustic, words), label, segment)``.
- ``"synthetic"``: the embedded generated dataset (``ambcore.data.synthetic``), written once
  into the cache folder in the MMSA layout and read back through the MMSA loader.

Datasets. MMSA ships CMU-MOSEI, CMU-MOSI and CH-SIMS in this one layout, each with its own
feature sizes (``ambcore.data.specs``: MOSEI 35/74, MOSI 20/5, SIMS 709/33 visual/acoustic).
The models take their input sizes from the loaded data, so any of them trains as it is.
``dataset.kind`` names the dataset from the sizes ("" when none fits); ``Config.dataset``
(``mosei``/``mosi``/``sims``) declares it, and a file that does not fit is refused
(``specs.check``: feature sizes, the labels' range, [-1, 1] for SIMS). Text is always
``raw_text`` (MAG-BERT/MISA: the words), tokenised later by the PLM's own tokenizer
(``ambcore.data.collate``); MMSA's ``text_bert`` (bert-base-uncased or, for SIMS,
bert-base-chinese ids) and ``text`` features are not read, so SIMS' Chinese text runs with
whatever local Chinese PLM folder is passed as ``plm``. SIMS' per-modality labels
(``regression_labels_T/A/V``) are not read either: AMB predicts the multimodal label.

True lengths of MMSA aligned files. aligned_50 files carry no length arrays: every utterance is
zero-padded (or truncated) to 50 word steps. The loader takes the number of words of
``raw_text`` (split on whitespace), capped at the number of steps, as the true length, and finds
the padding side per utterance: if the steps after the words are all zero (in both visual and
acoustic features) the padding is at the end; else, if the steps before them are all zero, at
the start (the layout of some MOSEI derivatives). When neither holds, the transcript and the
features disagree; the first steps are kept and the utterance is counted in the report
(``split/aligned: word count disagrees with the zero padding``). Each kept step is paired with
its word in ``Split.words``. Unaligned files without length arrays are trimmed after their last
non-zero step (counted in the report as well).

Bad input raises one ``DataError`` naming the file, split, key and what was expected. NaN and
+-inf feature values are replaced by 0 and counted in ``dataset.repairs`` by split, modality
and kind (e.g. ``"train/audio: -inf -> 0": 312``), never silently; a modality of a split with
no finite value at all is refused. Also refused: an empty split; text that is not a string
(``None``) or holds a lone UTF-16 surrogate; complex features and features beyond
``FEATURE_LIMIT`` (1e15) in magnitude (they overflow float32 once squared and summed in a layer
norm); fractional lengths. An MMSA file whose
visual and acoustic step counts agree (the aligned shape) but that carries length arrays is
read as unaligned, and counted in the report.

Ids. A split's ids must be unique (the paired statistics match predictions by id), but the
field's loaders do not check, and MOSEI derivatives name clips in other ways (MulT's files store
(video, start, end) triples whose video part repeats). A repeated id within a split therefore
gets a suffix from its second occurrence on, counted and named in the repairs: ``video$_$clip``
becomes ``video$_$clip#2``, an id without ``$_$`` (a video) becomes ``video$_$2``, so that the
video part before ``$_$`` stays that of the first occurrence. An id found in more than one split
is kept and reported as possible leakage between the splits (``dataset.shared_ids``, shown by
``data inspect`` and the data chapter): a clip in both train and test inflates the test scores.

Reading a file is memory-bounded by ``ambcore.data.safe_pickle`` (its limits and measured
peaks are documented there); the loader's own copies add at most the features in float32.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ambcore.config import Config
from ambcore.data import specs
from ambcore.data.safe_pickle import safe_load
from ambcore.data.synthetic import synthetic_cache_path
from ambcore.data.types import SPLITS, MultimodalDataset, Split
from ambcore.errors import DataError
from ambcore.paths import data_from_env

__all__ = [
    "load_dataset",
    "shuffle_audio_visual",
    "detect_format",
    "synthetic_cache_path",
    "shared_ids",
    "LABEL_RANGE",
    "FEATURE_LIMIT",
    "ID_SEPARATOR",
]

LABEL_RANGE = (-3.0, 3.0)
FEATURE_LIMIT = 1e15  # |feature| above this is refused (float32 overflows once squared and summed)
_LABEL_TOLERANCE = specs.LABEL_TOLERANCE  # float32 rounding of labels stored as 3.0000002
_MMSA_REQUIRED = ("raw_text", "audio", "vision", "regression_labels")
_MMSA_LENGTHS = ("audio_lengths", "vision_lengths")
_LIST_SPLIT_NAMES = {"train": "train", "valid": "dev", "test": "test"}  # MAG-BERT/MISA names


# ---- entry point -----------------------------------------------------------------------------
def load_dataset(path_or_name: str | Path | None = "synthetic", cfg=None) -> MultimodalDataset:
    """Load ``"synthetic"`` or a dataset pickle of any supported layout.

    ``path_or_name`` empty or None: the path comes from the ``AMB_DATA`` environment variable.
    ``cfg`` (a ``Config``) gives the synthetic dataset's sizes, seed and layout; the default
    config is used when it is None. Typical use: ``load_dataset(cfg.data, cfg)``.
    """
    if path_or_name is None or str(path_or_name).strip() == "":
        env = data_from_env()
        if not env:
            raise DataError(
                "no dataset given: pass a path (or 'synthetic'), set the config key data=..., "
                "or set the AMB_DATA environment variable to the dataset file"
            )
        path_or_name = env
    declared = getattr(cfg, "dataset", specs.AUTO) if cfg is not None else specs.AUTO
    if str(path_or_name) == "synthetic":
        cfg = cfg or Config()
        if declared not in (specs.AUTO, "mosei"):
            name = specs.spec(declared).name
            raise DataError(
                f"data='synthetic' is the MOSEI-shaped embedded dataset, not {name} "
                f"(dataset={declared}); write {name}-format files with `python -m ambcore "
                f"data synth --format {declared} --out DIR` and pass one as data"
            )
        path = synthetic_cache_path(
            cfg.synthetic_n_train,
            cfg.synthetic_n_valid,
            cfg.synthetic_n_test,
            cfg.synthetic_seed,
            cfg.synthetic_aligned,
        )
        dataset = _load_file(path)
    else:
        dataset = _load_file(Path(path_or_name).expanduser())
    specs.check(dataset, declared)
    if declared != specs.AUTO:
        dataset.kind = declared
    if cfg is not None and getattr(cfg, "av_shuffle", False):
        dataset = shuffle_audio_visual(dataset)
    return dataset


AV_SHUFFLE_SEED = 0  # one permutation per split, the same for every run of a cell


def shuffle_audio_visual(
    dataset: MultimodalDataset, seed: int = AV_SHUFFLE_SEED
) -> MultimodalDataset:
    """``dataset`` with each split's visual and acoustic features permuted (together) across its
    utterances: ids, texts, words and labels stay, so the audio-visual input carries no
    information about them (``Config.av_shuffle``, a negative control). Named in ``name``."""
    rng = np.random.default_rng(seed)
    splits = {}
    for key, split in dataset.splits.items():
        order = rng.permutation(len(split))
        splits[key] = dataclasses.replace(
            split,
            visual=[split.visual[i] for i in order],
            acoustic=[split.acoustic[i] for i in order],
        )
    return dataclasses.replace(
        dataset,
        splits=splits,
        name=f"{dataset.name}, audio-visual features shuffled across utterances",
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _load_file(path: Path) -> MultimodalDataset:
    if not path.is_file():
        raise DataError(f"{path}: no such dataset file (expected an MMSA, MAG-BERT or MISA pickle)")
    fingerprint = _sha256(path)
    obj = safe_load(path)
    fmt = detect_format(obj, str(path))
    repairs: dict[str, int] = {}
    if fmt.startswith("mmsa"):
        splits = {s: _mmsa_split(obj[s], str(path), s, repairs) for s in SPLITS}
        fmt = (
            "mmsa-aligned"
            if all(sp.words is not None for sp in splits.values())
            else ("mmsa-unaligned")
        )
    else:
        splits = {
            s: _list_split(obj[_list_key(obj, s)], str(path), s, fmt, repairs) for s in SPLITS
        }
    _check_splits(splits, str(path))
    _unique_ids(splits, repairs)
    shared = shared_ids(splits)
    visual_dim, acoustic_dim = _common_dims(splits, str(path))
    meta = obj.get("meta") if isinstance(obj, dict) else None
    is_synthetic = isinstance(meta, dict) and meta.get("generator") == "ambcore.data.synthetic"
    kind = specs.detect(visual_dim, acoustic_dim)
    if is_synthetic:
        kind = str(meta.get("dataset", "mosei"))
        shape = specs.spec(kind).name.removeprefix("CMU-")
        sizes = "/".join(str(len(splits[s])) for s in SPLITS)
        layout = "aligned" if meta.get("aligned") else "unaligned"
        name = f"SYNTHETIC {shape}-shaped (seed {meta.get('seed')}, {sizes}, {layout})"
    else:
        name = f"{path.name} ({fmt}{', ' + specs.spec(kind).name if kind else ''})"
    return MultimodalDataset(
        name=name,
        source=str(path),
        format=fmt,
        splits=splits,
        visual_dim=visual_dim,
        acoustic_dim=acoustic_dim,
        is_synthetic=is_synthetic,
        repairs=repairs,
        fingerprint=fingerprint,
        shared_ids=shared,
        kind=kind,
    )


# ---- format detection ------------------------------------------------------------------------
def _list_key(obj: dict, split: str) -> str:
    name = _LIST_SPLIT_NAMES[split]
    return name if name in obj else split  # accept "valid" in place of "dev"


def detect_format(obj: Any, source: str) -> str:
    """``"mmsa"``, ``"mag-bert"`` or ``"misa"``, from the structure of the unpickled object."""
    if not isinstance(obj, dict):
        raise DataError(
            f"{source}: top level is {type(obj).__name__}; expected a dict with splits "
            "train/valid/test (MMSA) or train/dev/test (MAG-BERT/MISA)"
        )
    keys = set(obj)
    if {"train", "valid", "test"} <= keys and all(isinstance(obj[s], dict) for s in SPLITS):
        return "mmsa"
    list_keys = [k for k in ("train", "dev", "valid", "test") if k in keys]
    if {"train", "test"} <= keys and ({"dev", "valid"} & keys):
        splits = [obj[k] for k in list_keys]
        if all(isinstance(s, (list, tuple)) for s in splits):
            for key in list_keys:
                if len(obj[key]):
                    return _detect_list_item(obj[key][0], source, key)
            raise DataError(f"{source}: every split is empty; expected utterances")
    described = ", ".join(f"{k!r}: {type(obj[k]).__name__}" for k in sorted(keys, key=str))
    raise DataError(
        f"{source}: top-level keys {{{described}}}; expected dict splits 'train', 'valid', "
        "'test' (MMSA) or list splits 'train', 'dev', 'test' (MAG-BERT/MISA)"
    )


def _detect_list_item(item: Any, source: str, split: str) -> str:
    if isinstance(item, (list, tuple)) and len(item) == 3 and isinstance(item[0], (list, tuple)):
        if len(item[0]) == 3:
            return "mag-bert"
        if len(item[0]) == 4:
            return "misa"
    raise DataError(
        f"{source}: split {split!r}, item 0: {_describe(item)}; expected "
        "((words, visual, acoustic), label, segment) (MAG-BERT) or "
        "((ids, visual, acoustic, words), label, segment) (MISA)"
    )


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(_describe(v) for v in value[:4])
        return f"{type(value).__name__} of length {len(value)} ({inner}{', ...' if len(value) > 4 else ''})"
    return "None" if value is None else type(value).__name__


# ---- shared checks ---------------------------------------------------------------------------
def _error(source: str, split: str, key: str, problem: str, expected: str) -> DataError:
    return DataError(f"{source}: split {split!r}, key {key!r}: {problem}; expected {expected}")


def _check_splits(splits: dict[str, Split], source: str) -> None:
    """Every split has utterances."""
    for name, split in splits.items():
        if len(split) == 0:
            raise DataError(
                f"{source}: split {name!r} has no utterances; expected at least one in each "
                "of train, valid and test"
            )


ID_SEPARATOR = "$_$"  # MMSA's "<video>$_$<clip>"


def _suffixed(uid: str, k: int) -> str:
    """The ``k``-th occurrence of ``uid`` made unique; the video part (before ``$_$``) kept."""
    return f"{uid}#{k}" if ID_SEPARATOR in uid else f"{uid}{ID_SEPARATOR}{k}"


def _unique_ids(splits: dict[str, Split], repairs: dict[str, int]) -> None:
    """Within each split, the second and later occurrences of an id get a suffix
    (``_suffixed``, the first number that is free in the split); counted and named in
    ``repairs``."""
    for name, split in splits.items():
        counts = Counter(split.ids)
        repeated = [uid for uid, n in counts.items() if n > 1]
        if not repeated:
            continue
        taken, seen, renamed, first = set(split.ids), Counter(), 0, None
        ids = []
        for uid in split.ids:
            seen[uid] += 1
            if seen[uid] == 1:
                ids.append(uid)
                continue
            k = seen[uid]
            while _suffixed(uid, k) in taken:
                k += 1
            new = _suffixed(uid, k)
            taken.add(new)
            ids.append(new)
            renamed += 1
            first = first or (uid, new)
        split.ids = ids
        shown = ", ".join(repr(u) for u in repeated[:3]) + (", ..." if len(repeated) > 3 else "")
        key = (
            f"{name}/id: {len(repeated)} repeated id(s) ({shown}) made unique by a suffix "
            f"(e.g. {first[0]!r} -> {first[1]!r}); utterances renamed"
        )
        repairs[key] = renamed


def shared_ids(splits: dict[str, Split]) -> dict[str, list[str]]:
    """The ids found in more than one split (possible leakage), by pair of splits
    (``"train & test"``), in the order of the first split; {} when there are none."""
    shared: dict[str, list[str]] = {}
    names = list(splits)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            other = set(splits[second].ids)
            both = [uid for uid in splits[first].ids if uid in other]
            if both:
                shared[f"{first} & {second}"] = both
    return shared


def _check_feature_dtype(x: np.ndarray, source: str, split: str, key: str) -> None:
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise _error(source, split, key, f"dtype {x.dtype}", "real-valued (float) features")


def _check_feature_values(
    x: np.ndarray, source: str, split: str, key: str, whole_modality: bool = True
) -> None:
    """Refuse finite values beyond FEATURE_LIMIT and (``whole_modality``: ``x`` holds a whole
    split's modality) a modality without any finite value."""
    finite = np.isfinite(x)
    if whole_modality and x.size and not finite.any():
        raise _error(
            source,
            split,
            key,
            f"no finite value ({x.size} NaN/inf)",
            "features (NaN/inf are repaired to 0 only where some values are finite)",
        )
    big = finite & (np.abs(x) > FEATURE_LIMIT)
    if big.any():
        index = np.unravel_index(int(np.flatnonzero(big)[0]), x.shape)
        raise _error(
            source,
            split,
            key,
            f"value {float(x[index]):g} at row {index[0]} "
            f"({int(big.sum())} value(s) beyond {FEATURE_LIMIT:g})",
            f"features with |x| <= {FEATURE_LIMIT:g}",
        )


def _texts(values: Any, source: str, split: str, key: str, ids: bool = False) -> list[str]:
    """One string per row: str or UTF-8 bytes (or integers, for ``ids``), no None, no lone
    surrogate."""
    if isinstance(values, np.ndarray) and not values.dtype.hasobject:
        values = values.reshape(-1).tolist()
    elif isinstance(values, np.ndarray):
        values = list(values.reshape(-1))
    elif not isinstance(values, (list, tuple)):
        raise _error(source, split, key, type(values).__name__, "a list or array of strings")
    texts = []
    for row, value in enumerate(values):
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        if ids and isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise _error(source, split, key, f"{_describe(value)} at row {row}", "a string per row")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _error(
                source,
                split,
                key,
                f"lone surrogate {value[exc.start]!r} at row {row}, character {exc.start}",
                "valid Unicode text",
            ) from None
        texts.append(str(value))
    return texts


def _repair_nonfinite(x: np.ndarray, split: str, modality: str, repairs: dict[str, int]) -> None:
    """Replace NaN/+inf/-inf by 0 in place, counting each kind."""
    if np.isfinite(x).all():
        return
    for kind, mask in (("NaN", np.isnan(x)), ("+inf", np.isposinf(x)), ("-inf", np.isneginf(x))):
        count = int(mask.sum())
        if count:
            key = f"{split}/{modality}: {kind} -> 0"
            repairs[key] = repairs.get(key, 0) + count
            x[mask] = 0.0


def _check_labels(labels: np.ndarray, source: str, split: str, key: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise _error(source, split, key, f"shape {labels.shape}", "shape (N,) of sentiment scores")
    if not np.issubdtype(labels.dtype, np.number) or np.issubdtype(
        labels.dtype, np.complexfloating
    ):
        raise _error(source, split, key, f"dtype {labels.dtype}", "real-valued sentiment scores")
    labels = labels.astype(np.float32)
    bad = ~np.isfinite(labels)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _error(
            source,
            split,
            key,
            f"{int(bad.sum())} non-finite label(s), first at row {i} ({labels[i]})",
            "finite sentiment scores in [-3, 3]",
        )
    low, high = LABEL_RANGE
    bad = (labels < low - _LABEL_TOLERANCE) | (labels > high + _LABEL_TOLERANCE)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _error(
            source,
            split,
            key,
            f"{int(bad.sum())} label(s) outside [-3, 3], first at row {i} ({labels[i]:g})",
            "sentiment scores in [-3, 3]",
        )
    return np.clip(labels, low, high)


def _common_dims(splits: dict[str, Split], source: str) -> tuple[int, int]:
    dims = {}
    for modality in ("visual", "acoustic"):
        found = {}
        for name, split in splits.items():
            for seq in getattr(split, modality):
                found.setdefault(int(seq.shape[1]), name)
        if len(found) != 1:
            detail = ", ".join(f"{d} (in {s!r})" for d, s in found.items()) or "none"
            raise DataError(
                f"{source}: {modality} feature dimension differs between splits or utterances: "
                f"{detail}; expected one dimension for the whole dataset"
            )
        dims[modality] = next(iter(found))
    return dims["visual"], dims["acoustic"]


# ---- MMSA ------------------------------------------------------------------------------------
def _mmsa_split(data: dict, source: str, split: str, repairs: dict[str, int]) -> Split:
    missing = [k for k in _MMSA_REQUIRED if k not in data]
    if missing:
        raise _error(
            source,
            split,
            missing[0],
            f"missing (split has keys {sorted(map(str, data))})",
            "MMSA keys " + ", ".join(_MMSA_REQUIRED),
        )
    features = {}
    for key in ("vision", "audio"):
        x = np.asarray(data[key])
        if x.ndim != 3:
            raise _error(source, split, key, f"shape {x.shape}", "rank 3 (N, steps, dim)")
        _check_feature_dtype(x, source, split, key)
        x = x.astype(np.float32, copy=False)
        if not x.flags.writeable:
            x = x.copy()
        _check_feature_values(x, source, split, key)
        _repair_nonfinite(x, split, key, repairs)
        features[key] = x
    vision, audio = features["vision"], features["audio"]
    n = vision.shape[0]
    texts = _texts(data["raw_text"], source, split, "raw_text")
    ids = (
        _texts(data["id"], source, split, "id", ids=True)
        if "id" in data
        else [f"{split}_{i}" for i in range(n)]
    )
    labels = _check_labels(data["regression_labels"], source, split, "regression_labels")
    for key, count in (
        ("raw_text", len(texts)),
        ("id", len(ids)),
        ("audio", audio.shape[0]),
        ("regression_labels", len(labels)),
    ):
        if count != n:
            raise _error(
                source, split, key, f"{count} rows", f"{n} rows like 'vision' (one per utterance)"
            )

    has_lengths = [k in data for k in _MMSA_LENGTHS]
    if any(has_lengths) and not all(has_lengths):
        absent = _MMSA_LENGTHS[has_lengths.index(False)]
        raise _error(source, split, absent, "missing", "both audio_lengths and vision_lengths")
    words = None
    if all(has_lengths):  # unaligned layout
        a_len = _check_lengths(
            data["audio_lengths"], n, audio.shape[1], source, split, "audio_lengths"
        )
        v_len = _check_lengths(
            data["vision_lengths"], n, vision.shape[1], source, split, "vision_lengths"
        )
        a_start = v_start = np.zeros(n, np.int64)
        if audio.shape[1] == vision.shape[1]:
            repairs[
                f"{split}/vision+audio: aligned shape but length arrays given: read as "
                "unaligned with those lengths"
            ] = n
    elif audio.shape[1] == vision.shape[1]:  # aligned layout: lengths from the words
        a_len, a_start, words = _aligned_lengths(texts, vision, audio, split, repairs)
        v_len, v_start = a_len, a_start
    else:  # unaligned without lengths: trim after the last non-zero step
        v_len = _trailing_trim(vision)
        a_len = _trailing_trim(audio)
        a_start = v_start = np.zeros(n, np.int64)
        repairs[f"{split}/vision+audio: lengths inferred from trailing all-zero steps"] = n

    visual = [vision[i, v_start[i] : v_start[i] + v_len[i]] for i in range(n)]
    acoustic = [audio[i, a_start[i] : a_start[i] + a_len[i]] for i in range(n)]
    return Split(split, ids, texts, visual, acoustic, labels, words)


def _check_lengths(values, n: int, steps: int, source: str, split: str, key: str) -> np.ndarray:
    lengths = np.asarray(values).reshape(-1)
    if lengths.shape[0] != n:
        raise _error(source, split, key, f"{lengths.shape[0]} rows", f"{n} (one per utterance)")
    if (
        not np.issubdtype(lengths.dtype, np.number)
        or lengths.dtype.kind == "c"
        or not np.all(np.isfinite(lengths))
    ):
        raise _error(source, split, key, f"dtype {lengths.dtype}", "integer lengths")
    whole = np.equal(np.floor(lengths), lengths) if lengths.dtype.kind in "fc" else None
    if whole is not None and not whole.all():
        i = int(np.flatnonzero(~whole)[0])
        problem = f"length {lengths[i]:g} at row {i}"
        raise _error(source, split, key, problem, "whole numbers of steps")
    lengths = lengths.astype(np.int64)
    bad = (lengths < 0) | (lengths > steps)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _error(
            source, split, key, f"length {lengths[i]} at row {i}", f"0 <= length <= {steps} steps"
        )
    return lengths


def _aligned_lengths(texts, vision, audio, split: str, repairs: dict[str, int]):
    """True length = words of raw_text (capped at the steps); padding side from the zeros."""
    n, steps = vision.shape[0], vision.shape[1]
    all_words = [t.split() for t in texts]
    lengths = np.array([min(len(w), steps) for w in all_words], dtype=np.int64)
    nonzero = (vision != 0).any(-1) | (audio != 0).any(-1)  # (N, steps)
    before = np.concatenate([np.zeros((n, 1), np.int64), np.cumsum(nonzero, 1)], 1)  # (N, steps+1)
    rows = np.arange(n)
    total = before[:, -1]
    tail_clear = total - before[rows, lengths] == 0  # nothing after the first `length` steps
    head_clear = before[rows, steps - lengths] == 0  # nothing before the last `length` steps
    left = ~tail_clear & head_clear
    start = np.where(left, steps - lengths, 0)
    disagree = int((~tail_clear & ~head_clear).sum())
    if disagree:
        key = f"{split}/aligned: word count disagrees with the zero padding (first steps kept)"
        repairs[key] = disagree
    truncated = int(sum(len(w) > steps for w in all_words))
    if truncated:
        repairs[f"{split}/aligned: transcripts longer than {steps} steps (words cut)"] = truncated
    words = [w[:length] for w, length in zip(all_words, lengths)]
    return lengths, start, words


def _trailing_trim(x: np.ndarray) -> np.ndarray:
    nonzero = (x != 0).any(-1)  # (N, steps)
    last = x.shape[1] - np.argmax(nonzero[:, ::-1], axis=1)
    return np.where(nonzero.any(1), last, 0).astype(np.int64)


# ---- MAG-BERT / MISA -------------------------------------------------------------------------
def _list_split(items, source: str, split: str, fmt: str, repairs: dict[str, int]) -> Split:
    n_fields = 3 if fmt == "mag-bert" else 4
    layout = (
        "((words, visual, acoustic), label, segment)"
        if fmt == "mag-bert"
        else "((ids, visual, acoustic, words), label, segment)"
    )
    ids, texts, visual, acoustic, labels, words_all = [], [], [], [], [], []
    counts: dict[str, int] = {}
    sizes: dict[str, int] = {}
    finite: dict[str, int] = {}
    for i, item in enumerate(items):
        where = f"item {i}"
        if not (
            isinstance(item, (list, tuple))
            and len(item) == 3
            and isinstance(item[0], (list, tuple))
            and len(item[0]) == n_fields
        ):
            raise _error(source, split, where, _describe(item), layout)
        (features, label, segment) = item
        if fmt == "mag-bert":
            words, v, a = features
        else:
            _, v, a, words = features
        words = _texts(words, source, split, f"{where} words")
        arrays = []
        for key, x in (("visual", v), ("acoustic", a)):
            x = np.asarray(x)
            if x.ndim != 2 or not np.issubdtype(x.dtype, np.number):
                raise _error(
                    source, split, f"{where} {key}", _describe(x), "(n_words, dim) float features"
                )
            _check_feature_dtype(x, source, split, f"{where} {key}")
            x = np.array(x, dtype=np.float32)  # a private, writable copy
            _check_feature_values(x, source, split, f"{where} {key}", whole_modality=False)
            sizes[key] = sizes.get(key, 0) + x.size
            finite[key] = finite.get(key, 0) + int(np.isfinite(x).sum())
            if not np.isfinite(x).all():
                for kind, mask in (
                    ("NaN", np.isnan(x)),
                    ("+inf", np.isposinf(x)),
                    ("-inf", np.isneginf(x)),
                ):
                    name = f"{split}/{key}: {kind} -> 0"
                    counts[name] = counts.get(name, 0) + int(mask.sum())
                    x[mask] = 0.0
            arrays.append(x)
        v, a = arrays
        if not (len(words) == v.shape[0] == a.shape[0]):
            raise _error(
                source,
                split,
                f"{where}",
                f"{len(words)} words, visual {v.shape}, acoustic {a.shape}",
                "as many visual and acoustic steps as words (word-aligned)",
            )
        label_values = np.asarray(label, dtype=object).reshape(-1)
        if label_values.size != 1:
            raise _error(source, split, f"{where} label", _describe(label), "a single score")
        ids.append(_texts([segment], source, split, f"{where} segment", ids=True)[0])
        texts.append(" ".join(words))
        words_all.append(words)
        visual.append(v)
        acoustic.append(a)
        labels.append(label_values[0])
    for key, size in sizes.items():
        if size and not finite[key]:
            raise _error(source, split, key, f"no finite value ({size} NaN/inf)", "features")
    try:
        label_array = np.asarray(labels, dtype=np.float64)
    except (TypeError, ValueError):
        raise _error(source, split, "label", "non-numeric label(s)", "sentiment scores") from None
    label_array = _check_labels(label_array, source, split, "label")
    for name, count in counts.items():
        if count:
            repairs[name] = repairs.get(name, 0) + count
    return Split(split, ids, texts, visual, acoustic, label_array, words_all)
