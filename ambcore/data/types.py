"""The in-memory data model shared by every loader, the collate function and the models.

A dataset file of any supported layout (MMSA pickles, MAG-BERT/MISA pickles, the synthetic
generator, SDK ``.csd`` conversions) becomes one ``MultimodalDataset`` with three ``Split``s.
Sequences are stored unpadded (their true lengths); padding happens per batch in the collate.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where a Batch is used, so reading data does not load it
    import torch

SPLITS = ("train", "valid", "test")


@dataclass
class Split:
    """One split as parallel per-utterance lists (row i of each field is utterance i)."""

    name: str  # "train" | "valid" | "test"
    ids: list[str]  # "<video_id>$_$<clip_id>" where known
    texts: list[str]  # raw transcript
    visual: list[np.ndarray]  # each (Lv_i, Dv) float32, true length, no padding
    acoustic: list[np.ndarray]  # each (La_i, Da) float32
    labels: np.ndarray  # (N,) float32 sentiment in [-3, 3]
    # Word-aligned layouts only: the words that the feature steps are aligned to
    # (len(words[i]) == len(visual[i]) == len(acoustic[i])). None for unaligned data.
    words: list[list[str]] | None = None

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class MultimodalDataset:
    """Three splits plus what a researcher must know about where they came from."""

    name: str  # human-readable, e.g. "SYNTHETIC MOSEI-shaped (seed 1234)" or the file name
    source: str  # the path read, or "synthetic"
    format: str  # "mmsa-aligned" | "mmsa-unaligned" | "mag-bert" | "misa" | "synthetic"
    splits: dict[str, Split]
    visual_dim: int
    acoustic_dim: int
    is_synthetic: bool
    # Every repair made while loading, e.g. {"train/audio: -inf -> 0": 123}; never silent.
    repairs: dict[str, int] = field(default_factory=dict)
    fingerprint: str = ""  # sha256 of the file (or of the generator's parameters)
    # Ids found in more than one split, by pair ("train & test": [ids]): possible leakage,
    # reported (``ambcore.data.report``), not refused.
    shared_ids: dict[str, list[str]] = field(default_factory=dict)
    # Which of MMSA's datasets the file is (``ambcore.data.specs``): "mosei" | "mosi" | "sims",
    # declared (``Config.dataset``) or named from the feature sizes; "" when none fits.
    kind: str = ""

    @property
    def aligned(self) -> bool:
        return all(s.words is not None for s in self.splits.values())

    def __getitem__(self, split: str) -> Split:
        return self.splits[split]


@dataclass
class Batch:
    """A padded mini-batch as the models consume it (built by ``ambcore.data.collate``)."""

    input_ids: torch.Tensor  # (B, T) long, word-piece ids incl. [CLS] ... [SEP], 0-padded
    attention_mask: torch.Tensor  # (B, T) long, 1 = real token
    token_type_ids: torch.Tensor  # (B, T) long
    visual: torch.Tensor  # (B, Lv, Dv) float, zero-padded
    visual_lengths: torch.Tensor  # (B,) long
    acoustic: torch.Tensor  # (B, La, Da) float
    acoustic_lengths: torch.Tensor  # (B,) long
    labels: torch.Tensor  # (B,) float
    ids: list[str]
    # For word-aligned data: index of the word (feature step) each token belongs to, -1 for
    # special tokens and padding (MAG-BERT shifts each token by its word's features).
    word_index: torch.Tensor | None = None  # (B, T) long

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        # lazy: reading data does not load torch; a Batch's methods do
        import torch

        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                value = value.to(device, non_blocking=non_blocking)
            moved[f.name] = value
        return Batch(**moved)

    def pin_memory(self) -> Batch:
        """The batch in page-locked memory (``DataLoader(pin_memory=True)`` calls this), so that
        ``to(cuda, non_blocking=True)`` copies asynchronously."""
        # lazy: reading data does not load torch; a Batch's methods do
        import torch

        pinned = {}
        for f in fields(self):
            value = getattr(self, f.name)
            pinned[f.name] = value.pin_memory() if isinstance(value, torch.Tensor) else value
        return Batch(**pinned)

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def visual_mask(self) -> torch.Tensor:
        """(B, Lv) bool, True at real (unpadded) steps."""
        # lazy: reading data does not load torch; a Batch's methods do
        import torch

        steps = torch.arange(self.visual.shape[1], device=self.visual.device)
        return steps[None, :] < self.visual_lengths[:, None]

    @property
    def acoustic_mask(self) -> torch.Tensor:
        """(B, La) bool, True at real (unpadded) steps."""
        # lazy: reading data does not load torch; a Batch's methods do
        import torch

        steps = torch.arange(self.acoustic.shape[1], device=self.acoustic.device)
        return steps[None, :] < self.acoustic_lengths[:, None]
