"""Run any dense 2D network at one fixed square input size, as the SAM networks do, so that a baseline (e.g. MONAI's
``UNet``) can be trained and served through exactly the same data pipeline and inferers as the method networks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ResizedInputNet"]


class ResizedInputNet(nn.Module):
    """Resize the long side of the input to ``input_size``, zero-pad to a square, run ``network``, drop the padding
    and resize the logits back to the input's ``H×W``.

    The bundles' networks resize internally (``SamSegmentationNet``), and their inference feeds whole slices or
    pictures of any size; a plain convolutional network wrapped in this sees the same scale in training and
    inference, and its input always fits its down-sampling (``input_size`` a multiple of ``2^levels``).

    Args:
        network: a 2D network taking ``B×C×S×S`` and returning ``B×K×S×S``.
        input_size: S.
        output_rule: how its logits become labels (``common.data.OUTPUT_RULES``), as every network here declares.

    Input ``B×C×H×W``, output ``B×K×H×W``.
    """

    def __init__(self, network: nn.Module, input_size: int, output_rule: str = "sigmoid_argmax") -> None:
        super().__init__()
        if input_size < 1:
            raise ValueError(f"input_size must be positive, got {input_size}")
        self.output_rule = output_rule
        self.network = network
        self.input_size = int(input_size)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.ndim != 4:
            raise ValueError(f"expected a B×C×H×W image batch, got shape {tuple(image.shape)}")
        height, width = image.shape[-2:]
        scale = self.input_size / max(height, width)
        new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
        if (new_h, new_w) != (height, width):
            image = F.interpolate(image.float(), size=(new_h, new_w), mode="bilinear", antialias=True)
        image = F.pad(image, (0, self.input_size - new_w, 0, self.input_size - new_h))
        logits = self.network(image)[..., :new_h, :new_w]
        if (new_h, new_w) != (height, width):
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        return logits
