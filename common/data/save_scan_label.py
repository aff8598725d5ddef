"""``SaveImaged`` that writes 2D predictions as PNG and 3D predictions as NIfTI, so one configuration serves both."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import SaveImaged

__all__ = ["SaveScanLabeld"]


class SaveScanLabeld(SaveImaged):
    """Write each label map with the input's geometry: ``C×H×W`` (2D) as ``image_ext``, ``C×H×W×D`` as ``volume_ext``.

    A ``SaveImaged`` subclass on purpose: MONAI Label drops ``SaveImaged`` instances from a bundle's postprocessing
    and writes the result itself.

    Args:
        keys: the label map key(s).
        image_ext: file type of 2D results (``.png``).
        volume_ext: file type of 3D results (``.nii.gz``, ``.nrrd``...).
        kwargs: the other ``SaveImaged`` arguments (``output_dir``, ``output_postfix``, ``output_dtype``...).
    """

    def __init__(self, keys: KeysCollection, image_ext: str = ".png", volume_ext: str = ".nii.gz", **kwargs) -> None:
        kwargs.pop("output_ext", None)
        super().__init__(keys, output_ext=volume_ext, **kwargs)
        self.image_saver = SaveImaged(keys, output_ext=image_ext, **kwargs)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        first = next(iter(self.key_iterator(dict(data))), None)
        if first is not None and data[first].ndim == 3:
            return self.image_saver(data)
        return super().__call__(data)
