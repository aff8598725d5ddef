"""Base class of every adapter layer."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AdapterLayer"]


class AdapterLayer(nn.Module, ABC):
    """Wraps a frozen ``nn.Linear`` or ``nn.Conv2d`` and adds trainable adapter parameters.

    The layer takes over the base layer's ``weight`` and ``bias`` *as its own attributes* (the same Parameter
    objects), so that state-dict keys of the base model stay exactly what the released checkpoint uses
    (``...attn.qkv.weight``) and adapter keys sit beside them (``...attn.qkv.lora_A``): no wrapper prefixes, and a
    base checkpoint still loads after injection.

    Subclasses implement :meth:`adapter_forward` (the added output, or the whole output for re-parameterising
    adapters) and :meth:`merged_weight`.
    """

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__()
        if not isinstance(base_layer, (nn.Linear, nn.Conv2d)):
            raise TypeError(f"adapters wrap nn.Linear or nn.Conv2d, got {type(base_layer).__name__}")
        self.base_type = type(base_layer)
        self.weight = base_layer.weight
        self.bias = base_layer.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        if isinstance(base_layer, nn.Linear):
            self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
            self._conv_args: dict | None = None
        else:
            self.in_features, self.out_features = base_layer.in_channels, base_layer.out_channels
            self._conv_args = dict(
                stride=base_layer.stride,
                padding=base_layer.padding,
                dilation=base_layer.dilation,
                groups=base_layer.groups,
            )
            if base_layer.padding_mode != "zeros":
                raise ValueError("adapters support zero-padded convolutions only")
        self.merged = False

    @property
    def token_wise(self) -> bool:
        """Whether the layer maps every token on its own (an adapter on a linear layer), so that a caller may run it
        on any subset of tokens in any layout (``common.backbones.padded_window_attention`` relies on it). Adapters
        that mix neighbouring tokens on their grid (Conv-LoRA) answer False."""
        return self._conv_args is None

    def base_forward(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The base layer's operation with ``weight`` (default: the stored, possibly merged, weight)."""
        weight = self.weight if weight is None else weight
        if self._conv_args is None:
            return F.linear(x, weight, self.bias)
        return F.conv2d(x, weight, self.bias, **self._conv_args)

    @abstractmethod
    def merged_weight(self) -> torch.Tensor:
        """The base weight with the adapter folded in (same shape and dtype as ``weight``), unmerged state."""

    @abstractmethod
    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The layer output with the adapter active and not merged."""

    def auxiliary_loss(self) -> torch.Tensor | None:
        """A loss term this layer recorded or defines (Conv-LoRA's balance loss, SVD's regulariser), or None.
        ``common.adapters.auxiliary_loss(model)`` sums them for the training loss."""
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base_forward(x)
        return self.adapter_forward(x)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the adapter into ``weight`` for deployment (exact up to float rounding); keeps the original."""
        if self.merged:
            return
        merged = self.merged_weight()
        self.register_buffer("_unmerged_weight", self.weight.detach().clone(), persistent=False)
        self.weight.copy_(merged)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Restore the original base weight after :meth:`merge` (bit-exact: the original was kept)."""
        if not self.merged:
            return
        self.weight.copy_(self._unmerged_weight)
        del self._unmerged_weight
        self.merged = False

    def to_base_layer(self) -> nn.Module:
        """A plain ``nn.Linear``/``nn.Conv2d`` holding the merged weight (no adapter code needed to run it)."""
        weight = self.weight.detach().clone() if self.merged else self.merged_weight().detach().clone()
        if self._conv_args is None:
            layer = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        else:
            layer = nn.Conv2d(
                self.in_features,
                self.out_features,
                kernel_size=tuple(weight.shape[-2:]),
                bias=self.bias is not None,
                **self._conv_args,
            )
        layer = layer.to(device=weight.device, dtype=weight.dtype)
        layer.weight = nn.Parameter(weight, requires_grad=False)
        if self.bias is not None:
            layer.bias = nn.Parameter(self.bias.detach().clone(), requires_grad=False)
        return layer

    def extra_repr(self) -> str:
        return f"base={self.base_type.__name__}({self.in_features}, {self.out_features}), merged={self.merged}"
