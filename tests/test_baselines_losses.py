"""MISA's auxiliary losses on hand-made tensors (values computed by hand in the comments)."""

import pytest
import torch

from ambcore.models.losses import (
    cmd,
    misa_difference_loss,
    misa_reconstruction_loss,
    misa_similarity_loss,
    reconstruction_mse,
    soft_orthogonality,
)

# A 4x4 Hadamard matrix: columns 1..3 have zero mean and are mutually orthogonal.
H4 = torch.tensor(
    [[1.0, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=torch.float64
)


def test_cmd_of_identical_and_permuted_samples_is_zero_with_finite_gradient():
    x = torch.randn(16, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert cmd(x, x.clone()).item() == 0.0
    assert cmd(x, x[torch.randperm(16)]).item() == pytest.approx(0.0, abs=1e-12)
    a = x.clone().requires_grad_(True)
    cmd(a, x.clone()).backward()
    assert torch.isfinite(a.grad).all()


def test_cmd_of_shifted_sample_is_the_shift_norm():
    x = torch.randn(32, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    # A shift changes only the mean: CMD = ||c * 1||_2 = c * sqrt(D).
    assert cmd(x, x + 0.5).item() == pytest.approx(0.5 * 2.0, rel=1e-9)


def test_cmd_hand_computed_moments():
    x1 = torch.tensor([[1.0], [-1.0]])
    x2 = torch.tensor([[2.0], [-2.0]])
    # means equal (0); 2nd moments 1 vs 4 -> 3; 3rd 0 vs 0; 4th 1 vs 16 -> 15; 5th 0 vs 0.
    assert cmd(x1, x2, n_moments=2).item() == pytest.approx(3.0)
    assert cmd(x1, x2, n_moments=5).item() == pytest.approx(18.0)
    assert cmd(x1, x2, n_moments=1).item() == 0.0


def test_soft_orthogonality_zero_for_orthogonal_and_hand_value_for_identical():
    s, p = H4[:, 1:3], H4[:, 3:4]  # every column of s orthogonal to p's column
    assert soft_orthogonality(s, p).item() == pytest.approx(0.0, abs=1e-12)
    # rows of s have norm sqrt(2): s_n^T s_n = (1/2) * 4 * I = 2 I -> mean of squares = 8/4 = 2.
    assert soft_orthogonality(s, s).item() == pytest.approx(2.0, rel=1e-5)
    # Centring: adding a constant to a column does not change the loss.
    assert soft_orthogonality(s + 3.0, p - 1.0).item() == pytest.approx(0.0, abs=1e-12)


def test_soft_orthogonality_positive_for_correlated():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(8, 3, generator=g)
    b = a @ torch.randn(3, 2, generator=g)  # linear in a: far from orthogonal
    assert soft_orthogonality(a, b).item() > 0.05


def test_reconstruction_mse_hand_value_and_shape_error():
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    target = torch.tensor([[1.0, 0.0], [3.0, 6.0]])
    assert reconstruction_mse(pred, target).item() == pytest.approx((4 + 4) / 4)
    with pytest.raises(ValueError, match="shapes differ"):
        reconstruction_mse(pred, target[:1])


def test_misa_aggregates():
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(3))
    shared = {"t": x, "v": x.clone(), "a": x + 1.0}
    # pairs (a,t), (a,v), (t,v): 2, 2, 0 -> mean 4/3
    assert misa_similarity_loss(shared).item() == pytest.approx(4.0 / 3.0, rel=1e-5)
    s, p = H4[:, 1:3], H4[:, 3:4]
    zero = misa_difference_loss({"t": s, "v": s, "a": s}, {"t": p, "v": p, "a": p})
    # shared-private pairs are 0; each private-private pair is p vs p: rows of p have norm 1,
    # p^T p = 4 -> 16; three pairs -> 48.
    assert zero.item() == pytest.approx(48.0, rel=1e-5)
    recon = misa_reconstruction_loss({"t": x, "v": x + 1}, {"t": x, "v": x})
    assert recon.item() == pytest.approx(0.5)


def test_shape_errors_name_shapes():
    with pytest.raises(ValueError, match=r"\(3,\)"):
        cmd(torch.zeros(3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="batch sizes differ"):
        soft_orthogonality(torch.zeros(3, 2), torch.zeros(4, 2))
