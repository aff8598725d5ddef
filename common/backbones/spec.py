"""What downstream code needs to know about a backbone without hard-coding it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BackboneSpec", "IMAGENET_MEAN", "IMAGENET_STD"]

# SAM's pixel statistics (123.675, 116.28, 103.53) / (58.395, 57.12, 57.375) on a 0-255 scale are the ImageNet
# statistics; SAM2 uses the same values on a 0-1 scale.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    """Static facts about one backbone name.

    Attributes:
        name: registry name, e.g. ``"sam_vit_b"``.
        family: ``"sam"`` (segment_anything-style ``image_encoder``/``prompt_encoder``/``mask_decoder``, including
            LiteMedSAM) or ``"sam2"`` (``sam2.modeling.sam2_base.SAM2Base``).
        input_size: native square input side in pixels (1024 for SAM/SAM2.1, 256 for LiteMedSAM).
        pixel_mean: per-channel mean on a 0-1 intensity scale, subtracted before the encoder.
        pixel_std: per-channel standard deviation on a 0-1 intensity scale.
        keep_aspect_ratio: the model was trained on images resized along the long side and padded (SAM,
            LiteMedSAM) rather than stretched to a square (SAM2).
        resizable: the architecture can be built for another input size (SAM ViT, SAM2 and LiteMedSAM can).
        test_variant: a tiny random-weight build of the real classes, for tests on CPU.
        description: one line for listings.
    """

    name: str
    family: str
    input_size: int
    pixel_mean: tuple[float, float, float]
    pixel_std: tuple[float, float, float]
    keep_aspect_ratio: bool
    resizable: bool
    test_variant: bool
    description: str
