"""The auxiliary losses of MISA (Hazarika et al., ACM MM 2020), the baseline of thesis 6.3.2.

MISA learns, for every modality m, a shared (modality-invariant) vector ``h_m^c`` and a private
(modality-specific) vector ``h_m^p``, regularised by three losses besides the task loss:

- similarity: ``cmd`` (central moment discrepancy, Zellinger et al. 2017) between the shared
  vectors of every pair of modalities, pulling them into one distribution;
- difference: ``soft_orthogonality`` between shared and private vectors of a modality and
  between the private vectors of every pair of modalities;
- reconstruction: ``reconstruction_mse`` between a modality's projected utterance vector and
  its reconstruction from ``h_m^c + h_m^p``.

Facts taken from the public MISA code (github.com/declare-lab/MISA, ``src/utils/functions.py``
and ``src/solver.py``); the code here is written from these definitions:

- CMD: ``||E[x1] - E[x2]||_2 + sum_{k=2..K} ||E[(x1 - E x1)^k] - E[(x2 - E x2)^k]||_2`` with
  expectations over the batch (per feature) and K = 5 moments. Unlike the CMD paper, MISA does
  not divide the k-th term by ``|b - a|^k`` (features lie in (0, 1) after the sigmoid, so the
  scaling would be 1 anyway); neither do we.
- Difference: both inputs are centred over the batch, each row divided by its (detached) L2
  norm + 1e-6, and the loss is the MEAN of the squared entries of ``S^T P`` (a (d1, d2)
  matrix), i.e. ``||S^T P||_F^2 / (d1 * d2)``.
- Reconstruction: plain mean squared error over all entries.
- In the solver: CMD averaged over the three modality pairs; difference summed over the six
  pairs (3 shared-private, 3 private-private); reconstruction averaged over the three
  modalities; total = task + diff_weight * diff + sim_weight * cmd + recon_weight * recon.

One deliberate difference: the norms inside CMD use ``torch.linalg.vector_norm``, whose
gradient at zero is 0, where ``sqrt(sum(...))`` (MISA) has an infinite/NaN gradient. Values are
identical; only the degenerate case of exactly matching moments no longer poisons training.
"""

from __future__ import annotations

import itertools

import torch

__all__ = [
    "cmd",
    "soft_orthogonality",
    "reconstruction_mse",
    "misa_similarity_loss",
    "misa_difference_loss",
    "misa_reconstruction_loss",
]


def _check_pair(x1: torch.Tensor, x2: torch.Tensor, name: str) -> None:
    if x1.dim() != 2 or x2.dim() != 2:
        raise ValueError(
            f"{name}: expected two (batch, features) matrices, got shapes "
            f"{tuple(x1.shape)} and {tuple(x2.shape)}"
        )


def cmd(x1: torch.Tensor, x2: torch.Tensor, n_moments: int = 5) -> torch.Tensor:
    """Central moment discrepancy between two samples ``x1`` (N1, D) and ``x2`` (N2, D).

    Zero when the samples have equal means and equal central moments of orders 2..K; it grows
    as the distributions differ. ``n_moments`` is K (MISA: 5).
    """
    _check_pair(x1, x2, "cmd")
    if x1.shape[1] != x2.shape[1]:
        raise ValueError(f"cmd: feature sizes differ: {x1.shape[1]} vs {x2.shape[1]}")
    if n_moments < 1:
        raise ValueError(f"cmd: n_moments must be >= 1, got {n_moments}")
    mean1, mean2 = x1.mean(dim=0), x2.mean(dim=0)  # (D,)
    centred1, centred2 = x1 - mean1, x2 - mean2
    total = torch.linalg.vector_norm(mean1 - mean2)
    for k in range(2, n_moments + 1):
        moment1 = centred1.pow(k).mean(dim=0)  # (D,)
        moment2 = centred2.pow(k).mean(dim=0)
        total = total + torch.linalg.vector_norm(moment1 - moment2)
    return total


def soft_orthogonality(x1: torch.Tensor, x2: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """MISA's difference loss between ``x1`` (B, D1) and ``x2`` (B, D2): mean of ``(S^T P)^2``.

    ``S`` and ``P`` are ``x1`` and ``x2`` centred over the batch with each row scaled to unit
    L2 norm (norm detached, as MISA does). Zero when every feature column of one is orthogonal
    to every feature column of the other; 1 at most per entry.
    """
    _check_pair(x1, x2, "soft_orthogonality")
    if x1.shape[0] != x2.shape[0]:
        raise ValueError(f"soft_orthogonality: batch sizes differ: {x1.shape[0]} vs {x2.shape[0]}")
    s = x1 - x1.mean(dim=0, keepdim=True)  # (B, D1)
    p = x2 - x2.mean(dim=0, keepdim=True)  # (B, D2)
    s = s / (s.norm(dim=1, keepdim=True).detach() + eps)
    p = p / (p.norm(dim=1, keepdim=True).detach() + eps)
    return (s.t() @ p).pow(2).mean()  # mean over the (D1, D2) entries


def reconstruction_mse(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all entries (MISA's ``MSE``)."""
    if reconstruction.shape != target.shape:
        raise ValueError(
            f"reconstruction_mse: shapes differ: {tuple(reconstruction.shape)} vs "
            f"{tuple(target.shape)}"
        )
    return (target - reconstruction).pow(2).mean()


def misa_similarity_loss(shared: dict[str, torch.Tensor], n_moments: int = 5) -> torch.Tensor:
    """CMD averaged over every pair of modalities' shared vectors (MISA: 3 pairs of t, v, a)."""
    pairs = list(itertools.combinations(sorted(shared), 2))
    return sum(cmd(shared[a], shared[b], n_moments) for a, b in pairs) / len(pairs)


def misa_difference_loss(
    shared: dict[str, torch.Tensor], private: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Soft orthogonality summed over shared-vs-private per modality and private-vs-private pairs."""
    total = sum(soft_orthogonality(private[m], shared[m]) for m in sorted(private))
    for a, b in itertools.combinations(sorted(private), 2):
        total = total + soft_orthogonality(private[a], private[b])
    return total


def misa_reconstruction_loss(
    reconstructed: dict[str, torch.Tensor], original: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Reconstruction MSE averaged over the modalities."""
    return sum(reconstruction_mse(reconstructed[m], original[m]) for m in original) / len(original)
