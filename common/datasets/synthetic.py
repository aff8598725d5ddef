"""A synthetic sample dataset in the datalist format, for demos and tests.

Each image shows a textured, noisy background, elliptical "organs" (class 1), smaller dark "lesions" inside them
(class 2, when ``num_classes >= 2``) and unlabelled bright rectangles as distractors, so that a model has to learn
shape and context rather than a single intensity threshold. 2D cases are 8-bit PNG, 3D cases NIfTI with a
non-trivial affine (anisotropic spacing, offset origin).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from common.data.datalist import write_datalist

__all__ = ["make_synthetic_case", "make_synthetic_dataset"]

_CLASS_NAMES = {"1": "organ", "2": "lesion", "3": "vessel"}


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], scale: int) -> np.ndarray:
    """Low-frequency texture: coarse random grid up-sampled by nearest repetition and box-blurred."""
    coarse = rng.random(tuple(max(2, s // scale + 2) for s in shape))
    fine = coarse
    for axis, size in enumerate(shape):
        fine = np.repeat(fine, scale, axis=axis).take(range(size), axis=axis)
    for axis in range(len(shape)):
        kernel = np.ones(scale) / scale
        fine = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="same"), axis, fine)
    return fine


def make_synthetic_case(shape: tuple[int, ...], num_classes: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One image (float32 in 0-1) and its label map (uint8, 0 = background) of ``shape`` (2D or 3D)."""
    if num_classes not in (1, 2, 3):
        raise ValueError(f"num_classes must be 1, 2 or 3, got {num_classes}")
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    image = 0.25 + 0.15 * _smooth_noise(rng, shape, scale=max(4, min(shape) // 6))
    label = np.zeros(shape, dtype=np.uint8)
    for _ in range(int(rng.integers(1, 3))):
        center = [rng.uniform(0.3, 0.7) * s for s in shape]
        radii = [rng.uniform(0.12, 0.22) * min(shape) for _ in shape]
        inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, center, radii)) <= 1.0
        image[inside] += 0.35 + 0.1 * rng.random()
        label[inside] = 1
        if num_classes >= 2:
            lesion = sum(((g - c) / (0.4 * r)) ** 2 for g, c, r in zip(grids, center, radii)) <= 1.0
            image[lesion] -= 0.25
            label[lesion] = 2
    if num_classes >= 3:
        # a thin curved tube crossing the image ("vessel")
        phase, amp = rng.uniform(0, 2 * np.pi), rng.uniform(0.05, 0.15) * shape[0]
        path = shape[0] / 2 + amp * np.sin(grids[1] / shape[1] * 2 * np.pi + phase)
        tube = np.abs(grids[0] - path) < max(1.5, 0.02 * shape[0])
        image[tube] += 0.3
        label[tube & (label == 0)] = 3
    for _ in range(int(rng.integers(1, 3))):
        lo = [int(rng.uniform(0.05, 0.8) * s) for s in shape]
        hi = [min(s, low + int(rng.uniform(0.05, 0.15) * s) + 2) for low, s in zip(lo, shape)]
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        free = label[box] == 0
        image[box] = np.where(free, image[box] + 0.45, image[box])
    image += rng.normal(0.0, 0.04, size=shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32), label


def _write_2d(path: Path, array: np.ndarray, is_label: bool) -> None:
    from PIL import Image

    data = array.astype(np.uint8) if is_label else np.round(array * 255).astype(np.uint8)
    Image.fromarray(data).save(path)


def _write_3d(path: Path, array: np.ndarray, is_label: bool, affine: np.ndarray) -> None:
    import nibabel as nib

    nib.save(nib.Nifti1Image(array.astype(np.uint8 if is_label else np.float32), affine), str(path))


def make_synthetic_dataset(
    dataset_dir: str | os.PathLike,
    spatial_dims: int = 2,
    num_classes: int = 1,
    num_train: int = 8,
    num_val: int = 2,
    num_test: int = 2,
    shape: tuple[int, ...] | None = None,
    seed: int = 0,
) -> Path:
    """Write ``images/``, ``labels/`` and ``datalist.json`` (with labels for every split) into ``dataset_dir``.

    Args:
        dataset_dir: output folder (created).
        spatial_dims: 2 (PNG) or 3 (NIfTI).
        num_classes: foreground classes (1-3); names are stored in the datalist's ``labels``.
        num_train, num_val, num_test: cases per split.
        shape: image shape (default 160×192 for 2D, 48×56×24 for 3D: deliberately not square).
        seed: base random seed (case i uses ``seed + i``).

    Returns:
        the path of ``datalist.json``.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    shape = tuple(shape or ((160, 192) if spatial_dims == 2 else (48, 56, 24)))
    if len(shape) != spatial_dims:
        raise ValueError(f"shape {shape} does not have {spatial_dims} dimensions")
    root = Path(dataset_dir)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    suffix = ".png" if spatial_dims == 2 else ".nii.gz"
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    affine[:3, 3] = (-20.0, 15.0, 7.5)
    datalist: dict = {"labels": {str(k): _CLASS_NAMES[str(k)] for k in range(1, num_classes + 1)}}
    index = 0
    for split, count in (("training", num_train), ("validation", num_val), ("testing", num_test)):
        datalist[split] = []
        for _ in range(count):
            image, label = make_synthetic_case(shape, num_classes=num_classes, seed=seed + index)
            name = f"case_{index:03d}{suffix}"
            for folder, array, is_label in (("images", image, False), ("labels", label, True)):
                if spatial_dims == 2:
                    _write_2d(root / folder / name, array, is_label)
                else:
                    _write_3d(root / folder / name, array, is_label, affine)
            datalist[split].append({"image": f"images/{name}", "label": f"labels/{name}"})
            index += 1
    return write_datalist(datalist, root)
