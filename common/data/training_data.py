"""The training and validation lists a bundle's ``train.json`` reads, checked before training starts.

A datalist that cannot train what the configuration declares fails at once, one ``error:`` line per problem naming
the case, instead of training silently on empty targets (a 0/255 mask where the labels are 1, 2, ...) or stopping
with MONAI's config-parser traceback around the message: a missing or malformed ``datalist.json``, an empty training
list, an entry without ``label``, a listed file that does not exist, a label whose values are not the declared ones,
a label whose shape is not its image's.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .datalist import DATALIST_NAME, load_datalist
from .scan_io import IMAGE_2D_SUFFIXES

__all__ = ["check_labels", "training_datalist"]

logger = logging.getLogger(__name__)
_SHOWN = 5  # problems listed one per line; the rest counted
_PICTURE_SUFFIXES = (*IMAGE_2D_SUFFIXES, ".gif")


def _is_picture(path: Path) -> bool:
    return path.name.lower().endswith(_PICTURE_SUFFIXES)


def _spatial_shape(path: Path) -> tuple[int, ...] | None:
    """The spatial shape from the file's header where that is cheap (NIfTI; pictures x first, as MONAI's readers lay
    them out); None otherwise."""
    if path.name.lower().endswith((".nii", ".nii.gz")):
        import nibabel as nib

        return tuple(nib.load(str(path)).shape[:3])
    if _is_picture(path):
        from PIL import Image

        with Image.open(path) as picture:
            return picture.size
    return None


def _values(path: Path) -> np.ndarray:
    """The label's voxel values (a picture as PIL gives them: palette indices are the label values)."""
    if path.name.lower().endswith((".nii", ".nii.gz")):
        import nibabel as nib

        return np.asarray(nib.load(str(path)).dataobj)
    if _is_picture(path):
        from PIL import Image

        with Image.open(path) as picture:
            return np.asarray(picture)
    from monai.transforms import LoadImage

    return np.asarray(LoadImage(image_only=True)(str(path)))


def check_labels(items: Iterable[dict], label_values: Iterable[int]) -> list[str]:
    """Problems of the labelled ``items`` (absolute paths), one message per case: no ``label`` key, values other
    than 0 and ``label_values``, a label whose shape differs from its image's.

    Args:
        items: datalist entries ``{"image": ..., "label": ...}``.
        label_values: the label values the configuration declares (background 0 is always allowed).
    """
    allowed = {0, *(int(v) for v in label_values)}
    problems = []
    for item in items:
        if "label" not in item:
            problems.append(f"{item.get('image', item)}: no 'label' in its datalist entry (a training case needs one)")
            continue
        label = Path(item["label"])
        values = _values(label)
        found = {int(v) for v in np.unique(values)} if values.dtype.kind in "biu" else set(np.unique(values).tolist())
        outside = sorted(v for v in found if v not in allowed)
        if outside:
            hint = "; a 0/255 mask: save it with the label value (e.g. 1) instead of 255" if 255 in outside else ""
            problems.append(
                f"{label}: label values {outside[:6]}{' ...' if len(outside) > 6 else ''} are not declared "
                f"(this configuration's labels are {sorted(allowed - {0})}, 0 = background){hint}"
            )
            continue
        if values.ndim == 3 and _is_picture(label):
            problems.append(f"{label}: a {values.shape[-1]}-channel picture; a label map has one channel (grey)")
            continue
        shape = _spatial_shape(label) or values.shape
        image_shape = _spatial_shape(Path(item["image"])) if "image" in item else None
        if image_shape is not None and tuple(image_shape) != tuple(shape):
            problems.append(f"{label}: shape {tuple(shape)} differs from its image's {tuple(image_shape)}")
    return problems


def training_datalist(
    dataset_dir: str | os.PathLike,
    split: str = "training",
    label_values: Iterable[int] | None = None,
    name: str = DATALIST_NAME,
) -> list[dict]:
    """:func:`common.data.load_datalist` for ``train.json``: the ``split`` entries with absolute paths, checked.

    Args:
        dataset_dir: the folder holding ``datalist.json``.
        split: ``"training"`` (must not be empty) or ``"validation"`` (may be empty or absent).
        label_values: the declared label values to check every label against (``None``: the configuration
            binarises labels itself, values are not checked).

    Raises:
        SystemExit: exit status 1 with one ``error:`` line per problem (MONAI's config parser would wrap any other
            exception in a traceback that hides the message).
    """
    path = Path(dataset_dir) / name
    if path.is_file():
        try:
            content = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise SystemExit(f"error: {path}: not valid JSON ({error})") from None
        if not isinstance(content, dict):
            raise SystemExit(f"error: {path}: expected an object with 'training' / 'validation' lists") from None
        if split != "training" and split not in content:
            return []  # no validation list: training then keeps its last weights
        if not content.get(split):
            raise SystemExit(f"error: {path}: the '{split}' list is missing or empty: nothing to train on") from None
    try:
        items = load_datalist(dataset_dir, split, name)
    except (FileNotFoundError, ValueError, KeyError) as error:
        raise SystemExit(f"error: {error}") from None
    if label_values is not None:
        problems = check_labels(items, label_values)
        if problems:
            more = f"\nerror: ... and {len(problems) - _SHOWN} more case(s)" if len(problems) > _SHOWN else ""
            lines = "\n".join(f"error: {problem}" for problem in problems[:_SHOWN])
            raise SystemExit(f"{lines}{more}\n{len(problems)} of {len(items)} {split} case(s) cannot be trained on")
        logger.info("%s: %d %s case(s), labels checked against %s", path, len(items), split, sorted(label_values))
    return items
