"""High-resolution encoder skips into the mask decoder's up-sampling path, for backbones that lack SAM2's.

SAM2 feeds its stride-4 and stride-8 FPN features, projected by 1×1 convolutions (``conv_s0``, ``conv_s1``), into
the two transposed convolutions that up-sample the decoder output. LiteMedSAM's TinyViT has the same kind of
multi-scale stage outputs but its SAM-style decoder never sees them. :class:`EncoderSkipFusion` taps two encoder
stages with forward hooks, projects them to the decoder's widths with zero-initialised 1×1 convolutions (so the
network starts exactly as the pretrained one) and :func:`common.backbones.forward.decode_with_skips` adds them where
SAM2 does.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

__all__ = ["SKIP_TAPS", "EncoderSkipFusion"]

# backbone name → ((module, channels, stride relative to the input), ...), finest first.
# LiteMedSAM (256² input): patch_embed keeps full resolution (64 ch); layers.0 ends at half resolution (128 ch).
SKIP_TAPS: dict[str, tuple[tuple[str, int, int], ...]] = {
    "litemedsam": (("image_encoder.patch_embed", 64, 1), ("image_encoder.layers.0", 128, 2)),
}


class EncoderSkipFusion(nn.Module):
    """Collect two encoder stage outputs during the encoder's forward and project them for the decoder.

    Args:
        sam: the backbone (hooks are registered on its modules).
        taps: ``((module name, channels, stride), (module name, channels, stride))``, finest first.
        decoder_dim: the mask decoder's transformer width C; the projections output C/8 (finest) and C/4.
        input_size: backbone input side, to lay token outputs (``B×L×C``) on their grid.
    """

    def __init__(self, sam: nn.Module, taps, decoder_dim: int, input_size: int) -> None:
        super().__init__()
        self.taps = tuple(taps)
        self.input_size = input_size
        self.proj_s0 = nn.Conv2d(self.taps[0][1], decoder_dim // 8, kernel_size=1)
        self.proj_s1 = nn.Conv2d(self.taps[1][1], decoder_dim // 4, kernel_size=1)
        for conv in (self.proj_s0, self.proj_s1):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
        self._captured: dict[int, torch.Tensor] = {}
        # A partial, not a closure: ``copy.deepcopy`` of the network (MONAI Label serves a copy) copies a partial's
        # arguments through the same memo as this module, so the copy's hooks fill the copy's dict. A closure is
        # copied as the same function and would keep writing into the original's.
        for i, (name, _, _) in enumerate(self.taps):
            sam.get_submodule(name).register_forward_hook(functools.partial(_store_output, self._captured, i))

    def _as_map(self, index: int) -> torch.Tensor:
        feature = self._captured.pop(index, None)
        if feature is None:
            raise RuntimeError("encoder skip features were not captured: run the image encoder first")
        if feature.ndim == 3:  # tokens B×L×C on a square grid of input_size / stride
            side = self.input_size // self.taps[index][2]
            feature = feature.transpose(1, 2).reshape(feature.shape[0], -1, side, side)
        return feature

    def forward(self) -> list[torch.Tensor]:
        """Projected skips ``[s0 (B×C/8×S/s0), s1 (B×C/4×S/s1)]`` from the last encoder pass."""
        return [self.proj_s0(self._as_map(0)), self.proj_s1(self._as_map(1))]


def _store_output(captured: dict[int, torch.Tensor], index: int, _module, _inputs, output: torch.Tensor) -> None:
    captured[index] = output
