"""CMU-MultimodalSDK ``.csd`` reader, word-level alignment and conversion to MMSA pickles.

The oracle for the vectorised alignment is a plain double loop that applies the SDK's rule
literally (clip each frame to the word, keep it when the clipped length exceeds 1e-5 s,
average the kept frames, zeros when none). The SDK's own ``mmsdk`` package is not
installable from the package index here, so it is not used as a second oracle.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from ambcore.bench.sdk import SyntheticSdkSpec, generate_synthetic_sdk
from ambcore.data.safe_pickle import safe_load
from ambcore.data.sdk import (
    EPSILON,
    CsdFile,
    SortedFrames,
    average_frames_over_intervals,
    convert_sdk_to_mmsa,
    load_folds,
    write_csd,
)
from ambcore.errors import DataError

# ---- the obviously-correct reference -----------------------------------------------------------


def reference_average(frame_intervals, features, queries, eps=EPSILON):
    dim = features.shape[1]
    means, counts = [], []
    for q_start, q_end in queries:
        kept = []
        if q_end - q_start > eps:
            for (f_start, f_end), row in zip(frame_intervals, features):
                if min(f_end, q_end) - max(f_start, q_start) > eps:
                    kept.append(row.astype(np.float64))
        means.append(np.mean(kept, axis=0) if kept else np.zeros(dim))
        counts.append(len(kept))
    return np.array(means, dtype=np.float64).reshape(len(queries), dim), np.array(counts)


def reference_convert(words, visual, acoustic, labels, fold_ids, max_len):
    """Loop-based conversion of in-memory videos: {vid: (features, intervals)} per modality."""
    out = {}
    for vid in fold_ids:
        if not all(vid in m for m in (words, visual, acoustic, labels)):
            continue
        tokens = [w[0].decode() for w in words[vid][0]]
        w_int = words[vid][1]
        word_rows = [
            i
            for i in range(len(tokens))
            if tokens[i] != "sp" and w_int[i, 1] - w_int[i, 0] >= EPSILON
        ]
        word_rows.sort(key=lambda i: w_int[i, 0])
        vis_feats = np.nan_to_num(visual[vid][0], nan=0.0, posinf=0.0, neginf=0.0)
        aco_feats = np.nan_to_num(acoustic[vid][0], nan=0.0, posinf=0.0, neginf=0.0)
        for row, (seg_start, seg_end) in enumerate(labels[vid][1]):
            in_seg = [
                i
                for i in word_rows
                if min(w_int[i, 1], seg_end) - max(w_int[i, 0], seg_start) > EPSILON
            ]
            if not in_seg:
                continue
            v, _ = reference_average(visual[vid][1], vis_feats, w_int[in_seg])  # (feats, ints)
            a, _ = reference_average(acoustic[vid][1], aco_feats, w_int[in_seg])
            out[f"{vid}$_${row}"] = dict(
                text=" ".join(tokens[i] for i in in_seg),
                vision=v[:max_len],
                audio=a[:max_len],
                label=labels[vid][0][row, 0],
            )
    return out


# ---- random intervals --------------------------------------------------------------------------


def random_frames(rng, duration, hz, dim, drop=0.2, jitter=0.0, shuffle=True):
    n = int(duration * hz)
    starts = np.arange(n) / hz + rng.uniform(-jitter, jitter, n) / hz
    intervals = np.column_stack([starts, starts + 1.0 / hz])
    keep = rng.random(n) > drop  # dropped frames leave gaps: words with no frame
    intervals, features = intervals[keep], rng.standard_normal((keep.sum(), dim))
    if shuffle:  # the SDK sorts frames by start; the reader must not rely on file order
        order = rng.permutation(len(intervals))
        intervals, features = intervals[order], features[order]
    return intervals, features


def random_words(rng, duration, n):
    starts = np.sort(rng.uniform(0, duration, n))
    lengths = rng.choice([0.0, 1e-7, 0.01, 0.05, 0.3, 0.9], size=n)  # zero-length ones too
    return np.column_stack([starts, starts + lengths])


@pytest.mark.parametrize("seed", range(8))
def test_vectorised_average_matches_reference_on_random_intervals(seed):
    rng = np.random.default_rng(seed)
    hz = rng.choice([7.0, 30.0, 100.0])
    frames, features = random_frames(rng, 6.0, hz, dim=5, drop=rng.uniform(0, 0.6), jitter=0.3)
    queries = random_words(rng, 6.5, 60)
    # Queries exactly on frame boundaries and straddling exactly one boundary.
    edge = frames[np.argsort(frames[:, 0])][3]
    straddling = [edge, [edge[0] - 0.01, edge[0] + 0.01], [edge[1], edge[1] + 0.5]]
    queries = np.vstack([queries, straddling])
    means, counts = average_frames_over_intervals(frames, features, queries)
    ref_means, ref_counts = reference_average(frames, features, queries)
    np.testing.assert_array_equal(counts, ref_counts)
    np.testing.assert_allclose(means, ref_means, rtol=1e-5, atol=1e-5)
    assert (counts == 0).any() and (counts > 1).any(), "draws must include empty/multi-frame words"


def test_nested_frames_take_the_mask_path_and_still_match():
    rng = np.random.default_rng(3)
    starts = np.sort(rng.uniform(0, 5, 80))
    frames = np.column_stack([starts, starts + rng.uniform(0.01, 1.5, 80)])  # ends not monotone
    features = rng.standard_normal((80, 3))
    queries = random_words(rng, 5.5, 40)
    assert SortedFrames(frames, features).nested
    means, counts = average_frames_over_intervals(frames, features, queries)
    ref_means, ref_counts = reference_average(frames, features, queries)
    np.testing.assert_array_equal(counts, ref_counts)
    np.testing.assert_allclose(means, ref_means, rtol=1e-5, atol=1e-5)


def test_hand_computed_average():
    frames = np.array([[0.0, 0.1], [0.1, 0.2], [0.2, 0.3], [0.3, 0.4]])
    features = np.array([[1.0], [2.0], [4.0], [8.0]])
    words = np.array(
        [
            [0.05, 0.25],  # straddles frames 0..2 -> (1 + 2 + 4) / 3
            [0.1, 0.2],  # exactly frame 1; touching neighbours do not count -> 2
            [0.4, 0.6],  # after the last frame -> zeros, count 0
            [0.3999999, 0.5],  # overlaps frame 3 by 1e-7 s < 1e-5 -> zeros
        ]
    )
    means, counts = average_frames_over_intervals(frames, features, words)
    np.testing.assert_allclose(means[:, 0], [7 / 3, 2.0, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(counts, [3, 1, 0, 0])


# ---- the .csd reader ---------------------------------------------------------------------------


def _csd(tmp_path, name="seq.csd", **videos):
    return write_csd(tmp_path / name, "seq", videos, metadata={"dimension names": ["a", "b"]})


def test_reader_reads_layout_and_metadata(tmp_path):
    path = _csd(tmp_path, v1=(np.ones((3, 2), np.float32), np.zeros((3, 2))))
    with CsdFile(path) as csd:
        assert csd.root_name == "seq" and csd.video_ids == ["v1"] and "v1" in csd
        assert csd.metadata == {"root name": "seq", "dimension names": ["a", "b"]}
        seq = csd.read("v1")
        assert seq.features.shape == (3, 2) and seq.intervals.dtype == np.float64
        assert csd.feature_dim() == 2


@pytest.mark.parametrize(
    "features, intervals, message",
    [
        (np.ones((3, 2)), np.zeros((4, 2)), "features has 3 rows but intervals has 4"),
        (np.ones(3), np.zeros((3, 2)), "expected rank 2"),
        (np.ones((3, 2)), np.zeros((3, 3)), "expected (frames, 2)"),
    ],
)
def test_reader_rejects_malformed_video(tmp_path, features, intervals, message):
    path = _csd(tmp_path, bad=(features, intervals))
    with CsdFile(path) as csd, pytest.raises(DataError) as err:
        csd.read("bad")
    assert message in str(err.value) and "seq.csd" in str(err.value) and "bad" in str(err.value)


def test_reader_rejects_missing_groups(tmp_path):
    path = tmp_path / "nodata.csd"
    with h5py.File(path, "w") as h5:
        h5.create_group("seq").create_group("metadata")
    with pytest.raises(DataError, match=r"missing group /seq/data"):
        CsdFile(path)
    path = _csd(tmp_path, v1=(np.ones((2, 1)), np.zeros((2, 2))))
    with h5py.File(path, "a") as h5:
        del h5["seq/data/v1/intervals"]
    with CsdFile(path) as csd, pytest.raises(DataError, match="missing dataset 'intervals'"):
        csd.read("v1")
    with CsdFile(path) as csd, pytest.raises(DataError, match="missing video group"):
        csd.read("nope")
    (tmp_path / "text.csd").write_text("not hdf5")
    with pytest.raises(DataError, match="not an HDF5"):
        CsdFile(tmp_path / "text.csd")


# ---- folds -------------------------------------------------------------------------------------


def test_load_folds_json_txt_and_sdk_python_without_executing_it(tmp_path):
    expected = {"train": ["a", "b"], "valid": ["c"], "test": ["d"]}
    with_dev = {"train": ["a", "b", "a"], "dev": ["c"], "test": ["d"]}
    (tmp_path / "f.json").write_text(json.dumps(with_dev))
    assert load_folds(tmp_path / "f.json") == expected
    (tmp_path / "f.txt").write_text("# split video\ntrain a\ntrain b\nvalid c\ntest d\n")
    assert load_folds(tmp_path / "f.txt") == expected
    marker = tmp_path / "executed"
    (tmp_path / "std_folds.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "standard_train_fold=['a', 'b']\nstandard_valid_fold=['c']\nstandard_test_fold=['d']\n"
    )
    assert load_folds(tmp_path / "std_folds.py") == expected
    assert not marker.exists(), "the folds module must be parsed, never executed"


def test_load_folds_errors(tmp_path):
    (tmp_path / "dup.json").write_text(json.dumps({"train": ["a"], "valid": ["a"], "test": []}))
    with pytest.raises(DataError, match="'a' is in both 'train' and 'valid'"):
        load_folds(tmp_path / "dup.json")
    (tmp_path / "short.json").write_text(json.dumps({"train": ["a"]}))
    with pytest.raises(DataError, match=r"no fold for \['valid', 'test'\]"):
        load_folds(tmp_path / "short.json")


# ---- end-to-end conversion ---------------------------------------------------------------------


def _tiny_dataset(rng):
    """Three videos with known quirks plus ones missing from a modality or outside the folds."""
    words, visual, acoustic, labels = {}, {}, {}, {}
    for vid in ("v0", "v1", "v2", "only_words", "no_fold"):
        n_words = 30
        tokens = rng.choice(["good", "bad", "movie", "sp"], size=n_words, p=[0.3, 0.3, 0.2, 0.2])
        w_int = random_words(rng, 10.0, n_words)
        w_int[:, 1] = np.maximum(w_int[:, 1], w_int[:, 0] + 0.05)
        tokens[4], w_int[4, 1] = "good", w_int[4, 0]  # one zero-length word
        words[vid] = (np.array(tokens, dtype="S")[:, None], w_int)
        if vid != "only_words":
            v_int, v_feat = random_frames(rng, 10.0, 30.0, dim=4, drop=0.4, jitter=0.2)
            visual[vid] = (v_feat, v_int)  # (features, intervals), as write_csd takes them
            a_int, a_feat = random_frames(rng, 10.0, 100.0, dim=6, drop=0.05)
            a_feat[rng.random(a_feat.shape) < 0.01] = -np.inf
            acoustic[vid] = (a_feat, a_int)
        segments = np.array([[0.0, 3.0], [3.0, 7.5], [7.5, 10.5], [20.0, 21.0], [5.0, 5.0]])
        labels[vid] = (rng.uniform(-3, 3, (len(segments), 7)), segments)
    return words, visual, acoustic, labels


def test_conversion_matches_loop_reference_and_reports_every_skip(tmp_path):
    rng = np.random.default_rng(0)
    words, visual, acoustic, labels = _tiny_dataset(rng)
    paths = {
        "words": write_csd(tmp_path / "W.csd", "words", words),
        "visual": write_csd(tmp_path / "V.csd", "FACET 4.2", visual),
        "acoustic": write_csd(tmp_path / "A.csd", "COVAREP", acoustic),
        "labels": write_csd(tmp_path / "L.csd", "All Labels", labels),
    }
    folds = {"train": ["v0", "v1", "only_words"], "valid": ["v2"], "test": ["missing_everywhere"]}
    (tmp_path / "folds.json").write_text(json.dumps(folds))
    report = convert_sdk_to_mmsa(
        **paths,
        folds=tmp_path / "folds.json",
        out_dir=tmp_path / "out",
        max_len=8,
        unaligned_len=40,
        progress=False,
    )

    skipped = report.skipped
    assert skipped["video in 'train' fold but missing from visual"] == 1
    assert skipped["video in 'train' fold but missing from acoustic"] == 1
    assert skipped["video in 'test' fold but missing from words"] == 1
    assert skipped["words: video not in any fold"] == 1  # no_fold
    assert skipped["utterance has no words"] == 3  # the [20, 21] segment of v0, v1, v2
    assert skipped["label segment shorter than 1e-5 s"] == 3
    assert skipped["word shorter than 1e-5 s (the SDK does not align it)"] == 3
    assert report.nonfinite_values_zeroed["acoustic"] > 0
    assert report.words_without_frames["visual"] > 0
    assert report.n_videos == {"train": 2, "valid": 1, "test": 0}

    converted = folds["train"] + folds["valid"]
    expected = reference_convert(words, visual, acoustic, labels, converted, max_len=8)
    aligned = safe_load(tmp_path / "out" / "aligned_8.pkl")
    got_ids = [i for s in ("train", "valid", "test") for i in aligned[s]["id"]]
    assert got_ids == list(expected), "utterances in fold order, clip = label row"
    assert sum(report.n_utterances.values()) == len(expected) == 9
    for split in ("train", "valid"):
        data = aligned[split]
        assert data["vision"].dtype == np.float32 and data["vision"].shape[1:] == (8, 4)
        for i, uid in enumerate(data["id"]):
            ref = expected[uid]
            n = len(ref["vision"])
            assert data["raw_text"][i] == ref["text"] and "sp" not in ref["text"].split()
            assert data["regression_labels"][i] == pytest.approx(ref["label"], rel=1e-6)
            np.testing.assert_allclose(data["vision"][i, :n], ref["vision"], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(data["audio"][i, :n], ref["audio"], rtol=1e-5, atol=1e-5)
            assert not data["vision"][i, n:].any() and not data["audio"][i, n:].any()
    assert aligned["test"]["vision"].shape == (0, 8, 4)

    unaligned = safe_load(tmp_path / "out" / "unaligned_40.pkl")
    first = unaligned["train"]
    segment = labels["v0"][1][0]
    v_feat, v_int = visual["v0"]
    in_seg = [
        j
        for j in np.argsort(v_int[:, 0], kind="stable")
        if min(v_int[j, 1], segment[1]) - max(v_int[j, 0], segment[0]) > EPSILON
    ]
    assert first["id"][0] == "v0$_$0" and first["vision_lengths"][0] == min(len(in_seg), 40)
    kept = in_seg[:40]
    np.testing.assert_allclose(first["vision"][0, : len(kept)], v_feat[kept], rtol=1e-6)
    assert np.isfinite(first["audio"]).all()
    assert report.truncated  # 3 s at 100 Hz > 40 frames

    saved = json.loads((tmp_path / "out" / "conversion_report.json").read_text())
    assert saved["skipped"] == dict(skipped)
    text = report.format()
    assert "utterance has no words" in text and "missing from visual" in text


def test_synthetic_generator_layout_and_conversion(tmp_path):
    spec = SyntheticSdkSpec(n_videos=6, utterances_per_video=3, words_per_utterance=6, seed=1)
    paths = generate_synthetic_sdk(tmp_path / "csd", spec, progress=False)
    with CsdFile(paths["acoustic"]) as csd:
        assert len(csd.video_ids) == 6 and csd.feature_dim() == 74
        seq = csd.read(csd.video_ids[0])
        np.testing.assert_allclose(np.diff(seq.intervals[:3, 0]), 0.01)
    with CsdFile(paths["words"]) as csd:
        assert csd.read(csd.video_ids[0]).features.dtype.kind == "S"
    report = convert_sdk_to_mmsa(
        paths["words"],
        paths["visual"],
        paths["acoustic"],
        paths["labels"],
        paths["folds"],
        tmp_path / "out",
        unaligned_len=0,
        progress=False,
    )
    assert sum(report.n_videos.values()) == 6 and not report.skipped
    assert report.n_pauses_removed > 0 and sum(report.n_utterances.values()) >= 6
    assert list(report.outputs) == ["aligned_50"]


def test_benchmark_child_interpreter_runs_in_the_project_root():
    import subprocess

    from ambcore.bench.sdk import _run_python
    from ambcore.paths import PROJECT_ROOT

    assert _run_python("import os; print(os.getcwd()); print(6 * 7)").splitlines() == [
        str(PROJECT_ROOT),
        "42",
    ]
    with pytest.raises(subprocess.CalledProcessError):
        _run_python("raise SystemExit(3)")
