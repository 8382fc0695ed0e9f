"""MAG-BERT's shift of a PLM's token states (Rahman et al. 2020), shared by the MAG-BERT baseline
(``ambcore.models.magbert``) and AMB's feedback into the PLM (``ambcore.models.fusion``).

The mechanism, for token states ``z`` (B, T, H) and non-verbal sources ``x_k`` (B, T, D_k):

- gated displacement: ``h = sum_k ReLU(W_gk [x_k ; z]) * (W_k x_k)``, each source through its
  own gate (which reads the token state too) and projection to H (``gated_displacement``);
- norm-ratio bound: ``alpha = min(||z|| / ||h|| * beta, 1)`` per token, so the shift
  ``alpha * h`` is never longer than ``beta`` times the state it moves (``bounded_shift``).

The shift reaches the PLM through a forward pre-hook on the layer it enters
(``shift_layer_input``): the hook replaces that layer's input hidden states by what the
callable stored on the layer for the duration of one forward pass returns (``shifting``).
The hook is a module-level function and the callable is removed after the pass, so copies of a
model (``copy.deepcopy``) stay correct and a pass without a stored callable is the plain PLM.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

__all__ = [
    "gated_displacement",
    "bounded_shift",
    "shift_layer_input",
    "register_shift",
    "shifting",
]


def gated_displacement(
    z: torch.Tensor, sources: list[tuple[nn.Linear, nn.Linear, torch.Tensor]]
) -> torch.Tensor:
    """``sum_k ReLU(gate_k([x_k ; z])) * project_k(x_k)`` over ``(gate_k, project_k, x_k)``."""
    # z: (B, T, H); each x_k: (B, T, D_k)
    displacement = None
    for gate, project, features in sources:
        gated = torch.relu(gate(torch.cat([features, z], dim=-1))) * project(features)  # (B, T, H)
        displacement = gated if displacement is None else displacement + gated
    return displacement  # (B, T, H)


def bounded_shift(z: torch.Tensor, h: torch.Tensor, beta: float) -> torch.Tensor:
    """``alpha * h`` with ``alpha = min(||z|| / ||h|| * beta, 1)`` per token: (B, T, H)."""
    # z, h: (B, T, H)
    z_norm = z.norm(dim=-1)  # (B, T)
    h_norm = h.norm(dim=-1)
    h_norm = torch.where(h_norm == 0, torch.ones_like(h_norm), h_norm)
    alpha = torch.clamp(z_norm / (h_norm + 1e-6) * beta, max=1.0)  # (B, T)
    return alpha.unsqueeze(-1) * h


def shift_layer_input(layer: nn.Module, args: tuple, kwargs: dict):
    """Forward pre-hook (``with_kwargs=True``): the layer's input hidden states, passed through
    ``layer._shift_input`` when a pass stored one there (``shifting``)."""
    shift = getattr(layer, "_shift_input", None)
    if shift is None:
        return None
    if args:
        return (shift(args[0]),) + tuple(args[1:]), kwargs
    return args, {**kwargs, "hidden_states": shift(kwargs["hidden_states"])}


def register_shift(layer: nn.Module) -> None:
    """Let ``layer``'s input be shifted by ``shifting`` (registers ``shift_layer_input``)."""
    layer.register_forward_pre_hook(shift_layer_input, with_kwargs=True)


@contextlib.contextmanager
def shifting(
    shifts: dict[nn.Module, Callable[[torch.Tensor], torch.Tensor]],
) -> Iterator[None]:
    """For one forward pass: each layer of ``shifts`` (registered with ``register_shift``)
    receives ``shift(hidden_states)`` instead of its input hidden states (B, T, H)."""
    for layer, shift in shifts.items():
        layer._shift_input = shift
    try:
        yield
    finally:
        for layer in shifts:
            layer._shift_input = None
