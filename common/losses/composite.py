"""Composite segmentation loss: BCE + soft Dice + focal Tversky, optionally + IoU-prediction L1."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

from .focal_tversky import FocalTverskyLoss

__all__ = ["CompositeSegmentationLoss", "soft_iou"]


def soft_iou(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """IoU of the thresholded prediction with the target, per sample and channel (``B×K``), as the IoU head's
    regression target. Empty prediction and empty target give IoU 1."""
    pred = (logits > threshold).float()
    dims = tuple(range(2, logits.ndim))
    inter = (pred * target).sum(dims)
    union = pred.sum(dims) + target.sum(dims) - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-6), torch.ones_like(union))


class CompositeSegmentationLoss(nn.Module):
    """``w_bce·BCE + w_dice·SoftDice + w_ft·FocalTversky [+ w_iou·L1(IoU_pred, IoU)]`` on logits.

    Binary (K = 1) and multi-label (K > 1, independent sigmoids) outputs. Defaults are SAM2LoRA's: weights 1:1:1,
    Tversky false-negative weight 0.7, false-positive weight 0.3, focal exponent 0.75, Dice and Tversky smoothed
    by 1 and computed over the whole batch; the IoU term (0.1) is used when IoU predictions are passed.

    Args:
        bce_weight, dice_weight, focal_tversky_weight: term weights.
        tversky_fn_weight, tversky_fp_weight, focal_gamma: focal Tversky parameters.
        smooth: smoothing of Dice and Tversky.
        batch: compute Dice and Tversky over the batch (SAM2LoRA) instead of per sample.
        iou_weight: weight of the L1 between predicted and measured IoU.
        iou_source: optional network whose ``last_iou_prediction`` (set by its forward) supplies the IoU
            predictions when none are passed, because MONAI's engines call ``loss(pred, target)`` only. A
            ``DistributedDataParallel`` wrapper is looked through.

    Shapes:
        input (logits), target: ``B×K×H×W``; iou_prediction: ``B×K`` (optional).
    """

    def __init__(
        self,
        bce_weight: float = 1.0,
        dice_weight: float = 1.0,
        focal_tversky_weight: float = 1.0,
        tversky_fn_weight: float = 0.7,
        tversky_fp_weight: float = 0.3,
        focal_gamma: float = 0.75,
        smooth: float = 1.0,
        batch: bool = True,
        iou_weight: float = 0.1,
        iou_source: nn.Module | None = None,
    ) -> None:
        super().__init__()
        # kept outside the module registry: the loss must not own (save, move, count) the network's parameters
        object.__setattr__(self, "_iou_source", iou_source)
        self.bce_weight = bce_weight
        self.dice_weight = dice_weight
        self.focal_tversky_weight = focal_tversky_weight
        self.iou_weight = iou_weight
        self.dice = DiceLoss(sigmoid=True, smooth_nr=smooth, smooth_dr=smooth, batch=batch)
        self.focal_tversky = FocalTverskyLoss(
            fn_weight=tversky_fn_weight, fp_weight=tversky_fp_weight, gamma=focal_gamma, smooth=smooth, batch=batch
        )

    def forward(
        self, input: torch.Tensor, target: torch.Tensor, iou_prediction: torch.Tensor | None = None
    ) -> torch.Tensor:
        if input.shape != target.shape:
            raise ValueError(f"logits {tuple(input.shape)} and target {tuple(target.shape)} must have the same shape")
        target = target.to(input.dtype)
        loss = self.bce_weight * F.binary_cross_entropy_with_logits(input, target)
        loss = loss + self.dice_weight * self.dice(input, target)
        loss = loss + self.focal_tversky_weight * self.focal_tversky(input, target)
        if iou_prediction is None and self._iou_source is not None:
            iou_prediction = getattr(self._iou_source, "module", self._iou_source).last_iou_prediction
        if iou_prediction is not None and self.iou_weight:
            measured = soft_iou(input.detach(), target)
            loss = loss + self.iou_weight * F.l1_loss(iou_prediction.to(input.dtype), measured)
        return loss
