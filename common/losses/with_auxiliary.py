"""Adding a network's auxiliary losses (e.g. Conv-LoRA's expert balance) to the segmentation loss."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["WithAuxiliaryLoss"]


class WithAuxiliaryLoss(nn.Module):
    """``loss(input, target) + network.auxiliary_loss()``.

    MONAI's trainer calls ``loss_function(pred, label)``; the auxiliary terms that the network's layers recorded in
    that same forward (``auxiliary_loss()``, e.g. the summed Conv-LoRA balance losses) are added here, in the open,
    instead of through globals. ``DistributedDataParallel`` is looked through.
    """

    def __init__(self, loss: nn.Module, network: nn.Module) -> None:
        super().__init__()
        self.loss = loss
        object.__setattr__(self, "_network", network)  # not registered: the loss must not own the network

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        network = getattr(self._network, "module", self._network)
        return self.loss(input, target) + network.auxiliary_loss().to(input.device)
