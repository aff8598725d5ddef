"""Classic focal Tversky loss (Abraham & Khan, 2019): ``(1 − TI)^γ``."""

from __future__ import annotations

import torch
from monai.losses import TverskyLoss
from monai.utils import LossReduction
from torch import nn

__all__ = ["FocalTverskyLoss"]


class FocalTverskyLoss(nn.Module):
    """``(1 − TI)^γ`` with ``TI = (TP + s) / (TP + α_fn·FN + β_fp·FP + s)`` on soft predictions.

    MONAI has the Tversky index (``monai.losses.TverskyLoss``) but no classic focal variant; its
    ``AsymmetricFocalTverskyLoss`` is binary-only, takes probabilities and applies the exponent to the foreground
    only. This wraps ``TverskyLoss(reduction="none")`` and raises each (sample, channel) loss to ``γ``.

    Note the argument names: ``fn_weight`` weights false negatives and ``fp_weight`` false positives (MONAI's
    ``alpha`` weights false positives, ``beta`` false negatives).

    Args:
        fn_weight: weight of false negatives (SAM2LoRA: 0.7).
        fp_weight: weight of false positives (SAM2LoRA: 0.3).
        gamma: focal exponent (SAM2LoRA: 0.75).
        smooth: added to numerator and denominator.
        sigmoid: apply a sigmoid to the input (logits in, the default).
        batch: sum TP/FP/FN over the batch before the ratio (one index per channel) instead of per sample.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``B×K`` or ``K`` values).

    Shapes:
        input, target: ``B×K×H×W`` (or any spatial rank); target in {0, 1} (or soft labels in [0, 1]).
    """

    def __init__(
        self,
        fn_weight: float = 0.7,
        fp_weight: float = 0.3,
        gamma: float = 0.75,
        smooth: float = 1.0,
        sigmoid: bool = True,
        batch: bool = False,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.gamma = gamma
        self.reduction = LossReduction(reduction)
        self.tversky = TverskyLoss(
            sigmoid=sigmoid,
            alpha=fp_weight,
            beta=fn_weight,
            smooth_nr=smooth,
            smooth_dr=smooth,
            batch=batch,
            reduction="none",
        )

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        one_minus_ti = self.tversky(input, target).flatten(start_dim=0 if self.tversky.batch else 1)
        if not self.tversky.batch:
            one_minus_ti = one_minus_ti.reshape(input.shape[0], input.shape[1])
        # (1 - TI)^γ with γ < 1 has an infinite slope at 0; the clamp keeps gradients finite on perfect predictions
        loss = one_minus_ti.clamp_min(1e-6).pow(self.gamma)
        if self.reduction == LossReduction.MEAN:
            return loss.mean()
        if self.reduction == LossReduction.SUM:
            return loss.sum()
        return loss
