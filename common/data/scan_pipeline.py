"""The scan pipeline every bundle's ``inference.json`` runs: one definition, so that the four bundles cannot drift.

The configs keep the settings (``intensity``, ``whole_brain``, ``fov_diameter``, ``save_probabilities``, ...) and
build the two halves with these functions; MONAI Label's bundle task and ``Invertd`` read the returned ``Compose``
like a list written in JSON.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from monai.transforms import Compose, EnsureTyped, Invertd, KeepLargestConnectedComponentd, Orientationd

from .class_volumes import SaveClassVolumesd
from .field_of_view_scale import ScaleFieldOfViewd
from .intensity import ScaleScanIntensityd
from .logits_to_labels import LogitsToLabelsd, ProbabilitiesToLabelsd
from .montage import SaveMontaged
from .save_scan_label import SaveScanLabeld
from .scan_io import LoadScand
from .served_label import LabelForMonaiLabeld
from .template_regions import CropTemplateRegionsd
from .transforms import ClearOutsideFieldOfViewd

__all__ = ["scan_postprocessing", "scan_preprocessing"]


def scan_preprocessing(
    label_names: Mapping[str, str],
    intensity: str | None,
    dimension: int | None = None,
    accepted_input: Mapping | None = None,
    fov_diameter: float | None = None,
    whole_brain: bool | str = False,
) -> Compose:
    """Read one scan or picture and bring it to what the adapter was trained on (``image`` key only).

    Steps: :class:`LoadScand` (refuses, with one line, another kind of input than ``accepted_input`` from
    metadata.json: a volume given to the fundus bundle, a picture or a CT given to a hippocampus bundle; None
    accepts any) → :class:`ScaleFieldOfViewd` (colour fundus pictures: the camera's field of view resampled to
    ``fov_diameter`` pixels across, as in training; None leaves the picture) → :class:`CropTemplateRegionsd` (a
    whole-brain T1: both hippocampi found by registration to the MNI152 template and cut as the boxes the adapter
    was trained on; a crop like MSD's passes unchanged) → ``Orientationd`` RAS → :class:`ScaleScanIntensityd`
    (``intensity``: ``"mr"``, a CT window, ...) → ``EnsureTyped``. Every step is invertible, so
    :func:`scan_postprocessing` takes the results back to the input's grid.
    """
    return Compose(
        [
            LoadScand("image", dimension=dimension, accepted_input=accepted_input, image_only=True),
            ScaleFieldOfViewd("image", reference_diameter=fov_diameter),
            CropTemplateRegionsd("image", label_names=label_names, whole_brain=whole_brain),
            Orientationd("image", axcodes="RAS"),
            ScaleScanIntensityd("image", intensity=intensity),
            EnsureTyped("image"),
        ]
    )


def scan_postprocessing(
    preprocessing: Compose,
    output_dir: str,
    label_names: Mapping[str, str],
    output_rule: str,
    probability_threshold: float = 0.5,
    save_probabilities: bool = False,
    labels_at_input_size: bool = False,
    field_of_view: bool = False,
    keep_largest_component: bool = False,
    save_extras: bool = True,
    slice_axis: int = 2,
) -> Compose:
    """Logits (``pred``, ``K×…``) → the label map written in the input's geometry, with its montage and volumes.

    Steps: :class:`LogitsToLabelsd` by the network's ``output_rule`` (probabilities kept as ``prob`` when
    ``save_probabilities`` or ``labels_at_input_size``) → [``field_of_view``] :class:`ClearOutsideFieldOfViewd`
    (0 outside the field of view of a colour picture: a fundus camera's dark surround) → [``keep_largest_component``]
    ``KeepLargestConnectedComponentd`` per label → [``save_extras``] :class:`SaveMontaged` → ``Invertd`` through
    ``preprocessing`` (labels nearest, probabilities smoothly; whole-brain boxes pasted back, one value per structure
    and side) → [``labels_at_input_size``] :class:`ProbabilitiesToLabelsd` (labels thresholded from the probabilities
    resampled to the input's size, not resampled as labels) → [``save_extras``] :class:`SaveClassVolumesd` →
    :class:`SaveScanLabeld` ``<name>_seg`` (uint8) → [``save_probabilities``] ``<name>_prob`` (float32: TIFF for 2D
    pictures, whose metadata NIfTI writers cannot take; NIfTI for volumes) → [not ``save_extras``, i.e. when MONAI
    Label serves the bundle] :class:`LabelForMonaiLabeld` (2D label maps without their channel axis).
    """
    keep_probabilities = save_probabilities or labels_at_input_size
    keys = ["pred", "prob"] if keep_probabilities else ["pred"]
    transforms = [
        LogitsToLabelsd(
            "pred",
            rule=output_rule,
            probabilities_key="prob" if keep_probabilities else None,
            threshold=probability_threshold,
        )
    ]
    if field_of_view:
        transforms.append(ClearOutsideFieldOfViewd(keys, image_key="image"))
    if keep_largest_component:
        applied = [int(k) for k in label_names]
        transforms.append(KeepLargestConnectedComponentd("pred", applied_labels=applied, independent=True))
    if save_extras:
        transforms.append(
            SaveMontaged("pred", label_names=label_names, image_key="image", output_dir=output_dir,
                         spatial_axis=slice_axis)  # fmt: skip
        )
    transforms.append(
        Invertd(keys, transform=preprocessing, orig_keys="image", nearest_interp=[True, False][: len(keys)])
    )
    if labels_at_input_size:
        transforms.append(
            ProbabilitiesToLabelsd("prob", labels_key="pred", rule=output_rule, threshold=probability_threshold)
        )
    if save_extras:
        transforms.append(SaveClassVolumesd("pred", label_names=label_names, image_key="image", output_dir=output_dir))
    save = {"output_dir": output_dir, "separate_folder": False, "print_log": False}
    transforms.append(SaveScanLabeld("pred", output_postfix="seg", output_dtype=np.uint8, **save))
    if save_probabilities:
        transforms.append(
            SaveScanLabeld("prob", output_postfix="prob", image_ext=".tif", volume_ext=".nii.gz",
                           output_dtype=np.float32, **save)  # fmt: skip
        )
    if not save_extras:
        transforms.append(LabelForMonaiLabeld("pred"))
    return Compose(transforms)
