"""Complementary Detail Enhancement Network (CDEN): BALR-SAM's light convolutional branch beside the frozen encoder.

The layer design is ours (the paper gives only "depthwise-separable convolutions with multi-scale fusion"): a small
convolutional pyramid on the normalised input image whose three levels line up with the SAM decoder's three grids:
the image-embedding grid and the grids after the decoder's first and second transposed convolution. The levels are
fused into one boundary-sensitive map that is *added* to the image embedding, and the two finer levels also join
the decoder's up-sampling path (as SAM2's ``conv_s0``/``conv_s1`` skips do). Every output layer starts at zero, so a
network with a fresh CDEN computes exactly what the backbone alone computes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DepthwiseSeparableBlock", "DetailEnhancementNet", "DetailFeatures"]


def _norm(channels: int) -> nn.GroupNorm:
    # GroupNorm, not BatchNorm: training batches here are a few slices, too few for stable batch statistics
    return nn.GroupNorm(min(8, channels), channels)


class DepthwiseSeparableBlock(nn.Sequential):
    """Depthwise 3×3 convolution (optionally strided) → norm → GELU → pointwise 1×1 → norm → GELU.

    ``B×C_in×H×W`` → ``B×C_out×H/s×W/s``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, in_channels, 3, stride=stride, padding=1, groups=in_channels, bias=False),
            _norm(in_channels),
            nn.GELU(),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            _norm(out_channels),
            nn.GELU(),
        )


@dataclass
class DetailFeatures:
    """CDEN outputs for a batch.

    Attributes:
        embedding: ``B×C×h×w``, added to the image embedding.
        skips: ``[B×C/8×4h×4w, B×C/4×2h×2w]``, added after the decoder's second and first transposed convolution.
    """

    embedding: torch.Tensor
    skips: list[torch.Tensor]


class DetailEnhancementNet(nn.Module):
    """CDEN: a three-level depthwise-separable pyramid fused into the encoder's embedding.

    For an encoder with embedding stride s (16 for SAM ViT and SAM2 at 1024, 4 for LiteMedSAM's 64×64 embedding of a
    256 image) the levels have strides s/4, s/2 and s, the decoder's grids. Stem: 3×3 convolution 3 → 32 (stride 2
    when s = 16); then three depthwise-separable blocks giving 64, 128 and 256 channels. Fusion: the two finer levels
    are average-pooled to the coarsest grid, concatenated with it (448 channels) and mixed by a 1×1 convolution to
    the embedding width C; two 1×1 convolutions project the finer levels to C/8 and C/4 for the decoder skips. The
    three output convolutions are zero-initialised.

    Args:
        embedding_dim: C, the image-embedding (= decoder) width.
        embedding_stride: input size / embedding size: 4, 8 or 16.
        widths: channels of the stem and the three levels.

    Shapes:
        input ``B×3×S×S`` (the normalised backbone input); output :class:`DetailFeatures` for ``h = S / s``.
    """

    def __init__(
        self,
        embedding_dim: int = 256,
        embedding_stride: int = 16,
        widths: tuple[int, int, int, int] = (32, 64, 128, 256),
    ) -> None:
        super().__init__()
        if embedding_stride not in (4, 8, 16):
            raise ValueError(f"CDEN supports embedding strides 4, 8 and 16, got {embedding_stride}")
        if embedding_dim % 8:
            raise ValueError(f"embedding_dim must be a multiple of 8, got {embedding_dim}")
        stem_width, fine, mid, coarse = widths
        # strides of (stem, level 1) multiply to s/4, the finest level's stride; levels 2 and 3 halve once each
        stem_stride, first_stride = {4: (1, 1), 8: (1, 2), 16: (2, 2)}[embedding_stride]
        self.embedding_stride = embedding_stride
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem_width, 3, stride=stem_stride, padding=1, bias=False), _norm(stem_width), nn.GELU()
        )
        self.level1 = DepthwiseSeparableBlock(stem_width, fine, stride=first_stride)
        self.level2 = DepthwiseSeparableBlock(fine, mid, stride=2)
        self.level3 = DepthwiseSeparableBlock(mid, coarse, stride=2)
        self.fuse = nn.Conv2d(fine + mid + coarse, embedding_dim, 1)
        self.skip_fine = nn.Conv2d(fine, embedding_dim // 8, 1)
        self.skip_mid = nn.Conv2d(mid, embedding_dim // 4, 1)
        for conv in (self.fuse, self.skip_fine, self.skip_mid):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, image: torch.Tensor) -> DetailFeatures:
        if image.ndim != 4 or image.shape[-1] % self.embedding_stride or image.shape[-2] % self.embedding_stride:
            raise ValueError(
                f"CDEN expects B×3×S×S with S a multiple of {self.embedding_stride}, got {tuple(image.shape)}"
            )
        f1 = self.level1(self.stem(image))
        f2 = self.level2(f1)
        f3 = self.level3(f2)
        grid = f3.shape[-2:]
        pyramid = torch.cat([F.adaptive_avg_pool2d(f1, grid), F.adaptive_avg_pool2d(f2, grid), f3], dim=1)
        return DetailFeatures(embedding=self.fuse(pyramid), skips=[self.skip_fine(f1), self.skip_mid(f2)])

    @staticmethod
    def stride_for(input_size: int, embedding_size: int) -> int:
        """The embedding stride of an encoder that maps ``input_size`` to ``embedding_size``."""
        stride = input_size // embedding_size
        if stride * embedding_size != input_size or not math.log2(stride).is_integer():
            raise ValueError(f"input {input_size} and embedding {embedding_size} give no power-of-two stride")
        return stride
