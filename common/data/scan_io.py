"""Reading one 3D scan for inference, with one clear error for each kind of bad input.

A clinical user points the inference at a file or a DICOM folder; what can go wrong should stop the run *before*
anything is written, with a message that says what is wrong with which input. :func:`read_volume` reads NIfTI,
NRRD, MetaImage and DICOM series (ITK, through MONAI's ``LoadImage``) and checks the result.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from monai.data import MetaTensor
from monai.transforms import LoadImage

__all__ = ["VOLUME_SUFFIXES", "VolumeInputError", "read_volume"]

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


class VolumeInputError(ValueError):
    """An input scan that cannot be segmented as given (the message names the input and the problem)."""


def _dicom_series(folder: Path) -> tuple[str, ...]:
    import itk

    return tuple(itk.GDCMSeriesFileNames.New(Directory=str(folder)).GetSeriesUIDs())


def read_volume(path: str | os.PathLike, min_thickness: int = 2) -> MetaTensor:
    """Read one 3D scan as a channel-first ``1×H×W×D`` MetaTensor (affine and spacing in its metadata).

    Args:
        path: a NIfTI / NRRD / MetaImage file, or a folder holding exactly one DICOM series.
        min_thickness: the fewest voxels accepted along every axis (a 1-voxel-thick "volume" is a 2D image).

    Raises:
        VolumeInputError: missing path, empty folder, folder without DICOM or with several series, unsupported
            suffix, unreadable or truncated file, a 4D or multi-channel image, too thin a volume, NaN or infinite
            voxels.
    """
    path = Path(path)
    if not path.exists():
        raise VolumeInputError(f"{path}: no such file or folder")
    if path.is_dir():
        if not any(p.is_file() for p in path.iterdir()):
            raise VolumeInputError(f"{path}: the folder is empty")
        series = _dicom_series(path)
        if not series:
            raise VolumeInputError(f"{path}: no DICOM series in this folder")
        if len(series) > 1:
            raise VolumeInputError(
                f"{path}: {len(series)} DICOM series are mixed in this folder ({', '.join(series[:3])}"
                f"{', ...' if len(series) > 3 else ''}); put each series in its own folder and pass that folder"
            )
        reader = "ITKReader"
    else:
        if not path.name.lower().endswith(VOLUME_SUFFIXES):
            raise VolumeInputError(f"{path}: not a volume file (expected one of {', '.join(VOLUME_SUFFIXES)})")
        reader = None
    try:
        volume = LoadImage(image_only=True, ensure_channel_first=True, reader=reader)(str(path))
    except Exception as error:  # the readers raise many types (EOFError, zlib.error, RuntimeError, OSError...)
        raise VolumeInputError(
            f"{path}: cannot be read ({type(error).__name__}: {error}); is the file complete and not corrupted?"
        ) from error
    shape = tuple(volume.shape)
    if len(shape) != 4 or shape[0] != 1:
        raise VolumeInputError(
            f"{path}: expected one 3D volume, got an image of shape {shape} (channel first): a 4D series or a "
            "multi-channel image; pass a single 3D volume"
        )
    if min(shape[1:]) < min_thickness:
        raise VolumeInputError(
            f"{path}: the volume is only {min(shape[1:])} voxel(s) thick along an axis (shape {shape[1:]}); "
            "for 2D images use the bundle's 2D inference"
        )
    finite = torch.isfinite(volume)
    if not bool(finite.all()):
        nan = int(torch.isnan(volume).sum())
        raise VolumeInputError(
            f"{path}: {nan} NaN and {int((~finite).sum()) - nan} infinite voxel(s); fix or mask them before inference"
        )
    return volume
