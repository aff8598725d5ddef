"""PraNet's structure loss: boundary-weighted BCE + weighted IoU (the Conv-LoRA paper's binary loss)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["StructureLoss"]


class StructureLoss(nn.Module):
    """``wBCE + wIoU`` with pixel weights ``w = 1 + boundary_weight · |avgpool_k(g) − g|`` (Fan et al., PraNet 2020).

    The weight is large near boundaries (where the local average of the target differs from the target), so thin
    and edge pixels count more.

    Args:
        kernel_size: averaging window k (PraNet: 31, at 352² inputs).
        boundary_weight: weight of the boundary term (PraNet: 5).

    Shapes:
        input (logits), target: ``B×K×H×W``.
    """

    def __init__(self, kernel_size: int = 31, boundary_weight: float = 5.0) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.kernel_size = kernel_size
        self.boundary_weight = boundary_weight

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if input.shape != target.shape:
            raise ValueError(f"logits {tuple(input.shape)} and target {tuple(target.shape)} must have the same shape")
        target = target.to(input.dtype)
        local = F.avg_pool2d(target, self.kernel_size, stride=1, padding=self.kernel_size // 2)
        weight = 1 + self.boundary_weight * (local - target).abs()
        bce = F.binary_cross_entropy_with_logits(input, target, reduction="none")
        wbce = (weight * bce).sum(dim=(2, 3)) / weight.sum(dim=(2, 3))
        prob = torch.sigmoid(input)
        inter = (prob * target * weight).sum(dim=(2, 3))
        union = ((prob + target) * weight).sum(dim=(2, 3))
        wiou = 1 - (inter + 1) / (union - inter + 1)
        return (wbce + wiou).mean()
