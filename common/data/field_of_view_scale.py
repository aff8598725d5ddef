"""Resolution normalisation of fundus photographs: resample each picture so that its field of view (FOV) is as wide,
in pixels, as the training pictures' FOV.

Cameras differ in sensor resolution (CHASE_DB1's FOV is about 919 pixels across, HRF's 3264, DRIVE's 540): a
vessel of one calibre is 3 pixels wide in one and 10 in another, and a network trained on one camera's windows
misses the thin vessels of another. The FOV, the camera's circular aperture, is found in the picture itself
(:func:`common.data.transforms.field_of_view`), so no setting is needed per camera.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import InvertibleTransform, MapTransform, Resize
from monai.utils import convert_to_dst_type, ensure_tuple_rep
from scipy.ndimage import gaussian_filter

from .transforms import field_of_view

__all__ = ["ScaleFieldOfViewd", "field_of_view_diameter"]

logger = logging.getLogger(__name__)

#: a picture shrunk by more than this factor (a field of view 4× the training pictures') is far larger than the
#: resolution the model segments at: the user is told, and its anti-aliasing is done by SciPy's separable Gaussian
#: (the same sigma as MONAI's ``Resize``, whose convolution took 46 s of an 8000² picture's 55 s before the first
#: window; SciPy's takes a few seconds). Every camera measured so far is within it (HRF ×0.28: resized as before).
LARGE_PICTURE_SCALE = 0.25


def field_of_view_diameter(picture: np.ndarray | torch.Tensor, min_pixels: int = 3) -> float | None:
    """Diameter in pixels of the FOV of a colour fundus photograph (``3×H×W``, any intensity scale), or None for a
    picture that is not one (grey, a volume, no dark surround).

    The diameter is the larger of the FOV's height and width (rows and columns holding at least ``min_pixels``
    inside pixels): cameras often cut the circle at the top and bottom, rarely on both axes.
    """
    array = picture.detach().cpu().numpy() if isinstance(picture, torch.Tensor) else np.asarray(picture)
    if array.ndim != 3 or array.shape[0] != 3:
        return None
    inside = field_of_view(np.moveaxis(array, 0, -1))
    rows = np.flatnonzero(inside.sum(axis=1) >= min_pixels)
    columns = np.flatnonzero(inside.sum(axis=0) >= min_pixels)
    if rows.size == 0 or columns.size == 0 or inside.all():
        return None  # no dark surround: the picture is a crop of the inside (or not a fundus photograph)
    return float(max(rows[-1] - rows[0] + 1, columns[-1] - columns[0] + 1))


def _is_grey_picture(picture: torch.Tensor) -> bool:
    """A 2D picture (``C×H×W``) with one channel, or three equal ones (grey saved as RGB)."""
    if picture.ndim != 3 or picture.shape[0] not in (1, 3):
        return False
    return picture.shape[0] == 1 or bool(torch.equal(picture[0], picture[1]) and torch.equal(picture[1], picture[2]))


class ScaleFieldOfViewd(MapTransform, InvertibleTransform):
    """Resample a colour fundus photograph (and its label) so that its FOV is ``reference_diameter`` pixels across.

    The FOV is measured on ``image_key`` (:func:`field_of_view_diameter`); every key is resized by the same factor
    (anti-aliased when shrinking). A picture within ``tolerance`` of the reference, a grey picture and a volume pass
    unchanged. Invertible: ``Invertd`` takes labels and probabilities back to the input's own size. The measured
    diameter and the factor of a fundus picture are kept in its metadata (``fov_diameter``, ``fov_scale``) and logged.

    Args:
        keys: ``C×H×W`` tensors on one grid (the picture; in training also its label).
        reference_diameter: FOV diameter of the training pictures in pixels; None switches the transform off.
        image_key: the ``3×H×W`` picture the FOV is measured on.
        mode: interpolation per key (``"bilinear"`` for pictures, ``"nearest"`` for labels).
        tolerance: relative difference from the reference below which a picture is left as it is.
    """

    def __init__(
        self,
        keys: KeysCollection,
        reference_diameter: float | None,
        image_key: str = "image",
        mode: str | Sequence[str] = "bilinear",
        tolerance: float = 0.1,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if reference_diameter is not None and reference_diameter <= 0:
            raise ValueError(f"reference_diameter must be positive (pixels), got {reference_diameter}")
        self.reference_diameter = reference_diameter
        self.image_key = image_key
        self.mode = ensure_tuple_rep(mode, len(self.keys))
        self.tolerance = tolerance

    def scale_of(self, picture: torch.Tensor) -> tuple[float | None, float]:
        """(the FOV diameter, the resize factor) of ``picture``; the factor is 1 where nothing is to be done."""
        if self.reference_diameter is None:
            return None, 1.0
        diameter = field_of_view_diameter(picture)
        if diameter is None:
            return None, 1.0
        scale = self.reference_diameter / diameter
        return diameter, (1.0 if abs(scale - 1.0) < self.tolerance else scale)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        picture = d[self.image_key]
        name = getattr(picture, "meta", {}).get("filename_or_obj", "picture")
        if self.reference_diameter is not None and _is_grey_picture(picture):
            logger.warning(
                "%s: a grey picture, but this model was trained on colour fundus photographs (a grey copy of one "
                "loses about 0.07-0.10 Dice): give the colour original if there is one", name,
            )  # fmt: skip
        diameter, scale = self.scale_of(picture)
        if diameter is not None:
            logger.info(
                "%s: field of view %.0f pixels across, resampled ×%.3f to the training pictures' %.0f",
                name, diameter, scale, self.reference_diameter,
            )  # fmt: skip
        if scale < LARGE_PICTURE_SCALE:
            logger.warning(
                "%s: %s pixels, its field of view %.0f across, %.1f× the %.0f the model segments at: it is segmented "
                "at that scale (×%.3f) and the labels are resampled back to the picture's size, so nothing finer "
                "than about %.0f pixels here is seen",
                name, "×".join(map(str, picture.shape[1:])), diameter, 1 / scale, self.reference_diameter, scale,
                1 / scale,
            )  # fmt: skip
        for key, mode in self.key_iterator(d, self.mode):
            resized = scale != 1.0
            if resized:
                size = [max(1, round(n * scale)) for n in d[key].shape[1:]]
                d[key] = self._resize(d[key], size, scale, mode)
            self.push_transform(d[key], extra_info={"resized": resized})
        if diameter is not None and hasattr(d[self.image_key], "meta"):  # (None would not collate into a batch)
            d[self.image_key].meta["fov_diameter"] = diameter
            d[self.image_key].meta["fov_scale"] = scale
        return d

    @staticmethod
    def _resize(image: torch.Tensor, size: list[int], scale: float, mode: str) -> torch.Tensor:
        """``image`` resized to ``size`` by MONAI's ``Resize`` (its trace is what ``inverse`` undoes), anti-aliased
        when shrinking; beyond ``LARGE_PICTURE_SCALE`` with SciPy's Gaussian of the same sigma first."""
        if scale >= LARGE_PICTURE_SCALE or mode == "nearest":
            return Resize(size, mode=mode, anti_aliasing=scale < 1.0)(image)
        sigma = (1.0 / scale - 1.0) / 2.0  # MONAI's anti-aliasing sigma for this factor
        array = torch.as_tensor(image).float().numpy()
        smoothed = gaussian_filter(array, sigma=(0.0, sigma, sigma), mode="nearest", truncate=4.0)
        image = convert_to_dst_type(smoothed, image, dtype=image.dtype)[0]  # keeps the picture's metadata
        return Resize(size, mode=mode, anti_aliasing=False)(image)

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            trace = self.pop_transform(d[key])
            if trace["extra_info"]["resized"]:
                resize = Resize(spatial_size=-1)  # its trace (another instance's: not checked) holds the size
                d[key] = resize.inverse_transform(d[key], resize.pop_transform(d[key], check=False))
        return d
