"""Intensity scaling of inference inputs to the 0-1 range the networks take: CT windows, MR percentiles, 8-bit 2D.

CT numbers are absolute (Hounsfield units), so a CT scan is clipped to a window chosen for the body region; MR
intensities are arbitrary per scanner and sequence, so an MR scan is scaled between two of its own percentiles;
2D pictures (PNG, JPEG) are 8-bit.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, ScaleIntensityRange, ScaleIntensityRangePercentiles

__all__ = ["CT_WINDOWS", "ScaleScanIntensityd", "parse_intensity"]

#: Hounsfield-unit range (lower, upper) per preset, from the usual window width / level of each body region
#: (e.g. abdomen W400 L40 → −160..240). ``synapse`` is the −125..275 range of the Synapse multi-organ benchmark.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "abdomen": (-160.0, 240.0),
    "liver": (-45.0, 105.0),
    "synapse": (-125.0, 275.0),
    "lung": (-1350.0, 150.0),
    "mediastinum": (-125.0, 225.0),
    "brain": (0.0, 80.0),
    "head_neck": (-135.0, 215.0),
    "bone": (-500.0, 1300.0),
}


def parse_intensity(intensity: str) -> tuple[str, tuple[float, float]]:
    """``"mr"`` / ``"mr:1,99"`` → ("mr", percentiles); ``"ct:<preset>"`` / ``"ct:-125,275"`` → ("ct", HU range);
    ``"none"`` → ("none", (0, 1)). Raises ValueError with the accepted forms otherwise."""
    kind, _, argument = str(intensity).strip().lower().partition(":")
    try:
        if kind == "mr":
            lower, upper = (float(v) for v in argument.split(",")) if argument else (0.5, 99.5)
            if 0 <= lower < upper <= 100:
                return "mr", (lower, upper)
        elif kind == "ct" and argument in CT_WINDOWS:
            return "ct", CT_WINDOWS[argument]
        elif kind == "ct":
            lower, upper = (float(v) for v in argument.split(","))
            if lower < upper:
                return "ct", (lower, upper)
        elif kind == "none" and not argument:
            return "none", (0.0, 1.0)
    except ValueError:
        pass
    raise ValueError(
        f"unknown intensity setting {intensity!r}: use 'mr' or 'mr:<low percentile>,<high percentile>', "
        f"'ct:<preset>' with a preset of {', '.join(CT_WINDOWS)}, 'ct:<min HU>,<max HU>', or 'none'"
    )


class ScaleScanIntensityd(MapTransform):
    """Scale volumes by ``intensity`` (see :func:`parse_intensity`) and 2D images from 0-255, to 0-1, clipped.

    Which rule applies is decided per input by its shape (``C×H×W`` is a 2D image, ``C×H×W×D`` a volume), so one
    inference configuration serves both.

    Args:
        keys: image key(s).
        intensity: the rule for volumes, e.g. ``"mr"``, ``"ct:abdomen"``, ``"ct:-125,275"``.
        image_range: the intensity range of 2D images mapped to 0-1.
    """

    def __init__(
        self,
        keys: KeysCollection,
        intensity: str = "mr",
        image_range: tuple[float, float] = (0.0, 255.0),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        kind, (lower, upper) = parse_intensity(intensity)
        if kind == "mr":
            self.volume_scaler = ScaleIntensityRangePercentiles(lower, upper, 0.0, 1.0, clip=True)
        elif kind == "ct":
            self.volume_scaler = ScaleIntensityRange(lower, upper, 0.0, 1.0, clip=True)
        else:
            self.volume_scaler = None
        self.image_scaler = ScaleIntensityRange(image_range[0], image_range[1], 0.0, 1.0, clip=True)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            scaler = self.image_scaler if d[key].ndim == 3 else self.volume_scaler
            if scaler is not None:
                d[key] = scaler(d[key])
        return d
