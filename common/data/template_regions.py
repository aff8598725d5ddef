"""Whole-brain scans in, structures out: find each structure's box by registration to a brain template, segment
the boxes as the adapters were trained (MSD-style crops), and paste the labels back into the scan's own grid.

The hippocampus adapters were trained on MSD Task04 boxes: about 36×50×36 voxels at 1 mm around one hippocampus,
axes along R, A, S. A clinic's T1 is the whole head. :class:`CropTemplateRegionsd` (in ``inference.json``'s
preprocessing, right after loading) tells the two apart by the scan's size; for a whole-brain scan it registers the
scan to the MNI ICBM152 template (:mod:`common.data.brain_template`), cuts one box per side at 1 mm along the
template's axes, and hands the boxes on stacked along the slicing axis (the adapters segment slice by slice, so the
boxes do not see each other). Its inverse (run by ``Invertd`` in the postprocessing) resamples each box's labels into
the scan's grid, with the label values of its side.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform

from .brain_template import register_to_template
from .scan_io import ScanInputError

__all__ = [
    "HIPPOCAMPUS_BOXES",
    "CropTemplateRegionsd",
    "TemplateBox",
    "side_label_names",
    "side_warnings",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TemplateBox:
    """A box around one structure in MNI ICBM152 space.

    Attributes:
        side: its name in the outputs (``"left"``: labels 1..K become ``left <name>``).
        centre_mm: centre, template RAS mm.
        size: voxels at 1 mm along the template's R, A, S axes.
        mirror: cut mirrored left-right, so that it looks like the training boxes (see :data:`HIPPOCAMPUS_BOXES`).
    """

    side: str
    centre_mm: tuple[float, float, float]
    size: tuple[int, int, int]
    mirror: bool = False

    def affine(self) -> np.ndarray:
        """``4×4`` voxel → template RAS mm (1 mm voxels; x reversed when mirrored)."""
        matrix = np.diag([-1.0 if self.mirror else 1.0, 1.0, 1.0, 1.0])
        half = (np.asarray(self.size, dtype=np.float64) - 1) / 2
        matrix[:3, 3] = np.asarray(self.centre_mm) - matrix[:3, :3] @ half
        return matrix


#: Both hippocampi in MNI ICBM152 2009a space. Centres: the hippocampi of the template lie around x = ±28,
#: y = −21, z = −14 mm (FreeSurfer's hippocampi of the sample subject "bert", mapped to the template by
#: :func:`~common.data.brain_template.register_to_template`, have their centroids at (−29, −20, −15) and
#: (29, −21, −15)). Size: that of MSD's boxes (median 35×50×36 voxels at 1 mm), 4 mm deeper to hold FreeSurfer's
#: larger hippocampus. MSD's boxes all show the hippocampus as a left one does in RAS (the head, label 1, lies medial
#: of the tail, at larger x, in 80 % of them), so the right box is cut mirrored.
HIPPOCAMPUS_BOXES: tuple[TemplateBox, ...] = (
    TemplateBox("left", (-28.0, -21.0, -13.0), (36, 52, 40)),
    TemplateBox("right", (28.0, -21.0, -13.0), (36, 52, 40), mirror=True),
)

#: Intensity percentiles of MSD Task04's training boxes (182 volumes, each scaled between its 0.5 and 99.5
#: percentiles as inference.json does; mean over the volumes, spread 0.004-0.036). A box cut from another scanner's
#: or another pipeline's T1 is mapped onto them (:func:`standardise_intensities`) so that grey matter, white matter
#: and fluid reach the adapter at the contrast it was trained on.
MSD_HIPPOCAMPUS_INTENSITY_LANDMARKS: dict[float, float] = {
    0.5: 0.0, 1: 0.015, 2: 0.037, 5: 0.09, 10: 0.177, 20: 0.295, 30: 0.37, 40: 0.448, 50: 0.54, 60: 0.637,
    70: 0.718, 80: 0.789, 90: 0.856, 95: 0.896, 98: 0.938, 99: 0.967, 99.5: 1.0,
}


def side_label_names(label_names: Mapping[str, str], boxes: Sequence[TemplateBox]) -> dict[str, str]:
    """Label values of a whole-brain map: box ``b``'s label ``l`` (1..K) becomes ``b·K + l``, named ``<side> <name>``
    (``{"1": "left anterior hippocampus", ..., "4": "right posterior hippocampus"}``)."""
    count = len(label_names)
    return {
        str(index * count + int(label)): f"{box.side} {name}"
        for index, box in enumerate(boxes)
        for label, name in sorted(label_names.items(), key=lambda item: int(item[0]))
    }


def side_warnings(
    labels: np.ndarray, voxel_ml: float, sides: Mapping[str, Sequence[int]], volume_range_ml: Sequence[float]
) -> tuple[dict[str, float], list[str]]:
    """Each side's total volume, and what is implausible about it: no structure, several separate regions, or a
    volume outside ``volume_range_ml`` (the normal adult range per side).

    Args:
        labels: ``X×Y×Z`` integer label map.
        voxel_ml: one voxel's volume.
        sides: ``{"left": [1, 2], ...}``: the label values of each side.
        volume_range_ml: (lowest, highest) plausible volume of one side.

    Returns:
        ``({side: mL}, [warning, ...])``.
    """
    from scipy import ndimage

    totals, warnings = {}, []
    for side, values in sides.items():
        mask = np.isin(labels, list(values))
        volume = float(mask.sum()) * voxel_ml
        totals[side] = volume
        if not mask.any():
            warnings.append(f"no {side} structure found")
            continue
        regions, count = ndimage.label(mask, structure=np.ones((3, 3, 3)))
        if count > 1:
            largest = np.bincount(regions.ravel())[1:].max() / mask.sum()
            if largest < 0.9:  # a few stray voxels are harmless; a second sizeable region is not one structure
                warnings.append(f"the {side} structure is {count} separate regions (the largest holds {largest:.0%})")
        low, high = volume_range_ml
        if not low <= volume <= high:
            warnings.append(f"the {side} volume {volume:.2f} mL is outside the normal adult range {low}-{high} mL")
    return totals, warnings


def standardise_intensities(image: np.ndarray, landmarks: Mapping[float, float]) -> np.ndarray:
    """Map an image's intensity percentiles onto reference values, linearly between them (Nyúl and Udupa's histogram
    standardisation): ``{percentile: value}``; values beyond the first and last landmark are clipped to them."""
    percentiles = sorted(landmarks)
    sources = np.percentile(image, percentiles)
    sources = np.maximum.accumulate(sources + np.arange(len(sources)) * 1e-6)  # equal percentiles (flat regions)
    return np.interp(image, sources, [landmarks[p] for p in percentiles]).astype(np.float32)


def _resample(array: np.ndarray, voxel_map: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    """``array`` sampled on a grid of ``shape`` whose voxel ``v`` lies at ``voxel_map @ v`` in ``array``'s voxels."""
    from scipy import ndimage

    return ndimage.affine_transform(
        array, voxel_map[:3, :3], offset=voxel_map[:3, 3], output_shape=tuple(shape), order=order, mode="constant"
    )


class CropTemplateRegionsd(MapTransform, InvertibleTransform):
    """A whole-brain scan → its template boxes stacked along the last axis; a crop → unchanged. Inverse: labels (or
    probabilities) of the boxes → the scan's own grid, with one label value per structure and side.

    Which case a scan is: ``whole_brain="auto"`` decides by size (a scan longer than ``max_crop_extent_mm`` along
    any axis is a whole brain: MSD's crops are at most 54 mm) and logs the decision; ``True`` or ``False`` force it.
    A whole-brain scan whose registration to the template fits badly (correlation below ``min_similarity``, or a
    scale outside ``scale_range``) is refused with a :class:`~common.data.ScanInputError` naming the scan and the
    reason. 2D pictures pass unchanged.

    Input: ``1×X×Y×Z`` MetaTensor (RAS affine). Output: ``1×X'×Y'×(n·Z')`` at 1 mm, the boxes of
    :data:`HIPPOCAMPUS_BOXES` one after the other along the last axis, with the RAS affine of the first box.

    Args:
        keys: the image key.
        label_names: ``{"1": "anterior hippocampus", ...}``: the labels a box is segmented into.
        whole_brain: ``"auto"``, ``True`` or ``False``.
        boxes: one box per structure.
        max_crop_extent_mm: the largest extent of a crop.
        min_brain_extent_mm: a whole-brain scan thinner than this along any axis is refused before registration.
        min_similarity: the lowest template correlation accepted (see :class:`~common.data.brain_template.TemplateFit`).
        scale_range: the registration's accepted scale factors (lowest, highest).
        volume_range_ml: a side's plausible volume (lowest, highest): outside it the result is written with a
            warning.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_names: Mapping[str, str],
        whole_brain: str | bool = "auto",
        boxes: Sequence[TemplateBox] = HIPPOCAMPUS_BOXES,
        max_crop_extent_mm: float = 100.0,
        min_brain_extent_mm: float = 60.0,
        min_similarity: float = 0.35,
        scale_range: Sequence[float] = (0.7, 1.4),
        volume_range_ml: Sequence[float] = (2.0, 6.0),
        intensity_landmarks: Mapping[float, float] | None = MSD_HIPPOCAMPUS_INTENSITY_LANDMARKS,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if whole_brain not in ("auto", True, False):
            raise ValueError(f"whole_brain must be 'auto', true or false, got {whole_brain!r}")
        if len({tuple(box.size) for box in boxes}) != 1:
            raise ValueError("the boxes must have one size (they are stacked for slice-by-slice inference)")
        self.label_names = {str(k): v for k, v in label_names.items()}
        self.whole_brain = whole_brain
        self.boxes = tuple(boxes)
        self.max_crop_extent_mm = max_crop_extent_mm
        self.min_brain_extent_mm = min_brain_extent_mm
        self.min_similarity = min_similarity
        self.scale_range = tuple(scale_range)
        self.volume_range_ml = tuple(volume_range_ml)
        self.intensity_landmarks = None if intensity_landmarks is None else dict(intensity_landmarks)

    def _is_whole_brain(self, extent: np.ndarray, path: str) -> bool:
        whole = self.whole_brain if self.whole_brain != "auto" else bool(extent.max() > self.max_crop_extent_mm)
        size = "×".join(f"{e:.0f}" for e in extent)
        how = "set by whole_brain" if self.whole_brain != "auto" else f"longest side vs {self.max_crop_extent_mm:g} mm"
        logger.info("%s: %s mm: %s (%s)", path, size,
                    "a whole brain: the structures are located first" if whole else "a crop: segmented as it is", how)
        return whole

    def _fit(self, image: MetaTensor, extent: np.ndarray, path: str):
        """The scan's fit to the template, or the one error that says why it has none worth using."""
        thinnest = float(extent.min())
        fit = None
        if thinnest < self.min_brain_extent_mm:  # a slab, or a picture saved as a volume: nothing to register
            reason = (f"it is only {thinnest:.0f} mm thick along one axis (a whole brain spans at least "
                      f"{self.min_brain_extent_mm:g} mm along each)")  # fmt: skip
        else:
            try:
                fit = register_to_template(np.asarray(image[0].detach().cpu(), dtype=np.float32),
                                           np.asarray(image.affine))  # fmt: skip
            except RuntimeError as error:  # ITK's refusals (e.g. no overlap with the template at all)
                reason = f"registration to the MNI152 brain template failed ({str(error).strip().splitlines()[-1]})"
            else:
                reason = self._misfit(fit)
        if reason is not None:
            raise ScanInputError(
                f"{path}: not a T1 MR of the head in which the hippocampi can be found: {reason}. Pass a T1 head MR, "
                "or a crop around one hippocampus (whole_brain=false)"
            )
        logger.info("%s: registered to the MNI152 template in %.1f s (correlation %.2f, scales %s)", path,
                    fit.seconds, fit.similarity, ", ".join(f"{s:.2f}" for s in fit.scales))  # fmt: skip
        return fit

    def _misfit(self, fit) -> str | None:
        """Why a registration result cannot be trusted (too little likeness, implausible scaling), or None."""
        low, high = self.scale_range
        if fit.similarity < self.min_similarity:
            return (f"its correlation with the MNI152 brain template after affine registration is "
                    f"{fit.similarity:.2f}, below {self.min_similarity:g}")  # fmt: skip
        if not all(low <= s <= high for s in fit.scales):
            return (f"registering it to the MNI152 brain template needs scale factors "
                    f"{', '.join(f'{s:.2f}' for s in fit.scales)}, outside {low:g}-{high:g}")  # fmt: skip
        return None

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            path = str(image.meta.get("filename_or_obj", key)) if isinstance(image, MetaTensor) else str(key)
            if not isinstance(image, MetaTensor) or image.ndim != 4:
                if isinstance(image, MetaTensor):
                    self.push_transform(image, extra_info={"whole_brain": False})
                continue
            # the scan's size in mm along each axis decides the path and, for a whole brain, whether it can be one
            extent = np.linalg.norm(np.asarray(image.affine, dtype=np.float64)[:3, :3], axis=0) * image.shape[1:]
            if not self._is_whole_brain(extent, path):
                self.push_transform(image, extra_info={"whole_brain": False})
                continue
            fit = self._fit(image, extent, path)
            scan = np.asarray(image[0].detach().cpu(), dtype=np.float32)
            to_scan_voxels = np.linalg.inv(np.asarray(image.affine, dtype=np.float64)) @ fit.matrix
            crops = [_resample(scan, to_scan_voxels @ box.affine(), box.size, order=1) for box in self.boxes]
            if self.intensity_landmarks is not None:
                crops = [standardise_intensities(crop, self.intensity_landmarks) for crop in crops]
            first = self.boxes[0].affine()
            first[0] = np.abs(first[0])  # the stack's affine is only for display and RAS checks: axes R, A, S
            stacked = MetaTensor(
                torch.from_numpy(np.concatenate(crops, axis=2)[None]).to(image.dtype),
                affine=torch.as_tensor(first),
                meta={k: v for k, v in image.meta.items() if k != "affine"},
                applied_operations=image.applied_operations,
            )
            stacked.meta["template_boxes"] = [{"side": box.side, "mirror": box.mirror} for box in self.boxes]
            stacked.meta["template_fit"] = {
                "correlation": round(fit.similarity, 4),
                "scales": [round(s, 4) for s in fit.scales],
                "seconds": round(fit.seconds, 3),
            }
            self.push_transform(
                stacked,
                orig_size=tuple(image.shape[1:]),
                extra_info={
                    "whole_brain": True,
                    "scan_affine": np.asarray(image.affine, dtype=np.float64).tolist(),
                    "template_to_scan": fit.matrix.tolist(),
                },
            )
            d[key] = stacked
        return d

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            operation = self.pop_transform(d[key])
            info = operation["extra_info"]
            if not info["whole_brain"]:
                continue
            d[key] = self._paste(d[key], info, tuple(int(s) for s in operation["orig_size"]))
        return d

    def _paste(self, boxes: torch.Tensor, info: dict, shape: tuple[int, ...]) -> MetaTensor:
        """Box labels (``1×X'×Y'×(n·Z')``) → ``1×X×Y×Z`` labels of the scan; box probabilities (``(1+K)×…``, channel
        0 background) → ``(1+n·K)×X×Y×Z`` probabilities in the order of the side labels."""
        array = np.asarray(torch.as_tensor(boxes).detach().cpu().float())
        scan_affine = np.asarray(info["scan_affine"])
        template_to_scan = np.asarray(info["template_to_scan"])
        count, depth = len(self.label_names), self.boxes[0].size[2]
        labels = array.shape[0] == 1
        pasted = np.zeros((1 if labels else 1 + len(self.boxes) * count, *shape), np.float32)
        for index, box in enumerate(self.boxes):
            # scan voxel → box voxel, on the part of the scan the box covers
            to_box = np.linalg.inv(np.linalg.inv(scan_affine) @ template_to_scan @ box.affine())
            low, high = self._covered(box, np.linalg.inv(to_box), shape)
            block = np.eye(4)
            block[:3, 3] = low
            part = array[:, :, :, index * depth : (index + 1) * depth]
            region = tuple(slice(a, b) for a, b in zip(low, high))
            if labels:
                # each label's mask interpolated linearly and the largest taken: smoother and truer to the box than
                # the nearest box voxel, on a scan grid of any spacing and angle
                masks = np.stack([_resample((part[0] == value).astype(np.float32), to_box @ block, high - low, 1)
                                  for value in range(count + 1)])  # fmt: skip
                values = masks.argmax(axis=0)
                inside = (masks.max(axis=0) > 0) & (values > 0)
                side = pasted[0][region]
                side[inside] = values[inside] + index * count
            else:
                for channel in range(1, 1 + count):
                    pasted[index * count + channel][region] = _resample(part[channel], to_box @ block, high - low, 1)
        if not labels:
            pasted[0] = np.clip(1.0 - pasted[1:].sum(axis=0), 0.0, 1.0)
        meta = {k: v for k, v in getattr(boxes, "meta", {}).items() if k not in ("affine", "template_boxes")}
        meta["label_names"] = side_label_names(self.label_names, self.boxes)
        meta["sides"] = {box.side: [index * count + int(k) for k in self.label_names]
                         for index, box in enumerate(self.boxes)}  # fmt: skip
        meta["volume_range_ml"] = list(self.volume_range_ml)
        # the transforms before this one (their traces) are still to be inverted
        return MetaTensor(torch.from_numpy(pasted), affine=torch.as_tensor(scan_affine), meta=meta,
                          applied_operations=list(getattr(boxes, "applied_operations", [])))  # fmt: skip

    @staticmethod
    def _covered(box: TemplateBox, box_to_scan: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """The range of scan voxels ``[low, high)`` the box's corners span, within the scan."""
        corners = np.array(np.meshgrid(*[(-1, s) for s in box.size], indexing="ij")).reshape(3, -1)
        points = box_to_scan[:3, :3] @ corners + box_to_scan[:3, 3:4]
        low = np.clip(np.floor(points.min(axis=1)).astype(int), 0, np.asarray(shape))
        high = np.clip(np.ceil(points.max(axis=1)).astype(int) + 1, 0, np.asarray(shape))
        return low, np.maximum(high, low)
