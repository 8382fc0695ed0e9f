"""Input corruption for the robustness study (thesis section 6.3.4) and noise-augmented training.

Four kinds of noise, each applied to a padded ``Batch`` with an explicit ``torch.Generator`` so
that every draw can be repeated:

- ``"deletion"``: each eligible word-piece token becomes ``[UNK]`` with probability ``rate``.
- ``"replacement"``: each eligible token becomes, with probability ``rate``, a *different* token
  drawn uniformly from the vocabulary's ordinary word pieces (never a special token such as
  ``[CLS]``/``[SEP]``/``[PAD]``/``[UNK]``/``[MASK]``, and never BERT's ``[unusedN]``
  placeholders, which no real text produces).
- ``"visual"`` / ``"acoustic"``: each real (unpadded) time step is selected with probability
  ``rate`` and its feature vector is multiplied element-wise by Gaussian noise.

Eligible tokens are the real ones (``attention_mask == 1``) that are not special tokens, so
``[CLS]``, ``[SEP]`` and padding are never touched and ``rate`` is the probability of corrupting
each word piece, the "deletion/replacement rate" of the thesis' figure 6.3.

The Gaussian. Hazarika et al. (2022, "Analyzing Modality Robustness in Multimodal Sentiment
Analysis") describe the visual/acoustic perturbation in words; their public code
(declare-lab/MSA-Robustness, ``MISA/src/models.py``) draws one ``np.random.normal(0, 1)`` value
per selected unit (there, an utterance's representation) and multiplies the whole unit by it.
The thesis follows them ("multiplicative Gaussian noise to a randomly selected set of input
sequence elements") without saying how many draws a selected element gets. Two granularities
(``granularity``):

- ``"step"`` (default, ``DEFAULT_GRANULARITY``): one scalar ``n ~ N(0, 1)`` per selected time
  step, ``x_t -> n_t x_t``: Hazarika et al.'s operation applied to the elements the thesis
  names. The step keeps its pattern up to a random gain and sign.
- ``"element"``: ``x_t -> n_t * x_t`` with a vector ``n_t`` of independent N(0, 1) draws, one per
  feature. The step keeps its scale but loses its content (its sign pattern and relative
  magnitudes are random), so a rate of 1.0 erases the modality's information. It was this
  module's only form before; the robustness chapter shows its curves beside the default's.

``gaussian_mean``/``gaussian_std`` change the distribution (e.g. ``N(1, 0.1)`` for a mild jitter).
Noise-augmented training keeps ``"element"`` (``noise_augment``), as it was trained with.

Where the corruption happens. Hazarika et al. perturb the utterance-level representation inside
the model; here the *input* features of the selected steps are perturbed, as section 6.3.4
describes ("a randomly selected set of input sequence elements"), so the same function serves
every model.

Noise-augmented training (beyond the thesis): ``noise_augment`` perturbs a random fraction of
the samples of a training batch, the procedure Hazarika et al. propose to make models robust;
each perturbed sample gets one randomly chosen kind of noise.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch

from ambcore.data.types import Batch

__all__ = [
    "NOISE_KINDS",
    "TokenizerInfo",
    "NoiseResult",
    "AugmentResult",
    "eligible_token_mask",
    "delete_tokens",
    "replace_tokens",
    "scale_steps",
    "apply_noise",
    "noise_augment",
    "DEFAULT_RATES",
    "draw_seed",
    "NOISE_GRANULARITIES",
    "DEFAULT_GRANULARITY",
]

NOISE_KINDS = ("deletion", "replacement", "visual", "acoustic")
TEXT_KINDS = ("deletion", "replacement")
AV_KINDS = ("visual", "acoustic")
NOISE_GRANULARITIES = ("step", "element")  # of the visual/acoustic noise; see the module doc
DEFAULT_GRANULARITY = "step"

_UNUSED_TOKEN = re.compile(r"\[unused\d+\]")


@dataclass(frozen=True, eq=False)
class TokenizerInfo:
    """What the text noise needs to know about the tokenizer.

    ``special_ids`` are never corrupted and never produced; ``replacement_ids`` (sorted, long)
    are the tokens ``"replacement"`` draws from.
    """

    unk_id: int
    special_ids: tuple[int, ...]
    replacement_ids: torch.Tensor  # (V',) long, sorted, disjoint from special_ids

    def __post_init__(self) -> None:
        ids = torch.as_tensor(self.replacement_ids, dtype=torch.long)
        ids = torch.unique(ids)  # sorted
        if torch.isin(ids, torch.tensor(self.special_ids, dtype=torch.long)).any():
            raise ValueError("TokenizerInfo: replacement_ids contains special token ids")
        if ids.numel() < 2:
            raise ValueError(
                f"TokenizerInfo: {ids.numel()} replacement token(s); need at least 2 so that a "
                "replaced token can differ from the original"
            )
        object.__setattr__(self, "replacement_ids", ids)

    @classmethod
    def from_tokenizer(cls, tokenizer, exclude_unused: bool = True) -> TokenizerInfo:
        """From a Hugging Face tokenizer: its special ids, its ``[UNK]`` id and its vocabulary."""
        if tokenizer.unk_token_id is None:
            raise ValueError(f"tokenizer {type(tokenizer).__name__} has no unk token")
        special = tuple(sorted(set(int(i) for i in tokenizer.all_special_ids)))
        vocab = tokenizer.get_vocab()
        keep = [
            int(i)
            for token, i in vocab.items()
            if int(i) not in special and not (exclude_unused and _UNUSED_TOKEN.fullmatch(token))
        ]
        return cls(int(tokenizer.unk_token_id), special, torch.tensor(keep, dtype=torch.long))


class NoiseResult(NamedTuple):
    """A corrupted copy of a batch and how much of it was corrupted."""

    batch: Batch
    n_corrupted: int  # tokens (text kinds) or time steps (visual/acoustic) corrupted
    n_eligible: int  # tokens or real time steps that could have been

    @property
    def realised_rate(self) -> float:
        return self.n_corrupted / self.n_eligible if self.n_eligible else float("nan")


class AugmentResult(NamedTuple):
    """A training batch after ``noise_augment``; ``kinds[i]`` is None for untouched samples."""

    batch: Batch
    kinds: list[str | None]


# ---- building blocks --------------------------------------------------------------------------


def _check_rate(rate: float) -> float:
    rate = float(rate)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"noise rate must be in [0, 1], got {rate}")
    return rate


def _uniform(shape: Sequence[int], generator: torch.Generator, device) -> torch.Tensor:
    """U[0, 1) draws from ``generator`` (on its own device), moved to ``device``."""
    return torch.rand(tuple(shape), generator=generator, device=generator.device).to(device)


def _select(eligible: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """Each True element of ``eligible`` independently selected with probability ``rate``."""
    # One draw per element whatever the eligibility, so the stream does not depend on the mask.
    u = _uniform(eligible.shape, generator, eligible.device)
    return eligible & (u < rate)  # u < 1.0 always: rate 1 selects everything eligible


def eligible_token_mask(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, special_ids: Sequence[int]
) -> torch.Tensor:
    """(B, T) bool: real tokens that are not special tokens ([CLS], [SEP], [UNK], ...)."""
    special = torch.tensor(list(special_ids), dtype=input_ids.dtype, device=input_ids.device)
    return attention_mask.bool() & ~torch.isin(input_ids, special)


def delete_tokens(
    input_ids: torch.Tensor,
    eligible: torch.Tensor,
    rate: float,
    generator: torch.Generator,
    info: TokenizerInfo,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace each eligible token by ``[UNK]`` with probability ``rate``.

    Returns the new ids (B, T) and the (B, T) bool mask of corrupted positions.
    """
    selected = _select(eligible, _check_rate(rate), generator)
    return input_ids.masked_fill(selected, info.unk_id), selected


def replace_tokens(
    input_ids: torch.Tensor,
    eligible: torch.Tensor,
    rate: float,
    generator: torch.Generator,
    info: TokenizerInfo,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace each eligible token, with probability ``rate``, by a different random token.

    The new token is uniform over ``info.replacement_ids`` without the original token, so every
    selected position really changes. Returns the new ids and the corrupted-position mask.
    """
    selected = _select(eligible, _check_rate(rate), generator)
    candidates = info.replacement_ids.to(input_ids.device)  # (V',) sorted
    n = candidates.numel()
    original = input_ids[selected]  # (K,)
    # Draw among the n candidates, or the n-1 others when the original is itself a candidate.
    pos = torch.searchsorted(candidates, original)  # (K,)
    is_candidate = candidates[pos.clamp(max=n - 1)] == original
    n_choices = n - is_candidate.long()
    # One draw per position (used where selected), so the stream does not depend on the rate.
    u = _uniform(input_ids.shape, generator, input_ids.device)[selected]  # (K,)
    r = torch.minimum((u * n_choices).long(), n_choices - 1)
    index = r + (is_candidate & (r >= pos)).long()  # skip the original's slot
    new_ids = input_ids.clone()
    new_ids[selected] = candidates[index].to(input_ids.dtype)
    return new_ids, selected


def check_granularity(granularity: str) -> str:
    if granularity not in NOISE_GRANULARITIES:
        raise ValueError(
            f"noise granularity {granularity!r}; valid granularities: {', '.join(NOISE_GRANULARITIES)}"
        )
    return granularity


def scale_steps(
    features: torch.Tensor,
    eligible_steps: torch.Tensor,
    rate: float,
    generator: torch.Generator,
    gaussian_mean: float = 0.0,
    gaussian_std: float = 1.0,
    granularity: str = DEFAULT_GRANULARITY,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multiply each selected step's feature vector by N(mean, std) noise: one scalar per step
    (``granularity="step"``) or one draw per element (``"element"``).

    ``features`` (B, L, D); ``eligible_steps`` (B, L) bool (real steps). Each eligible step is
    selected with probability ``rate``. Returns the new features and the (B, L) selection.
    """
    selected = _select(eligible_steps, _check_rate(rate), generator)  # (B, L)
    width = features.shape[-1] if check_granularity(granularity) == "element" else 1
    noise = torch.randn(
        (*features.shape[:-1], width),
        generator=generator,
        device=generator.device,
        dtype=torch.float32,
    ).to(device=features.device, dtype=features.dtype)
    noise = gaussian_mean + gaussian_std * noise  # (B, L, D) or (B, L, 1)
    factor = torch.where(selected[..., None], noise, torch.ones_like(noise))
    return features * factor, selected


# ---- on a Batch -------------------------------------------------------------------------------


def apply_noise(
    batch: Batch,
    kind: str,
    rate: float,
    generator: torch.Generator,
    tokenizer_info: TokenizerInfo | None = None,
    *,
    samples: torch.Tensor | None = None,
    gaussian_mean: float = 0.0,
    gaussian_std: float = 1.0,
    granularity: str = DEFAULT_GRANULARITY,
) -> NoiseResult:
    """A corrupted copy of ``batch`` (the input is not modified) and the realised counts.

    ``kind`` is one of ``NOISE_KINDS``; text kinds need ``tokenizer_info``. ``samples`` (B,) bool
    restricts the corruption to some samples of the batch (all by default). ``granularity``
    (visual/acoustic only): one Gaussian scalar per selected step or one per element.
    """
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {kind!r}; valid kinds: {', '.join(NOISE_KINDS)}")
    rows = _sample_rows(batch, samples)
    if kind in TEXT_KINDS:
        if tokenizer_info is None:
            raise ValueError(f"noise kind {kind!r} needs tokenizer_info (TokenizerInfo)")
        eligible = (
            eligible_token_mask(batch.input_ids, batch.attention_mask, tokenizer_info.special_ids)
            & rows[:, None]
        )  # (B, T)
        corrupt = delete_tokens if kind == "deletion" else replace_tokens
        new_ids, selected = corrupt(batch.input_ids, eligible, rate, generator, tokenizer_info)
        noisy = replace(batch, input_ids=new_ids)
    else:
        features = batch.visual if kind == "visual" else batch.acoustic  # (B, L, D)
        steps = batch.visual_mask if kind == "visual" else batch.acoustic_mask  # (B, L)
        eligible = steps & rows[:, None]
        new_features, selected = scale_steps(
            features, eligible, rate, generator, gaussian_mean, gaussian_std, granularity
        )
        noisy = replace(batch, **{kind: new_features})
    return NoiseResult(noisy, int(selected.sum()), int(eligible.sum()))


def _sample_rows(batch: Batch, samples: torch.Tensor | None) -> torch.Tensor:
    device = batch.input_ids.device
    if samples is None:
        return torch.ones(len(batch), dtype=torch.bool, device=device)
    samples = torch.as_tensor(samples, dtype=torch.bool, device=device)
    if samples.shape != (len(batch),):
        raise ValueError(
            f"apply_noise: samples has shape {tuple(samples.shape)}, expected ({len(batch)},)"
        )
    return samples


def noise_augment(
    batch: Batch,
    rate: float,
    generator: torch.Generator,
    tokenizer_info: TokenizerInfo | None,
    *,
    kinds: Sequence[str] = NOISE_KINDS,
    element_rate: float = 1.0,
    gaussian_mean: float = 0.0,
    gaussian_std: float = 1.0,
    granularity: str = "element",
) -> AugmentResult:
    """Noise-augmented training (Hazarika et al. 2022): perturb a fraction of a batch's samples.

    Each sample is perturbed with probability ``rate``; a perturbed sample gets one kind of
    noise drawn uniformly from ``kinds``, applied to that modality at ``element_rate`` (1.0, the
    default, corrupts the whole modality of the sample, as Hazarika et al. perturb a sample's
    whole modality; a smaller value corrupts that fraction of its tokens or steps).
    ``granularity`` of the visual/acoustic noise: ``"element"``, as the augmented runs were trained.
    """
    rate = _check_rate(rate)
    unknown = [k for k in kinds if k not in NOISE_KINDS]
    if unknown or not kinds:
        raise ValueError(f"noise_augment: kinds {list(kinds)!r}; valid: {', '.join(NOISE_KINDS)}")
    device = batch.input_ids.device
    perturbed = _uniform((len(batch),), generator, device) < rate  # (B,)
    choice = torch.randint(
        len(kinds), (len(batch),), generator=generator, device=generator.device
    ).to(device)
    labels: list[str | None] = [None] * len(batch)
    for k, kind in enumerate(kinds):
        rows = perturbed & (choice == k)
        if not rows.any():
            continue
        for i in rows.nonzero().flatten().tolist():
            labels[i] = kind
        batch = apply_noise(
            batch,
            kind,
            element_rate,
            generator,
            tokenizer_info,
            samples=rows,
            gaussian_mean=gaussian_mean,
            gaussian_std=gaussian_std,
            granularity=granularity,
        ).batch
    return AugmentResult(batch, labels)


# ---- rates and draws of the robustness curves (figure 6.3; evaluated in ambcore.robustness) ----

DEFAULT_RATES = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)


def draw_seed(seed: int, kind: str, draw: int) -> int:
    """The noise seed of draw ``draw`` of ``kind``; the same at every rate (common random
    numbers: a step corrupted at rate p is also corrupted at every higher rate)."""
    return 1_000_003 * seed + 1_009 * NOISE_KINDS.index(kind) + draw
