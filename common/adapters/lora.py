"""LoRA layer for ``nn.Linear``."""

from __future__ import annotations

import math

import torch
from torch import nn

from .layer import AdapterLayer

__all__ = ["LoraLinear"]


class LoraLinear(AdapterLayer):
    """``y = W₀x + b + (alpha/rank) · B(A(dropout(x)))`` with W₀, b frozen.

    ``lora_A`` (``rank×in``) starts random (Kaiming-uniform, as nn.Linear) and ``lora_B`` (``out×rank``) at zero,
    so the layer reproduces the base layer exactly before training. Both are created directly on the base
    weight's device and dtype as registered parameters: they appear in ``named_parameters()`` and the state dict
    and move with ``.to()``. (Wrapping ``nn.Parameter(...).to(device)`` instead returns an unregistered copy
    whenever the device changes: the defect of the SAM2LoRA reference code.)

    Args:
        base_layer: the frozen ``nn.Linear``.
        rank: bottleneck width r (>= 1).
        alpha: the update is scaled by ``alpha / rank``.
        dropout: dropout probability on the adapter branch input.
    """

    def __init__(self, base_layer: nn.Linear, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0) -> None:
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"LoraLinear wraps nn.Linear, got {type(base_layer).__name__}")
        super().__init__(base_layer)
        factory = dict(device=self.weight.device, dtype=self.weight.dtype)
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def delta_weight(self) -> torch.Tensor:
        """``(alpha/rank)·B·A``, the update to W₀ (``out×in``)."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def merged_weight(self) -> torch.Tensor:
        return self.weight + self.delta_weight().to(self.weight.dtype)

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        update = self.lora_dropout(x) @ self.lora_A.t()
        return self.base_forward(x) + (update @ self.lora_B.t()) * self.scaling

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, alpha={self.alpha}"
