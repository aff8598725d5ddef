"""A PNG montage of a few slices of a volume with its predicted label map overlaid: a quick look at a result."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from .scan_io import scan_stem
from .visualize import overlay_masks

__all__ = ["SaveMontaged", "label_montage", "template_box_montage"]


def _class_masks(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``K×…`` boolean masks of labels 1..K of an integer label map."""
    return np.stack([labels == c for c in range(1, num_classes + 1)])


def label_montage(
    image: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    spatial_axis: int = 2,
    num_slices: int = 6,
    columns: int = 3,
    min_tile_size: int = 192,
) -> np.ndarray:
    """Overlay pictures of ``num_slices`` slices, evenly spread over the slices that hold a label (over all slices
    when none does), tiled ``columns`` wide.

    Args:
        image: ``C×H×W×D`` intensities 0-1.
        labels: ``1×H×W×D`` or ``H×W×D`` integer label map (0 = background).
        num_classes: foreground labels 1..num_classes, one colour each.
        spatial_axis: the slicing axis of ``H×W×D``.
        min_tile_size: small slices are enlarged (pixels repeated) until their shorter side reaches this.

    Returns:
        ``rows·h × columns·w × 3`` uint8 picture; each slice is shown transposed and flipped (for axial slices of
        a RAS-oriented volume: anterior up, the patient's right on the left, as radiologists read them).
    """
    labels = labels[0] if labels.ndim == 4 else labels
    image = np.moveaxis(image, 1 + spatial_axis, 1)
    labels = np.moveaxis(labels, spatial_axis, 0)
    occupied = np.flatnonzero(labels.reshape(len(labels), -1).any(axis=1))
    pool = occupied if len(occupied) else np.arange(len(labels))
    chosen = pool[np.unique(np.linspace(0, len(pool) - 1, min(num_slices, len(pool))).round().astype(int))]
    tiles = []
    for index in chosen:
        tile = overlay_masks(image[:, index], _class_masks(labels[index], num_classes))  # h×w×3
        tiles.append(tile.transpose(1, 0, 2)[::-1, ::-1])
    factor = max(1, -(-min_tile_size // min(tiles[0].shape[:2])))
    tiles = [tile.repeat(factor, axis=0).repeat(factor, axis=1) for tile in tiles]
    rows = -(-len(tiles) // columns)
    height, width = tiles[0].shape[:2]
    sheet = np.zeros((rows * height, min(columns, len(tiles)) * width, 3), np.uint8)
    for i, tile in enumerate(tiles):
        row, col = divmod(i, columns)
        sheet[row * height : (row + 1) * height, col * width : (col + 1) * width] = tile
    return sheet


def template_box_montage(image: np.ndarray, labels: np.ndarray, num_classes: int, boxes: list[dict]) -> np.ndarray:
    """Axial and coronal slices of each box of a whole-brain scan (see :class:`~common.data.CropTemplateRegionsd`):
    one row of 3 axial and one of 3 coronal slices per side, the patient's right on the left as in
    :func:`label_montage`.

    Args:
        image: ``C×X×Y×(n·Z)``: the boxes one after the other along the last axis, in template (RAS) orientation.
        labels: ``1×X×Y×(n·Z)`` integer label map.
        num_classes: foreground labels 1..num_classes.
        boxes: ``{"side": name, "mirror": bool}`` per box, in order (the image's ``template_boxes`` metadata); a
            box cut mirrored is shown un-mirrored.
    """
    depth = image.shape[-1] // len(boxes)
    rows = []
    for index, box in enumerate(boxes):
        side = box["side"]
        depth_range = slice(index * depth, (index + 1) * depth)
        box_image, box_labels = image[..., depth_range], labels[..., depth_range]
        if box["mirror"]:
            box_image, box_labels = box_image[:, ::-1], box_labels[:, ::-1]
        for axis in (2, 1):  # axial, coronal
            # slices through the middle half of the structure, where it is largest
            along = np.moveaxis(box_labels[0], axis, 0)
            occupied = np.flatnonzero(along.reshape(len(along), -1).any(axis=1))
            middle = slice(None)
            if len(occupied) >= 4:
                quarter = (occupied[-1] - occupied[0]) // 4
                middle = slice(occupied[0] + quarter, occupied[-1] - quarter + 1)
            index = (slice(None),) * (1 + axis) + (middle,)
            row = label_montage(box_image[index], box_labels[index], num_classes, axis, 3, columns=3)
            rows.append(_with_title(row, f"{side} hippocampus, {'axial' if axis == 2 else 'coronal'}"))
    width = max(row.shape[1] for row in rows)
    return np.concatenate([np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0))) for row in rows])


def _with_title(picture: np.ndarray, title: str, height: int = 16) -> np.ndarray:
    """``picture`` under a black strip with ``title`` written in it."""
    from PIL import Image, ImageDraw

    strip = Image.new("RGB", (picture.shape[1], height))
    ImageDraw.Draw(strip).text((4, 2), title, fill=(255, 255, 255))
    return np.concatenate([np.asarray(strip), picture])


class SaveMontaged(MapTransform):
    """Write ``<scan>_montage.png``: for a volume a :func:`label_montage` (for the boxes cut from a whole-brain scan a
    :func:`template_box_montage`), for a 2D image the overlay of the image.

    Place it before ``Invertd`` so that image and label map share the preprocessed grid.

    Args:
        keys: the label map key (``1×H×W[×D]``, integer labels).
        label_names: ``{"1": "liver", ...}``; one colour per label.
        image_key: the preprocessed image (``C×H×W[×D]``, intensities 0-1).
        output_dir: folder to write into.
        spatial_axis: slicing axis of volumes (as for the inferer).
        num_slices: slices in a volume's montage.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_names: Mapping[str, str],
        image_key: str = "image",
        output_dir: str | os.PathLike = ".",
        spatial_axis: int = 2,
        num_slices: int = 6,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.num_classes = max(int(k) for k in label_names)
        self.image_key = image_key
        self.output_dir = Path(output_dir)
        self.spatial_axis = spatial_axis
        self.num_slices = num_slices

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        from PIL import Image

        d = dict(data)
        image = np.asarray(torch.as_tensor(d[self.image_key]).detach().cpu().float())
        for key in self.key_iterator(d):
            labels = np.asarray(torch.as_tensor(d[key]).detach().cpu()).astype(np.int64)
            boxes = getattr(d[self.image_key], "meta", {}).get("template_boxes")
            if image.ndim == 4 and boxes:
                picture = template_box_montage(image, labels, self.num_classes, list(boxes))
            elif image.ndim == 4:
                picture = label_montage(image, labels, self.num_classes, self.spatial_axis, self.num_slices)
            else:
                masks = _class_masks(labels[0], self.num_classes)
                picture = overlay_masks(image, masks).transpose(1, 0, 2)  # PIL-loaded arrays are (x, y)
            self.output_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(picture)).save(
                self.output_dir / f"{scan_stem(d[self.image_key])}_montage.png"
            )
        return d
