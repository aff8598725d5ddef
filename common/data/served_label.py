"""The label map of a 2D picture as MONAI Label's writer needs it.

MONAI Label writes the ``pred`` of a bundle's post-processing itself, with ITK, in the study's file format: a 2D
picture's ``1×W×H`` label map went out as a 3D image (a 1-pixel-wide PNG, or HTTP 500 from ITK's JPEG writer), and a
JPEG label would be lossy anyway. This transform, last in every ``inference.json`` and active only when MONAI Label
serves the bundle, drops the channel axis of 2D label maps and asks for a PNG unless the request chose a lossless
format. Volumes pass unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

__all__ = ["LabelForMonaiLabeld"]

logger = logging.getLogger(__name__)
_LOSSY = (".jpg", ".jpeg")


class LabelForMonaiLabeld(MapTransform):
    """``1×W×H`` label maps → ``W×H``, and ``extension_key`` set to ``.png`` when absent or lossy.

    Args:
        keys: the label map key(s) (``pred``).
        extension_key: the request key MONAI Label's writer reads the output format from.
    """

    def __init__(
        self, keys: KeysCollection, extension_key: str = "result_extension", allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.extension_key = extension_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            if label.ndim == 3 and label.shape[0] == 1:  # C×W×H: a 2D picture's label map
                # integer values: Invertd's resampling leaves them in floating point, which PNG cannot hold
                d[key] = label[0].round().to(torch.uint8) if label.is_floating_point() else label[0]
                requested = str(d.get(self.extension_key) or "")
                if not requested or requested.lower() in _LOSSY:
                    if requested:
                        logger.info("label map written as PNG, not %s (a lossy format would alter labels)", requested)
                    d[self.extension_key] = ".png"
        return d
