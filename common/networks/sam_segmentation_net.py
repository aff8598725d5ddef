"""Prompt-free 2D segmentation network on a SAM / SAM2 / LiteMedSAM backbone, usable by MONAI engines."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from common.backbones import DEFAULT_CHECKPOINT, build_backbone
from common.backbones.forward import ImageFeatures, decode_masks, encode_image, prompt_embeddings

__all__ = ["SamSegmentationNet", "class_head_output_rule"]


def class_head_output_rule(num_classes: int) -> str:
    """The output rule of a network with a class head (BALR-SAM, Conv-LoRA): ``"softmax"`` over its K+1 logits
    (channel 0 background) for K > 1 classes; one class is a single logit map, read as one sigmoid."""
    return "softmax" if num_classes > 1 else "sigmoid_argmax"


class SamSegmentationNet(nn.Module):
    """Image in, mask logits out, at the input's resolution: the base of every method network.

    ``forward(image)`` takes ``B×C×H×W`` (C = 1 or 3, any H and W, intensities already scaled by the bundle, e.g.
    to 0-1) and returns logits ``B×K×H×W``. Inside: grey images are repeated to 3 channels, the backbone's pixel
    normalisation is applied, the image is resized to the backbone input (long side + zero padding for SAM and
    LiteMedSAM, a square stretch for SAM2, as each was trained), encoded, decoded without prompts, and the logits
    are mapped back to ``H×W``. MONAI's ``SimpleInferer``, ``SlidingWindowInferer`` and ``SliceInferer`` call it as
    any 2D network.

    Optional box and point prompts (one set per image) are passed as keyword arguments, e.g. by
    ``monai.engines.PrepareBatchExtraInput``. Method networks extend the class by overriding :meth:`decode` (heads,
    tokens, skips) and adapting ``self.sam``.

    Args:
        backbone: a registry name (see ``common.backbones.BACKBONES``) or an already built backbone model that has
            a ``backbone_spec`` attribute.
        checkpoint: base weights (see :func:`common.backbones.build_backbone`); ``None`` = random weights.
        input_size: backbone input size (default: the backbone's native size).
        keep_aspect_ratio: resize along the long side and pad (default: as the backbone was trained).
        num_outputs: output channels K. K = 1 uses SAM's single-mask output token; K = 2 or 3 uses its multimask
            tokens 1..K, one per structure (e.g. optic disc and cup), as SAM-based multi-structure models do.

    Every network of the project says how its logits become a label map in ``output_rule`` (one of
    ``common.data.OUTPUT_RULES``, applied by ``common.data.LogitsToLabelsd``); inference configs read it from the
    network (``common.data.output_rule_of``) instead of restating it. Here: ``"sigmoid_argmax"``, one independent
    sigmoid per output channel; subclasses with a K+1 softmax head answer ``"softmax"``.
    """

    output_rule: str = "sigmoid_argmax"

    def __init__(
        self,
        backbone: str | nn.Module = "litemedsam",
        checkpoint: str | os.PathLike | None = DEFAULT_CHECKPOINT,
        input_size: int | None = None,
        keep_aspect_ratio: bool | None = None,
        num_outputs: int = 1,
    ) -> None:
        super().__init__()
        if isinstance(backbone, str):
            backbone = build_backbone(backbone, checkpoint=checkpoint, input_size=input_size)
        elif not hasattr(backbone, "backbone_spec"):
            raise ValueError("a backbone module must come from common.backbones.build_backbone (no backbone_spec)")
        self.sam = backbone
        self.spec = backbone.backbone_spec
        self.input_size = self.spec.input_size
        self.keep_aspect_ratio = self.spec.keep_aspect_ratio if keep_aspect_ratio is None else keep_aspect_ratio
        if not 1 <= num_outputs <= 3:
            # SAM's decoder has one single-mask token and three multimask tokens
            raise ValueError(f"num_outputs must be 1, 2 or 3, got {num_outputs}")
        self.num_outputs = num_outputs
        # non-persistent: they are facts of the backbone, not weights to save
        self.register_buffer("pixel_mean", torch.tensor(self.spec.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(self.spec.pixel_std).view(1, 3, 1, 1), persistent=False)
        self.last_iou_prediction: torch.Tensor | None = None

    def train(self, mode: bool = True) -> SamSegmentationNet:
        """Set train/eval mode, but keep frozen normalisation layers with running statistics in eval mode.

        A frozen backbone's BatchNorm statistics (LiteMedSAM's TinyViT has them) would otherwise drift with every
        training batch although no weight of theirs is trained; adapter checkpoints do not hold them, so the trained
        network and the one restored from its checkpoint would differ.
        """
        super().train(mode)
        if mode:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                    p.requires_grad for p in module.parameters(recurse=False)
                ):
                    module.eval()
        return self

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
        # float32 logits whatever precision the backbone ran in (autocast): losses and thresholds read them
        return F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False).float()

    def encode(self, image: torch.Tensor) -> ImageFeatures:
        """Run the (possibly adapted) image encoder on a preprocessed batch."""
        return encode_image(self.sam, image)

    def decode(
        self, features: ImageFeatures, sparse: torch.Tensor, dense: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-resolution logits ``B×K×h×w`` and IoU predictions ``B×K`` for given prompt embeddings (prompt-free:
        ``common.backbones.forward.prompt_free_embeddings``). Method networks override this."""
        masks, iou = decode_masks(self.sam, features, sparse, dense, multimask_output=self.num_outputs > 1)
        return masks[:, : self.num_outputs], iou[:, : self.num_outputs]

    def to_input_coordinates(self, coords: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Map (x, y) pixel coordinates of an ``height×width`` image to backbone-input pixels; ``coords``: ``...×2``
        (points) or ``...×4`` (boxes as x0, y0, x1, y1)."""
        new_h, new_w = self._resized_shape(height, width)
        scale = coords.new_tensor([new_w / width, new_h / height]).repeat(coords.shape[-1] // 2)
        return coords.float() * scale

    def forward_with_iou(
        self,
        image: torch.Tensor,
        boxes: torch.Tensor | None = None,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask logits ``B×K×H×W`` and the decoder's IoU predictions ``B×K``.

        Args:
            image: ``B×C×H×W``.
            boxes: optional ``B×4`` box prompts (x0, y0, x1, y1) in the image's pixel coordinates, x along W.
            point_coords: optional ``B×N×2`` point prompts (x, y); point_labels: ``B×N`` (1 positive, 0 negative,
                -1 padding). Without any prompt the network runs prompt-free.
        """
        height, width = image.shape[-2:]
        features = self.encode(self.preprocess(image))
        if boxes is not None:
            boxes = self.to_input_coordinates(boxes, height, width)
        if point_coords is not None:
            point_coords = self.to_input_coordinates(point_coords, height, width)
        sparse, dense = prompt_embeddings(self.sam, features, boxes, point_coords, point_labels)
        low_res, iou = self.decode(features, sparse, dense)
        return self.postprocess(low_res, height, width), iou

    def forward(
        self,
        image: torch.Tensor,
        boxes: torch.Tensor | None = None,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mask logits ``B×K×H×W`` (prompt-free unless prompts are given, see :meth:`forward_with_iou`).

        A ``B×C×H×W×1`` input, one slice of a volume (the patch that a volume bundle's ``network_data_format``
        declares, so that MONAI Label and the model zoo see a 3D model), gives ``B×K×H×W×1`` logits.

        The IoU predictions of this pass are kept in ``last_iou_prediction`` for IoU-aware losses, because MONAI's
        engines pass only the network output to the loss.
        """
        if image.ndim == 5 and image.shape[-1] == 1:
            return self.forward(image[..., 0], boxes, point_coords, point_labels).unsqueeze(-1)
        logits, iou = self.forward_with_iou(image, boxes, point_coords, point_labels)
        self.last_iou_prediction = iou.float()  # float32, as the logits, for IoU-aware losses
        return logits
