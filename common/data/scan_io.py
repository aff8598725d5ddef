"""Reading one scan for inference (a 2D image or a 3D volume), with one clear error for each kind of bad input.

A clinical user points the inference at a file or a DICOM folder; what can go wrong should stop the run *before*
anything is written, with a message that says what is wrong with which input. :class:`LoadScand` is MONAI's
``LoadImaged`` (so MONAI Label and ``Invertd`` treat it as the loader it is) with those checks around it; it reads
2D images (PNG, JPEG, BMP, TIFF), NIfTI, NRRD, MetaImage and DICOM series (a folder, read with ITK).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import ITKReader, MetaTensor
from monai.transforms import LoadImaged

from .input_error import NOT_FOUND, InputError
from .input_kind import input_kind_problem

__all__ = [
    "IMAGE_2D_SUFFIXES",
    "LoadScand",
    "ScanInputError",
    "ScanList",
    "VOLUME_SUFFIXES",
    "check_scan",
    "check_scan_path",
    "exit_if_scans_skipped",
    "list_scans",
    "read_scan",
    "readable_scans",
    "scan_stem",
]

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
IMAGE_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: PIL modes of pictures whose values are not 0-255 intensities (palette indices, bilevel pixels) or not 8-bit
_PALETTE_MODES = ("P", "PA", "1")
_HIGH_BIT_DEPTH_MODES = ("I", "F", "I;16", "I;16B", "I;16L", "I;16N")

logger = logging.getLogger(__name__)


class ScanInputError(InputError):
    """An input scan that cannot be segmented as given (the message names the input and the problem; MONAI Label
    answers it as HTTP 422, or 404 for a scan that is not there)."""


def _dicom_series(folder: Path) -> tuple[str, ...]:
    import itk

    return tuple(itk.GDCMSeriesFileNames.New(Directory=str(folder)).GetSeriesUIDs())


def _existing_path(path: str | os.PathLike) -> Path:
    """``path`` as a ``Path`` that exists, or the one error that says it does not."""
    if not str(path).strip():  # MONAI Label hands an unknown image id over as "", which would read the current folder
        raise ScanInputError("no image path given (an unknown image id?)", NOT_FOUND)
    path = Path(path)
    if not path.exists():
        raise ScanInputError(f"{path}: no such file or folder", NOT_FOUND)
    return path


def check_scan_path(path: str | os.PathLike, dimension: int | None = None) -> int:
    """Check what can be checked before reading, and say whether ``path`` is a 2D image or a 3D volume.

    Args:
        path: an image file, a volume file, or a folder holding exactly one DICOM series.
        dimension: 2 or 3 to refuse the other kind; ``None`` accepts both.

    Returns:
        2 or 3.

    Raises:
        ScanInputError: missing path, empty folder, folder without DICOM or with several series, unsupported suffix,
            a 2D image where 3D is expected or the reverse.
    """
    path = _existing_path(path)
    if path.is_dir():
        if not any(p.is_file() for p in path.iterdir()):
            raise ScanInputError(f"{path}: the folder is empty")
        series = _dicom_series(path)
        if not series:
            raise ScanInputError(f"{path}: no DICOM series in this folder")
        if len(series) > 1:
            raise ScanInputError(
                f"{path}: {len(series)} DICOM series are mixed in this folder ({', '.join(series[:3])}"
                f"{', ...' if len(series) > 3 else ''}); put each series in its own folder and pass that folder"
            )
        found = 3
    elif path.name.lower().endswith(VOLUME_SUFFIXES):
        found = 3
    elif path.name.lower().endswith(IMAGE_2D_SUFFIXES):
        found = 2
    else:
        raise ScanInputError(
            f"{path}: not a scan file (expected a DICOM folder or one of "
            f"{', '.join(VOLUME_SUFFIXES + IMAGE_2D_SUFFIXES)})"
        )
    if dimension is not None and found != dimension:
        raise ScanInputError(f"{path}: a {found}D input, but this configuration segments {dimension}D inputs only")
    return found


def check_scan(image: torch.Tensor, path: str | os.PathLike, dimension: int, min_thickness: int = 2) -> None:
    """Check a loaded, channel-first scan: shape and channels for its dimension, thickness, finite voxels.

    Args:
        image: ``C×H×W`` (2D) or ``C×H×W×D`` (3D) as loaded with ``ensure_channel_first``.
        path: the input, for the message.
        dimension: what :func:`check_scan_path` found (2 or 3).
        min_thickness: the fewest voxels accepted along every axis of a volume (a 1-voxel-thick volume is a 2D image)
            and pixels along each side of a picture.

    Raises:
        ScanInputError: a 4D or multi-channel volume, a 2D image that is neither grey nor RGB, too thin a volume or
            picture, NaN or infinite voxels.
    """
    shape = tuple(image.shape)
    if dimension == 3:
        if len(shape) == 3 and shape[0] == 1:  # a NIfTI / NRRD file that holds one 2D slice
            raise ScanInputError(
                f"{path}: a 2D image of {shape[1]}×{shape[2]} pixels stored as a volume file; save it as a 2D image "
                "(PNG, TIFF) to segment it, or pass a 3D volume"
            )
        if len(shape) != 4 or shape[0] != 1:
            raise ScanInputError(
                f"{path}: expected one 3D volume, got an image of shape {shape} (channel first): a 4D series or a "
                "multi-channel image; pass a single 3D volume"
            )
        if min(shape[1:]) < min_thickness:
            raise ScanInputError(
                f"{path}: the volume is only {min(shape[1:])} voxel(s) thick along an axis (shape {shape[1:]}); "
                "save a single slice as a 2D image (PNG) to segment it"
            )
    elif len(shape) != 3 or shape[0] not in (1, 3):
        raise ScanInputError(
            f"{path}: expected a grey or RGB 2D image, got shape {shape} (channel first, so {shape[0]} channels); "
            "convert it to grey or RGB (drop the alpha channel)"
        )
    elif min(shape[1:]) < min_thickness:  # a 1-pixel line holds nothing to segment and no writer keeps its shape
        raise ScanInputError(
            f"{path}: the picture is only {shape[1]}×{shape[2]} pixels; pass a picture at least {min_thickness} "
            "pixels on each side"
        )
    finite = torch.isfinite(torch.as_tensor(image))
    if not bool(finite.all()):
        nan = int(torch.isnan(torch.as_tensor(image)).sum())
        raise ScanInputError(
            f"{path}: {nan} NaN and {int((~finite).sum()) - nan} infinite voxel(s); fix or mask them before inference"
        )


class LoadScand(LoadImaged):
    """``LoadImaged`` for inference inputs: checks each path before reading and the image after, reads DICOM folders
    with ITK, and turns every reader failure into one :class:`ScanInputError` naming the input.

    Output: ``C×H×W`` for 2D images (C = 1 or 3), ``1×H×W×D`` for volumes, channel first, with MONAI metadata
    (affine, spacing, original shape) so ``Invertd`` and ``SaveImaged`` restore the input's geometry.

    Args:
        keys: the image key(s).
        dimension: 2 or 3 to accept only that kind; ``None`` (default) accepts both.
        min_thickness: see :func:`check_scan`.
        accepted_input: what the bundle segments (``metadata.json`` ``accepted_input``, see
            :func:`common.data.input_kind.input_kind_problem`): another kind of input is refused; None accepts any.
        kwargs: passed on to ``LoadImaged`` (``image_only``, ``dtype``...); ``ensure_channel_first`` is always on.
    """

    def __init__(
        self,
        keys: KeysCollection,
        dimension: int | None = None,
        min_thickness: int = 2,
        accepted_input: Mapping | None = None,
        allow_missing_keys: bool = False,
        **kwargs,
    ) -> None:
        if dimension not in (None, 2, 3):
            raise ValueError(f"dimension must be 2, 3 or None, got {dimension!r}")
        kwargs["ensure_channel_first"] = True
        super().__init__(keys, allow_missing_keys=allow_missing_keys, **kwargs)
        self.dimension = dimension
        self.min_thickness = min_thickness
        self.accepted_input = dict(accepted_input) if accepted_input else None

    def __call__(self, data: Mapping[Hashable, object], reader=None) -> dict:
        d = dict(data)
        found: dict[Hashable, tuple[str, int]] = {}
        for key in self.key_iterator(d):
            if isinstance(d[key], (str, os.PathLike)):  # MONAI Label may hand over an already loaded array
                found[key] = (str(d[key]), check_scan_path(d[key], self.dimension))
        if reader is None and any(Path(path).is_dir() for path, _ in found.values()):
            reader = ITKReader()  # a DICOM series; pydicom, when installed, would otherwise be tried first
        try:
            d = super().__call__(d, reader)
        except Exception as error:  # the readers raise many types (EOFError, zlib.error, RuntimeError, OSError...)
            names = ", ".join(path for path, _ in found.values()) or "input"
            raise ScanInputError(
                f"{names}: cannot be read ({type(error).__name__}: {error}); is the file complete and not corrupted?"
            ) from error
        for key, (path, dimension) in found.items():
            if dimension == 2:
                d[key] = picture_intensities(d[key], path)
            check_scan(d[key], path, dimension, self.min_thickness)
            problem = input_kind_problem(d[key], path, dimension, self.accepted_input)
            if problem:
                raise ScanInputError(problem)
            warn_if_no_signal(d[key], path)
        return d


def picture_intensities(image: MetaTensor, path: str | os.PathLike) -> MetaTensor:
    """The 0-255 grey or RGB intensities of a 2D picture whatever its PIL mode, which the bundles' 0-255 scaling
    expects: a palette picture gives its colours (grey when the palette is), not its palette indices; a bilevel one
    0 / 255; a 16-bit or floating-point one is stretched between its own 0.5 and 99.5 percentiles (the rule for MR
    volumes), not clipped at 255. Each conversion is logged once per picture; 8-bit pictures pass unchanged.

    Args:
        image: the picture as ``LoadImaged`` read it (``C×W×H``: MONAI's PIL layout, x first).
        path: its file, whose PIL mode decides.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as picture:
            mode = picture.mode
            if mode in _PALETTE_MODES:
                rgb = np.asarray(picture.convert("RGB"))
    except (OSError, UnidentifiedImageError):  # a format PIL does not read (ITK read it): its values as they are
        return image
    if mode in _PALETTE_MODES:
        grey = bool((rgb == rgb[..., :1]).all())
        array = np.moveaxis(rgb[..., 0] if grey else rgb, 0, 1)  # PIL is y-first; MONAI's PILReader layout x-first
        array = array[None] if grey else np.moveaxis(array, -1, 0)
        logger.info("%s: a %s picture, read as its %s colours", path, "palette" if mode != "1" else "bilevel",
                    "grey" if grey else "RGB")  # fmt: skip
        return MetaTensor(torch.tensor(array, dtype=image.dtype), meta=image.meta)
    if mode in _HIGH_BIT_DEPTH_MODES:
        values = torch.as_tensor(image).float()
        low, high = (float(v) for v in torch.quantile(values.flatten()[:: max(1, values.numel() // 1_000_000)],
                                                       torch.tensor([0.005, 0.995])))  # fmt: skip
        stretched = ((values - low) / max(high - low, 1e-12)).clamp(0, 1) * 255.0
        logger.info("%s: a %s picture (values %g..%g), stretched between its 0.5 and 99.5 percentiles to 0-255",
                    path, mode, float(values.min()), float(values.max()))  # fmt: skip
        return MetaTensor(stretched.to(image.dtype), meta=image.meta)
    return image


def warn_if_no_signal(image: torch.Tensor, path: str | os.PathLike) -> None:
    """Warn when every voxel of a scan has one value: whatever is segmented there is not in the data."""
    values = torch.as_tensor(image)
    if values.numel() and float(values.max()) == float(values.min()):
        logger.warning(
            "%s: every voxel is %g: the scan holds no signal, so its segmentation means nothing", path,
            float(values.max()),
        )


def read_scan(path: str | os.PathLike, dimension: int | None = None, min_thickness: int = 2) -> MetaTensor:
    """Read and check one scan (see :class:`LoadScand`): ``C×H×W`` or ``1×H×W×D`` MetaTensor."""
    return LoadScand("image", dimension=dimension, min_thickness=min_thickness, image_only=True)({"image": path})[
        "image"
    ]


def list_scans(path: str | os.PathLike) -> list[dict[str, str]]:
    """The inputs of one inference run as a MONAI datalist ``[{"image": ...}, ...]``.

    ``path`` is one scan (file or DICOM folder), or a folder of scans: its image and volume files and its
    sub-folders (each one DICOM series), sorted by name. A folder holding only other files (DICOM files need no
    suffix) is one DICOM series.

    Raises:
        ScanInputError: the path does not exist, or a folder holds no scans.
    """
    path = _existing_path(path)
    if path.is_file():
        return [{"image": str(path)}]
    entries = sorted(path.iterdir())
    scans = [p for p in entries if p.is_dir() or p.name.lower().endswith(VOLUME_SUFFIXES + IMAGE_2D_SUFFIXES)]
    if not scans and any(p.is_file() for p in entries):
        return [{"image": str(path)}]  # only other files: one DICOM series (LoadScand says if it is not)
    if not scans:
        raise ScanInputError(
            f"{path}: no scans in this folder (expected DICOM series folders or files ending in "
            f"{', '.join(VOLUME_SUFFIXES + IMAGE_2D_SUFFIXES)})"
        )
    named: dict[str, Path] = {}
    for scan in scans:  # results are named by the stem: two inputs of one stem would overwrite each other's
        stem = _path_stem(scan)
        if stem in named:
            raise ScanInputError(
                f"{path}: {named[stem].name} and {scan.name} would both write their results as {stem}_seg…: "
                "rename or move one of them"
            )
        named[stem] = scan
    return [{"image": str(p)} for p in scans]


class ScanList(list):
    """Datalist items of the scans that can be segmented; ``skipped`` holds one message per input that cannot."""

    def __init__(self, items=(), skipped: list[str] | None = None) -> None:
        super().__init__(items)
        self.skipped = list(skipped or [])


def readable_scans(path: str | os.PathLike, loader: LoadScand | None = None) -> ScanList:
    """:func:`list_scans` for ``python -m monai.bundle run ... --input``: every scan is read and checked first
    (by ``loader``, the configs' own :class:`LoadScand` with its dimension and accepted input; a plain one when
    None), one that cannot be segmented is reported on one ``error:`` line and left out, so one bad file
    in a folder does not stop the others (as ``python -m common.segment``); :func:`exit_if_scans_skipped` in the
    configs' ``finalize`` then makes the run's exit status 1. Scans are read twice (here and by the evaluator).

    Raises:
        SystemExit: one ``error:`` line, when ``path`` holds no scan or none of its scans can be segmented.
    """
    try:
        scans = list_scans(path)
    except ScanInputError as error:
        raise SystemExit(f"error: {error}") from None
    loader = loader if loader is not None else LoadScand("image", image_only=True)
    readable, skipped = [], []
    for item in scans:
        try:
            loader({"image": item["image"]})
        except ScanInputError as error:
            print(f"error: {error}", file=sys.stderr)
            skipped.append(str(error))
        else:
            readable.append(item)
    if not readable:
        raise SystemExit(f"error: none of the {len(scans)} scan(s) of {path} can be segmented (see above)")
    return ScanList(readable, skipped)


def exit_if_scans_skipped(datalist: list) -> None:
    """End a run whose :func:`readable_scans` left inputs out with exit status 1 and one line saying how many."""
    skipped = getattr(datalist, "skipped", [])
    if skipped:
        total = len(datalist) + len(skipped)
        raise SystemExit(f"error: {len(skipped)} of {total} scan(s) could not be segmented (the error lines above)")


def _path_stem(path: str | os.PathLike) -> str:
    """The name outputs of the scan at ``path`` are called by: its file name without suffixes (a DICOM folder or
    one of its ``.dcm`` files: the folder's name)."""
    path = Path(path)
    if path.suffix.lower() == ".dcm" or path.is_dir():
        return (path if path.is_dir() else path.parent).name
    return path.name.split(".")[0]


def scan_stem(image: torch.Tensor) -> str:
    """:func:`_path_stem` of the file a scan was read from."""
    source = getattr(image, "meta", {}).get("filename_or_obj", "image")
    source = source[0] if isinstance(source, (list, tuple)) and source else source
    return _path_stem(str(source))
