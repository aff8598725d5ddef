"""Dictionary transforms the bundles need and MONAI lacks."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type

from .scan_io import scan_stem
from .visualize import overlay_masks

__all__ = [
    "ClearOutsideFieldOfViewd",
    "LabelValuesToChannelsd",
    "SelectFieldOfViewd",
    "SaveOverlayd",
    "field_of_view",
]


class LabelValuesToChannelsd(MapTransform):
    """Label map (``1×H×W`` of class values) → one binary channel per group of values (``K×H×W``).

    ``groups=[[1, 2], [2]]`` turns a disc/cup map (1 rim, 2 cup) into nested channels: disc (rim or cup) and cup;
    ``groups=[[1]]`` is a plain binary foreground.
    """

    def __init__(self, keys: KeysCollection, groups: Sequence[Sequence[int]], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if not groups or not all(groups):
            raise ValueError("groups must be a non-empty list of non-empty value lists")
        self.groups = [list(g) for g in groups]

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            label = torch.as_tensor(d[key])
            if label.shape[0] != 1:
                raise ValueError(f"{key}: expected a single-channel label map, got shape {tuple(label.shape)}")
            channels = [torch.isin(label[0], torch.tensor(g, device=label.device)) for g in self.groups]
            # convert_to_dst_type keeps the MetaTensor type and its metadata (affine, file name)
            d[key] = convert_to_dst_type(torch.stack(channels), dst=label, dtype=torch.float32)[0]
        return d


class SelectFieldOfViewd(MapTransform):
    """Keep only the pixels inside the field of view, as ``C×N`` tensors under ``<key>_fov``.

    Vessel metrics are computed inside the FOV: the dark surround would otherwise add millions of easy true negatives
    to specificity and AUC. Without a FOV mask in the sample every pixel counts.

    Args:
        keys: channel-first ``C×H×W`` tensors (prediction, probabilities, label).
        fov_key: key of the ``1×H×W`` FOV mask.
    """

    def __init__(self, keys: KeysCollection, fov_key: str = "fov", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.fov_key = fov_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        fov = d.get(self.fov_key)
        for key in self.key_iterator(d):
            value = torch.as_tensor(d[key])
            inside = torch.ones(value.shape[1:], dtype=torch.bool) if fov is None else torch.as_tensor(fov)[0] > 0
            if inside.shape != value.shape[1:]:
                raise ValueError(f"FOV {tuple(inside.shape)} and {key} {tuple(value.shape[1:])} differ in size")
            d[f"{key}_fov"] = value.as_subclass(torch.Tensor)[:, inside.to(value.device)]
        return d


def field_of_view(image: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """FOV of a fundus photograph (``H×W×3`` or ``H×W``): red channel above ``threshold`` of its maximum (the dark
    surround is outside)."""
    red = image[..., 0] if image.ndim == 3 else image
    return red.astype(np.float32) > threshold * max(float(red.max()), 1e-6)


class ClearOutsideFieldOfViewd(MapTransform):
    """Set labels (and probabilities) to 0 outside the field of view found in the picture itself, so a fundus
    photograph needs no FOV file: the dark surround of the camera's circular aperture holds no anatomy, but its
    edge looks like a vessel wall to a network trained on crops of the inside.

    Only 2D colour pictures (``3×H×W`` image) are masked; grey pictures and volumes pass unchanged.

    Args:
        keys: ``C×H×W`` tensors on the image's grid (label map, probabilities).
        image_key: the ``3×H×W`` picture (any intensity scale).
        threshold: share of the red channel's maximum that counts as inside (:func:`field_of_view`).
    """

    def __init__(
        self, keys: KeysCollection, image_key: str = "image", threshold: float = 0.1, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key
        self.threshold = threshold

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        image = torch.as_tensor(d[self.image_key])
        if image.ndim != 3 or image.shape[0] != 3:
            return d
        red = image[0].detach().float().cpu().numpy()
        inside = torch.as_tensor(field_of_view(red, self.threshold))
        for key in self.key_iterator(d):
            value = d[key]
            if tuple(value.shape[1:]) != tuple(inside.shape):
                raise ValueError(f"{key} {tuple(value.shape[1:])} is not on the picture's grid {tuple(inside.shape)}")
            d[key] = value * inside.to(value.device, value.dtype)
        return d


class SaveOverlayd(MapTransform):
    """Write a PNG of the image with the predicted mask channels overlaid (one colour per channel, outlined).

    Args:
        keys: the prediction key (``K×H×W``, binary).
        image_key: the image (``C×H×W``, intensities 0-1).
        output_dir: folder; the file is ``<input file stem>_overlay.png``.
        label_key: optional ground truth, drawn as an outline in white.
        include_background: whether channel 0 of the prediction and the ground truth is drawn; it is not when it is
            the background channel of :class:`~common.data.OneHotForMetricsd`'s channels (the default).
        reverse_indexing: the arrays are indexed (x, y), as MONAI's ``PILReader`` and ``ITKReader`` load 2D files by
            default, so the picture is transposed back to the file's rows and columns (as ``PILWriter`` does).
    """

    def __init__(
        self,
        keys: KeysCollection,
        image_key: str = "image",
        output_dir: str | os.PathLike = "./overlays",
        label_key: str | None = None,
        reverse_indexing: bool = True,
        include_background: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.reverse_indexing = reverse_indexing
        self.first_channel = 0 if include_background else 1
        self.image_key = image_key
        self.output_dir = Path(output_dir)
        self.label_key = label_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        from PIL import Image

        d = dict(data)
        image = d[self.image_key]
        stem = scan_stem(image)
        for key in self.key_iterator(d):
            first = self.first_channel
            label = None if self.label_key is None else np.asarray(torch.as_tensor(d[self.label_key]).cpu())[first:]
            masks = np.asarray(torch.as_tensor(d[key]).cpu())[first:]
            picture = overlay_masks(np.asarray(torch.as_tensor(image).cpu()), masks, label)
            if self.reverse_indexing:
                picture = picture.transpose(1, 0, 2)
            self.output_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(picture)).save(self.output_dir / f"{stem}_overlay.png")
        return d
