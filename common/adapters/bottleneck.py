"""Sequential bottleneck adapter (Houlsby et al., 2019) on a linear layer's output: BALR-SAM's block adapters."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layer import AdapterLayer

__all__ = ["BottleneckAdapterLinear"]


class BottleneckAdapterLinear(AdapterLayer):
    """``y = W₀x + b``, then ``y + s · Up(GELU(Down(y)))`` with W₀, b frozen.

    Wrapping a block's attention output projection puts the adapter after multi-head self-attention; wrapping the
    MLP's last linear puts it on the MLP residual branch (both before the residual addition). ``Down``
    (``rank×out``) starts Kaiming-uniform as ``nn.Linear``, ``Up`` (``out×rank``) at zero and the scale ``s`` at 1,
    so the layer reproduces the base layer exactly before training; the learnable ``s`` lets each position
    turn its adapter up or down. The GELU makes the adapter non-linear: it cannot be merged into W₀.

    Args:
        base_layer: the frozen ``nn.Linear``.
        rank: bottleneck width r (>= 1).
        dropout: dropout on the adapter branch input.
    """

    def __init__(self, base_layer: nn.Linear, rank: int = 32, dropout: float = 0.0) -> None:
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"BottleneckAdapterLinear wraps nn.Linear, got {type(base_layer).__name__}")
        super().__init__(base_layer)
        if rank < 1:
            raise ValueError(f"bottleneck rank must be >= 1, got {rank}")
        factory = dict(device=self.weight.device, dtype=self.weight.dtype)
        self.rank = rank
        self.adapter_down = nn.Parameter(torch.empty(rank, self.out_features, **factory))
        self.adapter_down_bias = nn.Parameter(torch.zeros(rank, **factory))
        self.adapter_up = nn.Parameter(torch.zeros(self.out_features, rank, **factory))
        self.adapter_up_bias = nn.Parameter(torch.zeros(self.out_features, **factory))
        self.adapter_scale = nn.Parameter(torch.ones((), **factory))
        nn.init.kaiming_uniform_(self.adapter_down, a=math.sqrt(5))
        self.adapter_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def merged_weight(self) -> torch.Tensor:
        raise NotImplementedError(
            "a bottleneck adapter cannot be merged: its GELU makes it non-linear. Keep the layer for deployment."
        )

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_forward(x)
        hidden = F.gelu(F.linear(self.adapter_dropout(y), self.adapter_down, self.adapter_down_bias))
        return y + self.adapter_scale * F.linear(hidden, self.adapter_up, self.adapter_up_bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}"
