"""A region loss plus a boundary loss whose weight ramps up linearly (BALR-SAM's boundary-aware objective, ours)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["WithBoundaryLoss"]


class WithBoundaryLoss(nn.Module):
    """``loss(input, target) + λ · boundary_loss(input, target)`` with λ rising linearly from 0 to ``max_weight``
    over the first ``ramp_iterations`` training calls, then constant.

    Boundary (distance-map) losses are unstable while the predicted regions are still far from the target, so the
    region loss leads at first (Kervadec et al., 2019 ramp their weight the same way). Calls made while the module
    is in eval mode do not advance the ramp, and the step count is a buffer, so a resumed run continues the ramp.
    With ``max_weight = 0`` the boundary loss is never evaluated (the ablation without it).

    Args:
        loss: the region loss, e.g. MONAI ``DiceCELoss``.
        boundary_loss: e.g. MONAI ``BoundaryLoss`` with the same activation settings as ``loss``.
        max_weight: λ after the ramp.
        ramp_iterations: training calls to reach ``max_weight`` (0: from the first call).

    Shapes:
        input: logits ``B×N×H×W[×D]``; target: as ``loss`` and ``boundary_loss`` expect.
    """

    def __init__(self, loss: nn.Module, boundary_loss: nn.Module, max_weight: float = 0.3, ramp_iterations: int = 0):
        super().__init__()
        if max_weight < 0 or ramp_iterations < 0:
            raise ValueError(f"max_weight and ramp_iterations must be >= 0, got {max_weight}, {ramp_iterations}")
        self.loss = loss
        self.boundary_loss = boundary_loss
        self.max_weight = float(max_weight)
        self.ramp_iterations = int(ramp_iterations)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @property
    def boundary_weight(self) -> float:
        """λ for the next training call."""
        if self.ramp_iterations == 0:
            return self.max_weight
        return self.max_weight * min(1.0, int(self.step) / self.ramp_iterations)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        value = self.loss(input, target)
        weight = self.boundary_weight
        if self.training:
            self.step += 1
        if weight == 0:
            return value
        return value + weight * self.boundary_loss(input, target)
