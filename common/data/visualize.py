"""Overlay pictures of masks on images (RGB uint8 arrays, ready for PNG)."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_erosion

__all__ = ["CHANNEL_COLOURS", "overlay_masks"]

#: colour of mask channel i (green, blue, orange, magenta, ...)
CHANNEL_COLOURS = [(40, 200, 40), (40, 120, 230), (240, 150, 30), (220, 60, 200), (230, 220, 40)]


def _to_rgb(image: np.ndarray) -> np.ndarray:
    """``C×H×W`` or ``H×W`` image with intensities 0-1 → ``H×W×3`` float in 0-255."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:
        image = image[0] if image.shape[0] == 1 else np.moveaxis(image[:3], 0, -1)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return np.clip(image, 0, 1) * 255


def overlay_masks(
    image: np.ndarray, masks: np.ndarray, outline: np.ndarray | None = None, alpha: float = 0.45
) -> np.ndarray:
    """Blend each mask channel in its colour over the image and draw its border solid.

    Args:
        image: ``C×H×W`` (C = 1 or 3) or ``H×W``, intensities 0-1.
        masks: ``K×H×W`` or ``H×W`` binary masks.
        outline: optional ``K×H×W``/``H×W`` reference masks (e.g. ground truth) drawn as white borders.
        alpha: opacity of the mask colour.

    Returns:
        ``H×W×3`` uint8 picture.
    """
    rgb = _to_rgb(image)
    masks = np.asarray(masks) > 0
    masks = masks[None] if masks.ndim == 2 else masks
    for index, mask in enumerate(masks):
        colour = np.array(CHANNEL_COLOURS[index % len(CHANNEL_COLOURS)], dtype=np.float32)
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * colour
        rgb[mask & ~binary_erosion(mask)] = colour
    if outline is not None:
        outline = np.asarray(outline) > 0
        for mask in outline[None] if outline.ndim == 2 else outline:
            rgb[mask & ~binary_erosion(mask)] = 255
    return rgb.astype(np.uint8)
