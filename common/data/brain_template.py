"""Affine registration of a head MR to the MNI ICBM152 2009a T1 template, with SimpleITK.

The template is the one ``nilearn`` ships in its package data (brain only, 1 mm, RAS), read straight from that file so
that nothing is downloaded. :func:`register_to_template` finds the affine map from template space (RAS mm) to a
scan's world space and says how well the scan fits the template, so that a scan which is not a head MR is refused
instead of segmented.
"""

from __future__ import annotations

import functools
import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["TemplateFit", "mni152_template_path", "register_to_template", "sitk_image"]

#: nilearn's copy of the MNI ICBM152 2009a (symmetric, non-linear) T1 template, brain only, 1 mm
_TEMPLATE_FILE = "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
#: registration grid: the template at 2 mm (the hippocampus boxes are cut at 1 mm afterwards)
_GRID_MM = 2.0
#: RAS ↔ LPS (nibabel / MONAI world coordinates are RAS, ITK's are LPS)
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class TemplateFit:
    """The outcome of :func:`register_to_template`.

    Attributes:
        matrix: ``4×4`` affine from template RAS mm to scan RAS mm.
        similarity: Pearson correlation of the template and the registered scan inside the template's brain
            (1 for the template itself, about 0.55-0.75 for a T1 head MR of another person, near 0 for other images).
        scales: the registration's scale factors along the template's axes (singular values of the linear part):
            about 0.8-1.25 for an adult head.
        seconds: time spent.
    """

    matrix: np.ndarray
    similarity: float
    scales: tuple[float, float, float]
    seconds: float


def mni152_template_path() -> Path:
    """The template file inside the installed ``nilearn`` package (found without importing nilearn, which is slow)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("whole-brain scans need the MNI152 template shipped in nilearn: pip install nilearn")
    path = Path(next(iter(spec.submodule_search_locations))) / _TEMPLATE_FILE
    if not path.is_file():
        raise ImportError(f"{path}: the MNI152 template is missing from this nilearn installation")
    return path


def sitk_image(array: np.ndarray, affine: np.ndarray):
    """A SimpleITK image of a ``X×Y×Z`` array whose voxel ``(i, j, k)`` lies at ``affine @ (i, j, k, 1)`` (RAS mm)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))
    linear = _RAS_TO_LPS @ np.asarray(affine, dtype=np.float64)[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(v) for v in (linear / spacing).flatten()])
    image.SetOrigin([float(v) for v in _RAS_TO_LPS @ np.asarray(affine, dtype=np.float64)[:3, 3]])
    return image


@functools.lru_cache(maxsize=1)
def _template():
    """The template at the registration grid, and its brain mask (where the template is not 0)."""
    import nibabel as nib
    import SimpleITK as sitk

    source = nib.load(str(mni152_template_path()))
    image = sitk_image(np.asarray(source.dataobj, dtype=np.float32), source.affine)
    image = sitk.Shrink(sitk.SmoothingRecursiveGaussian(image, _GRID_MM / 2), [int(_GRID_MM)] * 3)
    mask = sitk.Cast(image > 0.05 * float(sitk.GetArrayViewFromImage(image).max()), sitk.sitkUInt8)
    return image, mask


def _to_grid(scan):
    """The scan smoothed and subsampled to about the registration grid (a 1 mm scan is too fine to register fast)."""
    import SimpleITK as sitk

    factors = [max(1, int(round(_GRID_MM / s))) for s in scan.GetSpacing()]
    scan = sitk.Cast(scan, sitk.sitkFloat32)
    if max(factors) == 1:
        return scan
    return sitk.BinShrink(scan, factors)  # block means: subsampled without aliasing, 8× faster than smoothing first


def _registration(fixed_mask, shrink: list[int], sigmas: list[float], iterations: int):
    import SimpleITK as sitk

    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    # only template brain voxels count: a scan's skull, scalp and neck have no partner in a brain-only template
    method.SetMetricFixedMask(fixed_mask)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.15, seed=1)  # a fixed seed (0 would be sitkWallClock): same scan, same fit
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-3, numberOfIterations=iterations, relaxationFactor=0.6
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(shrink)
    method.SetSmoothingSigmasPerLevel(sigmas)
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return method


def _starting_points(fixed, moving):
    """Affine starting points: the scan's centre of mass on the template's (and the same shifted up and down, for
    whole-head scans whose neck pulls the centre of mass down), and the centres of the two fields of view."""
    import SimpleITK as sitk

    starts = []
    for mode in (sitk.CenteredTransformInitializerFilter.MOMENTS, sitk.CenteredTransformInitializerFilter.GEOMETRY):
        start = sitk.CenteredTransformInitializer(fixed, moving, sitk.AffineTransform(3), mode)
        starts.append(sitk.AffineTransform(start))
    for shift in (-30.0, 30.0):  # mm along the template's superior axis (LPS z)
        start = sitk.AffineTransform(starts[0])
        start.SetTranslation(np.add(start.GetTranslation(), (0.0, 0.0, shift)).tolist())
        starts.append(start)
    return starts


def _as_ras_matrix(transform) -> np.ndarray:
    """``4×4`` RAS matrix of an ITK affine transform (which maps LPS template points to LPS scan points)."""
    linear = np.asarray(transform.GetMatrix(), dtype=np.float64).reshape(3, 3)
    centre = np.asarray(transform.GetCenter(), dtype=np.float64)
    offset = np.asarray(transform.GetTranslation(), dtype=np.float64) + centre - linear @ centre
    matrix = np.eye(4)
    matrix[:3, :3] = _RAS_TO_LPS @ linear @ _RAS_TO_LPS
    matrix[:3, 3] = _RAS_TO_LPS @ offset
    return matrix


def register_to_template(array: np.ndarray, affine: np.ndarray) -> TemplateFit:
    """Register a scan to the MNI152 template with an affine map (mutual information, multi-resolution).

    Several starting points are tried at a coarse level and the best goes on to the fine levels, so a whole-head
    scan with its neck, a tilted head or a scan in any orientation starts near the right place.

    Args:
        array: ``X×Y×Z`` intensities of the scan.
        affine: its ``4×4`` voxel-to-RAS affine.
    """
    import SimpleITK as sitk

    # ITK's multi-threaded mutual information sums in an order that changes from run to run, and the fit (so the
    # labels) with it; on one thread the same scan gets the same fit every time, at about the same speed here
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        return _register(array, affine)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def _register(array: np.ndarray, affine: np.ndarray) -> TemplateFit:
    import SimpleITK as sitk

    started = time.perf_counter()
    fixed, mask = _template()
    moving = _to_grid(sitk_image(np.asarray(array, dtype=np.float32), affine))
    # the coarse level's images are made once for all starting points (each registration would smooth its own)
    fixed_coarse, moving_coarse = (sitk.Shrink(sitk.SmoothingRecursiveGaussian(image, 4.0), [4] * 3)
                                   for image in (fixed, moving))  # fmt: skip
    mask_coarse = sitk.Cast(sitk.BinShrink(sitk.Cast(mask, sitk.sitkFloat32), [4] * 3) > 0.5, sitk.sitkUInt8)
    best = None
    for start in _starting_points(fixed, moving):
        coarse = _registration(mask_coarse, shrink=[1], sigmas=[0.0], iterations=60)
        coarse.SetInitialTransform(start, inPlace=True)
        coarse.Execute(fixed_coarse, moving_coarse)
        if best is None or coarse.GetMetricValue() < best[0]:
            best = (coarse.GetMetricValue(), start)
    fine = _registration(mask, shrink=[2, 1], sigmas=[2.0, 0.0], iterations=150)
    fine.SetInitialTransform(best[1], inPlace=True)
    fine.Execute(fixed, moving)
    transform = best[1]
    registered = sitk.Resample(moving, fixed, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    inside = sitk.GetArrayViewFromImage(mask) > 0
    template_values = sitk.GetArrayViewFromImage(fixed)[inside]
    scan_values = sitk.GetArrayViewFromImage(registered)[inside]
    similarity = 0.0
    if scan_values.std() > 0:
        similarity = float(np.corrcoef(template_values, scan_values)[0, 1])
    matrix = _as_ras_matrix(transform)
    scales = tuple(float(s) for s in np.linalg.svd(matrix[:3, :3], compute_uv=False))
    return TemplateFit(matrix, similarity, scales, time.perf_counter() - started)
