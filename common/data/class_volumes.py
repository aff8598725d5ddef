"""Per-class volumes (mL) of a predicted label map, as a small JSON next to the label file."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from .scan_io import scan_stem
from .template_regions import side_warnings

logger = logging.getLogger(__name__)

__all__ = ["SaveClassVolumesd", "class_volumes"]


def class_volumes(labels: torch.Tensor, label_names: Mapping[str, str]) -> dict:
    """Voxel counts and volumes of each class of a label map in the geometry it carries.

    Args:
        labels: ``1×H×W×D`` (or ``1×H×W`` for 2D) integer label map; a MetaTensor's affine gives the voxel size.
        label_names: ``{"1": "liver", ...}``.

    Returns:
        ``{"spacing_mm": [...], "voxel_volume_ml": v, "classes": {name: {"label": l, "voxels": n, "volume_ml":
        n·v}}}`` for volumes; for 2D images ``pixels``, and ``area_mm2`` only when the picture carries its pixel
        size (an affine other than the identity): photographs (PNG, JPEG) carry none, and a pixel count reported
        as mm² would be silently wrong (``spacing_mm`` is then null).
    """
    array = np.asarray(torch.as_tensor(labels).detach().cpu()).astype(np.int64)
    spatial = array.ndim - 1
    affine = np.asarray(getattr(labels, "affine", np.eye(spatial + 1)), dtype=np.float64)[:spatial, :spatial]
    spacing = np.linalg.norm(affine, axis=0)
    cell = float(abs(np.linalg.det(affine)))
    known = spatial == 3 or not np.allclose(affine, np.eye(spatial))
    report: dict = {"spacing_mm": [round(float(s), 6) for s in spacing] if known else None, "classes": {}}
    if spatial == 3:
        report["voxel_volume_ml"] = cell / 1000.0
    for label, name in sorted(label_names.items(), key=lambda item: int(item[0])):
        count = int((array == int(label)).sum())
        if spatial == 3:
            report["classes"][name] = {"label": int(label), "voxels": count, "volume_ml": count * cell / 1000.0}
        else:
            report["classes"][name] = {"label": int(label), "pixels": count}
            if known:
                report["classes"][name]["area_mm2"] = count * cell
    return report


class SaveClassVolumesd(MapTransform):
    """Write ``<scan>_volumes.json`` with :func:`class_volumes` of the label map and the input it came from.

    Place it after ``Invertd`` so the volumes are measured on the input's own grid. A whole-brain map (see
    :class:`~common.data.CropTemplateRegionsd`) is reported with its per-side names, each side's total under
    ``sides`` and a ``warnings`` list (also logged): a side without structure, in several regions, or with a volume
    outside the normal adult range.

    Args:
        keys: the label map key.
        label_names: ``{"1": "liver", ...}``.
        image_key: the image whose file name names the output.
        output_dir: folder to write into.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_names: Mapping[str, str],
        image_key: str = "image",
        output_dir: str | os.PathLike = ".",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_names = dict(label_names)
        self.image_key = image_key
        self.output_dir = Path(output_dir)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            source = str(getattr(d[self.image_key], "meta", {}).get("filename_or_obj", ""))
            meta = getattr(d[key], "meta", {})
            report = {"input": source}
            # a whole-brain scan's map carries its own names, one per structure and side (CropTemplateRegionsd)
            report.update(class_volumes(d[key], meta.get("label_names", self.label_names)))
            if "sides" in meta:
                labels = np.asarray(torch.as_tensor(d[key]).detach().cpu())[0].astype(np.int64)
                totals, warnings = side_warnings(labels, report["voxel_volume_ml"], meta["sides"],
                                                 meta["volume_range_ml"])  # fmt: skip
                report["sides"] = {side: {"labels": meta["sides"][side], "volume_ml": volume}
                                   for side, volume in totals.items()}  # fmt: skip
                report["warnings"] = warnings
                if "template_fit" in meta:
                    report["template_fit"] = meta["template_fit"]
                for warning in warnings:
                    logger.warning("%s: %s", source, warning)
            self.output_dir.mkdir(parents=True, exist_ok=True)
            path = self.output_dir / f"{scan_stem(d[self.image_key])}_volumes.json"
            path.write_text(json.dumps(report, indent=2) + "\n")
        return d
