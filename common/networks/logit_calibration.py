"""A per-class logit offset for sigmoid heads built on SAM's decoder, set from the first training batch.

SAM-family decoders asked for something they were never prompted with (a text token, a new query) answer "nothing
here" with logits near −22 everywhere (LiteMedSAM on MSD hippocampus slices: −27 … −18, the same on and off the
structure). A sigmoid is flat there (slope ≈ 3·10⁻¹⁰), so Dice and focal losses barely move the network, and short
runs stay on an all-background plateau. :class:`LogitCalibration` adds one learnable offset per class, chosen on the
first training batch so that the batch's mean logit of each class is ``logit(prior)``: the data-dependent
initialisation of Glow's ActNorm, aimed at the prior probability of RetinaNet's focal-loss bias initialisation. The
decoder itself is untouched; from there on the offset trains like any other parameter.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["LogitCalibration"]


class LogitCalibration(nn.Module):
    """``logits + offset[k]`` per class channel; the offset is set once, on the first forward in training mode.

    Args:
        num_classes: K, the logit channels.
        prior: foreground probability the mean logit starts at (RetinaNet: 0.01). Small, so that the many background
            pixels start with a small loss while the sigmoid's slope at the start is ≈ ``prior`` instead of ≈ 0.

    The ``calibrated`` flag is a persistent buffer: a checkpoint restores it with the offset, so a trained network
    is never re-calibrated, and a network that is only ever evaluated keeps offset 0 (the decoder's own logits).
    """

    def __init__(self, num_classes: int, prior: float = 0.01) -> None:
        super().__init__()
        if not 0.0 < prior < 1.0:
            raise ValueError(f"prior must be a probability strictly between 0 and 1, got {prior!r}")
        self.prior = prior
        self.offset = nn.Parameter(torch.zeros(num_classes))
        self.register_buffer("calibrated", torch.tensor(False))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """``B×K×H×W`` logits shifted per class."""
        if self.training and not bool(self.calibrated):
            self._calibrate(logits)
        return logits + self.offset.to(logits.dtype).view(1, -1, *([1] * (logits.ndim - 2)))

    @torch.no_grad()
    def _calibrate(self, logits: torch.Tensor) -> None:
        dims = [d for d in range(logits.ndim) if d != 1]
        mean = logits.detach().float().mean(dim=dims)
        if dist.is_available() and dist.is_initialized():  # every rank starts from the same offset
            dist.all_reduce(mean)
            mean /= dist.get_world_size()
        self.offset.copy_(math.log(self.prior / (1.0 - self.prior)) - mean)
        self.calibrated.fill_(True)

    def extra_repr(self) -> str:
        return f"num_classes={self.offset.numel()}, prior={self.prior}"
