"""Batching (thesis 6.3.1): tokenization with the PLM's tokenizer and dynamic padding.

- ``SplitDataset``: a torch ``Dataset`` over one ``Split``. Each split is tokenized once per
  (tokenizer, max_text_len) and the ids are cached in memory, so epochs never re-tokenize.
- ``Collator``: a list of items -> ``Batch``. Text is padded to the longest sequence in the
  batch (``pad_to`` forces a fixed minimum, e.g. 50 as in the original implementations);
  visual and acoustic sequences are zero-padded likewise and their true lengths kept. For
  word-aligned splits, ``word_index`` maps each token to its word (= feature step), -1 for
  [CLS]/[SEP]/padding. ``variant="no-text"`` reduces the text to ``[CLS] [SEP]``;
  ``"text-only"`` still passes visual/acoustic (the model drops them).
- ``make_loader``: a DataLoader of ``Batch``; with ``bucket`` (``cfg.fast_path``) training
  batches group utterances of similar length (less padding), deterministically given the
  generator. Evaluation loaders (``shuffle=False``) keep the split order, so predictions line
  up with ``split.labels``.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, SequentialSampler

from ambcore.data.types import Batch, Split

__all__ = ["Collator", "SplitDataset", "make_loader", "tokenize_split", "BucketBatchSampler"]

VARIANTS = ("full", "text-only", "no-text")


@dataclass
class TokenizedSplit:
    input_ids: list[list[int]]  # per utterance, incl. [CLS] ... [SEP], truncated
    word_ids: list[list[int]] | None  # per token: word index, -1 for special tokens


_TOKEN_CACHE: dict[tuple, TokenizedSplit] = {}


def _tokenizer_key(tokenizer) -> tuple:
    return (type(tokenizer).__name__, str(getattr(tokenizer, "name_or_path", "")), len(tokenizer))


def _tokenize(tokenizer, texts: list[str], words: list[list[str]] | None, max_len: int):
    if words is not None:
        encoding = tokenizer(
            [list(w) for w in words],
            is_split_into_words=True,
            truncation=True,
            max_length=max_len,
            add_special_tokens=True,
        )
        word_ids = [
            [-1 if w is None else w for w in encoding.word_ids(i)] for i in range(len(words))
        ]
    else:
        encoding = tokenizer(list(texts), truncation=True, max_length=max_len)
        word_ids = None
    return TokenizedSplit(list(encoding["input_ids"]), word_ids)


def tokenize_split(split: Split, tokenizer, max_text_len: int) -> TokenizedSplit:
    """Token ids of every utterance of ``split`` (cached per split, tokenizer and length)."""
    key = (id(split), len(split), _tokenizer_key(tokenizer), int(max_text_len))
    cached = _TOKEN_CACHE.get(key)
    if cached is None:
        cached = _tokenize(tokenizer, split.texts, split.words, max_text_len)
        _TOKEN_CACHE[key] = cached
        weakref.finalize(split, _TOKEN_CACHE.pop, key, None)  # forget it with the split
    return cached


class SplitDataset(Dataset):
    """Items of one split: dicts with text, features, label and (cached) token ids."""

    def __init__(self, split: Split, tokenizer=None, max_text_len: int = 64):
        self.split = split
        self.tokens = tokenize_split(split, tokenizer, max_text_len) if tokenizer else None

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.split
        item = {
            "id": s.ids[i],
            "text": s.texts[i],
            "words": None if s.words is None else s.words[i],
            "visual": s.visual[i],
            "acoustic": s.acoustic[i],
            "label": float(s.labels[i]),
        }
        if self.tokens is not None:
            item["input_ids"] = self.tokens.input_ids[i]
            item["word_ids"] = None if self.tokens.word_ids is None else self.tokens.word_ids[i]
        return item

    def sort_keys(self) -> np.ndarray:
        """Cost of each utterance for length bucketing: tokens + longest feature sequence."""
        s = self.split
        feature = np.array([max(len(v), len(a)) for v, a in zip(s.visual, s.acoustic)])
        if self.tokens is not None:
            text = np.array([len(ids) for ids in self.tokens.input_ids])
        else:
            text = np.array([len(t.split()) + 2 for t in s.texts])
        return text + feature


class Collator:
    """Turns a list of ``SplitDataset`` items into a padded ``Batch``."""

    def __init__(
        self, tokenizer, max_text_len: int, variant: str = "full", pad_to: int | None = None
    ):
        if variant not in VARIANTS:
            raise ValueError(f"Collator: variant {variant!r}; expected one of {VARIANTS}")
        self.tokenizer = tokenizer
        self.max_text_len = int(max_text_len)
        self.variant = variant
        self.pad_to = pad_to
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.cls_id, self.sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id

    def _token_ids(self, items: list[dict]) -> tuple[list[list[int]], list[list[int]] | None]:
        if all("input_ids" in item for item in items):
            ids = [item["input_ids"] for item in items]
            word_ids = [item.get("word_ids") for item in items]
        else:  # items built by hand: tokenize now
            aligned = all(item.get("words") is not None for item in items)
            tok = _tokenize(
                self.tokenizer,
                [item["text"] for item in items],
                [item["words"] for item in items] if aligned else None,
                self.max_text_len,
            )
            ids, word_ids = tok.input_ids, tok.word_ids or [None] * len(items)
        if any(w is None for w in word_ids):
            word_ids = None
        if self.variant == "no-text":
            ids = [[self.cls_id, self.sep_id] for _ in items]
            word_ids = None if word_ids is None else [[-1, -1] for _ in items]
        return ids, word_ids

    def __call__(self, items: list[dict]) -> Batch:
        batch_size = len(items)
        ids, word_ids = self._token_ids(items)
        text_len = max(len(x) for x in ids)
        if self.pad_to:
            text_len = max(text_len, int(self.pad_to))
        input_ids = torch.full((batch_size, text_len), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((batch_size, text_len), dtype=torch.long)
        word_index = None if word_ids is None else torch.full((batch_size, text_len), -1)
        for b, seq in enumerate(ids):
            input_ids[b, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
            attention_mask[b, : len(seq)] = 1
            if word_index is not None:
                word_index[b, : len(seq)] = torch.as_tensor(word_ids[b], dtype=torch.long)
        visual, visual_lengths = self._pad([item["visual"] for item in items])
        acoustic, acoustic_lengths = self._pad([item["acoustic"] for item in items])
        return Batch(
            input_ids=input_ids,  # (B, T)
            attention_mask=attention_mask,  # (B, T)
            token_type_ids=torch.zeros_like(input_ids),  # (B, T)
            visual=visual,  # (B, Lv, Dv)
            visual_lengths=visual_lengths,  # (B,)
            acoustic=acoustic,  # (B, La, Da)
            acoustic_lengths=acoustic_lengths,  # (B,)
            labels=torch.tensor([item["label"] for item in items], dtype=torch.float32),  # (B,)
            ids=[item["id"] for item in items],
            word_index=word_index,  # (B, T) or None
        )

    def _pad(self, sequences: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = [len(x) for x in sequences]
        steps = max(max(lengths), 1)
        if self.pad_to:
            steps = max(steps, int(self.pad_to))
        padded = np.zeros((len(sequences), steps, sequences[0].shape[1]), dtype=np.float32)
        for b, x in enumerate(sequences):
            padded[b, : len(x)] = x
        return torch.from_numpy(padded), torch.tensor(lengths, dtype=torch.long)


class BucketBatchSampler(Sampler[list[int]]):
    """Shuffled batches of similar-length utterances (deterministic given ``generator``).

    Each epoch: a random permutation is cut into pools of ``pool_batches`` batches; each pool
    is sorted by length and cut into batches; the order of all batches is shuffled.
    """

    def __init__(
        self,
        sort_keys,
        batch_size: int,
        generator: torch.Generator | None = None,
        pool_batches: int = 20,
    ):
        self.sort_keys = np.asarray(sort_keys)
        self.batch_size = int(batch_size)
        self.generator = generator
        self.pool = self.batch_size * pool_batches

    def __len__(self) -> int:
        return math.ceil(len(self.sort_keys) / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        n = len(self.sort_keys)
        order = torch.randperm(n, generator=self.generator).numpy()
        batches = []
        for start in range(0, n, self.pool):
            pool = order[start : start + self.pool]
            pool = pool[np.argsort(self.sort_keys[pool], kind="stable")]
            batches += [
                pool[i : i + self.batch_size].tolist() for i in range(0, len(pool), self.batch_size)
            ]
        for j in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[j]


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[list[int]]:
    """Evaluation batches: indices by ascending ``lengths`` (ties in split order), cut into
    batches of ``batch_size``. Every index appears once; a batch pads to its own longest
    utterance, so similar lengths waste less compute than the split's order does."""
    order = np.argsort(np.asarray(lengths), kind="stable").tolist()
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def make_loader(
    split: Split,
    tokenizer,
    cfg,
    shuffle: bool,
    generator: torch.Generator | None = None,
    bucket: bool | None = None,
    pad_to: int | None = None,
) -> DataLoader:
    """A DataLoader of ``Batch`` over ``split`` (batch size, text length and variant from cfg).

    ``shuffle=True``: training order drawn from ``generator`` (length-bucketed when ``bucket``,
    default ``cfg.fast_path``). ``shuffle=False``: batches of ``cfg.eval_batch_size``, by
    ascending length when ``bucket`` (``sorted_batches``; ``predict_split`` puts the predictions
    back in the split's order by id), else in split order.
    """
    dataset = SplitDataset(split, tokenizer, cfg.max_text_len)
    bucket = cfg.fast_path if bucket is None else bucket
    if shuffle:
        if bucket:
            sampler = BucketBatchSampler(dataset.sort_keys(), cfg.batch_size, generator)
        else:
            sampler = BatchSampler(
                torch.utils.data.RandomSampler(dataset, generator=generator), cfg.batch_size, False
            )
    elif bucket:  # evaluation: utterances of similar length share a batch (less padding)
        sampler = sorted_batches(dataset.sort_keys(), cfg.eval_batch_size)
    else:
        sampler = BatchSampler(SequentialSampler(dataset), cfg.eval_batch_size, False)
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=Collator(tokenizer, cfg.max_text_len, cfg.variant, pad_to=pad_to),
        num_workers=cfg.num_workers,
        # Fast path on a GPU: page-locked batches, copied with non_blocking=True by the trainer.
        pin_memory=bool(cfg.fast_path and cfg.device != "cpu" and torch.cuda.is_available()),
    )
