"""Interactive 3D segmentation with a promptable 2D network: prompts on one slice, masks carried to the neighbours.

The annotator clicks (points) or draws a box on one slice; the network segments that slice; the bounding box of each
slice's mask, slightly enlarged, prompts the next slice, in both directions, until the structure ends. (MONAI Label's
built-in SAM2 task propagates forward only.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = ["mask_box", "propagate_from_prompts"]


def mask_box(mask: torch.Tensor, margin: float = 0.1) -> torch.Tensor | None:
    """``x0, y0, x1, y1`` (x along W) of an ``H×W`` mask, enlarged by ``margin`` of its size each side (at least one
    pixel), clipped to the slice; None for an empty mask."""
    rows = torch.nonzero(mask.any(dim=1)).flatten()
    cols = torch.nonzero(mask.any(dim=0)).flatten()
    if len(rows) == 0:
        return None
    y0, y1, x0, x1 = (float(v) for v in (rows[0], rows[-1], cols[0], cols[-1]))
    pad_y, pad_x = max(1.0, margin * (y1 - y0 + 1)), max(1.0, margin * (x1 - x0 + 1))
    height, width = mask.shape
    return torch.tensor(
        [max(0.0, x0 - pad_x), max(0.0, y0 - pad_y), min(width - 1.0, x1 + pad_x), min(height - 1.0, y1 + pad_y)]
    )


def propagate_from_prompts(
    network: Callable[..., torch.Tensor],
    volume: torch.Tensor,
    slice_index: int,
    point_coords: Sequence[Sequence[float]] | None = None,
    point_labels: Sequence[int] | None = None,
    box: Sequence[float] | None = None,
    spatial_axis: int = 2,
    propagate: bool = True,
    max_distance: int | None = None,
    min_pixels: int = 1,
    threshold: float = 0.5,
    box_margin: float = 0.1,
) -> torch.Tensor:
    """Segment one structure in a volume from prompts on one slice.

    Args:
        network: ``network(image B×C×H×W, boxes=B×4, point_coords=B×N×2, point_labels=B×N)`` → logits ``B×1×H×W``
            (e.g. :class:`common.networks.Sam2LoraNet`).
        volume: ``C×H×W×D`` image, intensities as the network expects (0-1).
        slice_index: the prompted slice along ``spatial_axis``.
        point_coords: ``(x, y)`` pixel positions on that slice, x along the slice's second axis.
        point_labels: 1 (foreground) or 0 (background) per point.
        box: ``x0, y0, x1, y1`` on that slice.
        spatial_axis: slicing axis of the ``H×W×D`` spatial axes.
        propagate: carry the mask to the neighbouring slices in both directions.
        max_distance: propagate at most this many slices each way (None: until the mask vanishes).
        min_pixels: a propagated mask smaller than this ends the propagation in that direction.
        threshold: sigmoid probability that counts as foreground.
        box_margin: enlargement of the box taken from a slice's mask for the next slice.

    Returns:
        ``H×W×D`` uint8 mask (1 = the structure).
    """
    if point_coords is None and box is None:
        raise ValueError("give at least one point or a box on the prompted slice")
    slices = torch.movedim(torch.as_tensor(volume), 1 + spatial_axis, 0)  # N×C×h×w
    if not 0 <= slice_index < slices.shape[0]:
        raise ValueError(
            f"slice {slice_index} is outside the volume (0..{slices.shape[0] - 1} along axis {spatial_axis})"
        )

    def segment(index: int, slice_box, coords, labels) -> torch.Tensor:
        kwargs = {}
        if slice_box is not None:
            kwargs["boxes"] = torch.as_tensor(slice_box, dtype=torch.float32).reshape(1, 4)
        if coords is not None and len(coords):
            kwargs["point_coords"] = torch.as_tensor(coords, dtype=torch.float32).reshape(1, -1, 2)
            kwargs["point_labels"] = torch.as_tensor(labels, dtype=torch.int64).reshape(1, -1)
        with torch.no_grad():
            logits = network(slices[index : index + 1].float(), **kwargs)
        return torch.sigmoid(logits[0, 0]) > threshold

    masks = torch.zeros(slices.shape[0], *slices.shape[-2:], dtype=torch.uint8)
    seed = segment(slice_index, box, point_coords, point_labels)
    masks[slice_index] = seed.to(torch.uint8)
    if propagate:
        for step in (1, -1):
            previous, index = seed, slice_index + step
            while 0 <= index < slices.shape[0] and (max_distance is None or abs(index - slice_index) <= max_distance):
                prompt = mask_box(previous, box_margin)
                if prompt is None:
                    break
                mask = segment(index, prompt, None, None)
                if int(mask.sum()) < min_pixels:
                    break
                masks[index] = mask.to(torch.uint8)
                previous, index = mask, index + step
    return torch.movedim(masks, 0, spatial_axis)
