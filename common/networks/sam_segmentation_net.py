"""Prompt-free 2D segmentation network on a SAM / SAM2 / LiteMedSAM backbone, usable by MONAI engines."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from common.backbones import DEFAULT_CHECKPOINT, build_backbone
from common.backbones.forward import ImageFeatures, decode_masks, encode_image, prompt_embeddings, prompt_free_embeddings

__all__ = ["SamSegmentationNet"]


class SamSegmentationNet(nn.Module):
    """Image in, mask logits out, at the input's resolution: the base of every method network.

    ``forward(image)`` takes ``B×C×H×W`` (C = 1 or 3, any H and W, intensities already scaled by the bundle, e.g.
    to 0-1) and returns logits ``B×K×H×W``. Inside: grey images are repeated to 3 channels, the backbone's pixel
    normalisation is applied, the image is resized to the backbone input (long side + zero padding for SAM and
    LiteMedSAM, a square stretch for SAM2, as each was trained), encoded, decoded without prompts, and the logits
    are mapped back to ``H×W``. MONAI's ``SimpleInferer``, ``SlidingWindowInferer`` and ``SliceInferer`` call it as
    any 2D network.

    Method networks extend it by overriding :meth:`decode` (heads, tokens, prompts) and adapting ``self.sam``.

    Args:
        backbone: a registry name (see ``common.backbones.BACKBONES``) or an already built backbone model that has
            a ``backbone_spec`` attribute.
        checkpoint: base weights (see :func:`common.backbones.build_backbone`); ``None`` = random weights.
        image_size: backbone input size (default: the backbone's native size).
        keep_aspect_ratio: resize along the long side and pad (default: as the backbone was trained).
        multimask_output: output SAM's three ambiguity masks (K = 3) instead of one (K = 1).
    """

    def __init__(
        self,
        backbone: str | nn.Module = "litemedsam",
        checkpoint: str | os.PathLike | None = DEFAULT_CHECKPOINT,
        image_size: int | None = None,
        keep_aspect_ratio: bool | None = None,
        multimask_output: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(backbone, str):
            backbone = build_backbone(backbone, checkpoint=checkpoint, image_size=image_size)
        elif not hasattr(backbone, "backbone_spec"):
            raise ValueError("a backbone module must come from common.backbones.build_backbone (no backbone_spec)")
        self.sam = backbone
        self.spec = backbone.backbone_spec
        self.input_size = self.spec.input_size
        self.keep_aspect_ratio = self.spec.keep_aspect_ratio if keep_aspect_ratio is None else keep_aspect_ratio
        self.multimask_output = multimask_output
        # non-persistent: they are facts of the backbone, not weights to save
        self.register_buffer("pixel_mean", torch.tensor(self.spec.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(self.spec.pixel_std).view(1, 3, 1, 1), persistent=False)

    @property
    def out_channels(self) -> int:
        """Number of output channels K."""
        return 3 if self.multimask_output else 1

    def _resized_shape(self, height: int, width: int) -> tuple[int, int]:
        if not self.keep_aspect_ratio:
            return self.input_size, self.input_size
        scale = self.input_size / max(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """``B×C×H×W`` → normalised ``B×3×S×S`` backbone input."""
        if image.ndim != 4:
            raise ValueError(f"expected a B×C×H×W image batch, got shape {tuple(image.shape)}")
        if image.shape[1] == 1:
            image = image.expand(-1, 3, -1, -1)
        elif image.shape[1] != 3:
            raise ValueError(f"expected 1 or 3 image channels, got {image.shape[1]} (shape {tuple(image.shape)})")
        image = (image.float() - self.pixel_mean) / self.pixel_std
        new_h, new_w = self._resized_shape(*image.shape[-2:])
        if (new_h, new_w) != tuple(image.shape[-2:]):
            image = F.interpolate(image, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
        # zero padding after normalisation = padding with the mean colour, as SAM does
        return F.pad(image, (0, self.input_size - new_w, 0, self.input_size - new_h))

    def postprocess(self, logits: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Low-resolution logits → ``B×K×H×W``: up-sample to the input size, drop padding, resize to H×W."""
        logits = F.interpolate(logits, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        new_h, new_w = self._resized_shape(height, width)
        logits = logits[..., :new_h, :new_w]
        return F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)

    def encode(self, image: torch.Tensor) -> ImageFeatures:
        """Run the (possibly adapted) image encoder on a preprocessed batch."""
        return encode_image(self.sam, image)

    def decode(self, features: ImageFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt-free decoding: low-resolution logits ``B×K×h×w`` and IoU predictions ``B×K``."""
        sparse, dense = prompt_free_embeddings(self.sam, features)
        return decode_masks(self.sam, features, sparse, dense, multimask_output=self.multimask_output)

    def to_input_coordinates(self, coords: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Map (x, y) pixel coordinates of an ``height×width`` image to backbone-input pixels; ``coords``: ``...×2``
        (points) or ``...×4`` (boxes as x0, y0, x1, y1)."""
        new_h, new_w = self._resized_shape(height, width)
        scale = coords.new_tensor([new_w / width, new_h / height]).repeat(coords.shape[-1] // 2)
        return coords.float() * scale

    def forward_with_prompts(
        self,
        image: torch.Tensor,
        boxes: torch.Tensor | None = None,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompted segmentation with one box and/or point set per image, in the image's own pixel coordinates.

        Args:
            image: ``B×C×H×W``.
            boxes: ``B×4`` (x0, y0, x1, y1), x along W.
            point_coords: ``B×N×2`` (x, y); point_labels: ``B×N`` (1 positive, 0 negative, -1 padding).

        Returns:
            mask logits ``B×K×H×W`` and IoU predictions ``B×K``.
        """
        height, width = image.shape[-2:]
        features = self.encode(self.preprocess(image))
        if boxes is not None:
            boxes = self.to_input_coordinates(boxes, height, width)
        if point_coords is not None:
            # SAM's prompt encoder expects pixel centres (it adds 0.5 itself)
            point_coords = self.to_input_coordinates(point_coords, height, width)
        sparse, dense = prompt_embeddings(self.sam, features, boxes, point_coords, point_labels)
        low_res, iou = decode_masks(self.sam, features, sparse, dense, multimask_output=self.multimask_output)
        return self.postprocess(low_res, height, width), iou

    def forward_with_iou(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask logits ``B×K×H×W`` and the decoder's IoU predictions ``B×K`` (for IoU-aware losses)."""
        height, width = image.shape[-2:]
        low_res, iou = self.decode(self.encode(self.preprocess(image)))
        return self.postprocess(low_res, height, width), iou

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Mask logits ``B×K×H×W`` for an image batch ``B×C×H×W``."""
        return self.forward_with_iou(image)[0]
