"""What kind of scan a bundle segments, and the check that refuses another kind before anything is written.

A bundle trained on MR hippocampus crops labels "hippocampus" somewhere in an abdominal CT, and a fundus bundle
labels "vessels" in an MR volume, both without an error. Each bundle's ``metadata.json`` declares what its shipped
adapter segments (``accepted_input``: the dimension and the modality); an input that contradicts it is refused with
one line naming the file, what it is and what the bundle expects. Configs for other data (the CT overlays, 2D
pictures) set their own ``accepted_input``; ``allow_other_inputs=true`` turns the check off.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch

__all__ = ["accepted_input", "input_kind_problem", "looks_like_ct"]

#: CT voxels hold Hounsfield units: air is -1000, so a CT volume has many voxels far below 0 (the air around the
#: body, in the lungs and bowel). MR intensities are magnitudes (0 and above, whatever the scaling).
_AIR_HU = -500.0
#: the share of voxels at air density above which a volume is taken for CT (a CT cropped to an organ may have none,
#: so a volume below it is not called MR either: only the MR → CT contradiction is decided on intensities)
_CT_AIR_FRACTION = 0.02


def accepted_input(bundle_root: str | os.PathLike) -> dict | None:
    """The ``accepted_input`` entry of ``<bundle_root>/configs/metadata.json`` (``{"dimension": 2 or 3, "modality":
    "MR" / "CT" / ... or null}``), or None when the file or the entry is missing (nothing is then checked; a wrong
    ``bundle_root`` is reported by :func:`common.engines.require_inference_files`)."""
    metadata = Path(bundle_root) / "configs" / "metadata.json"
    if not metadata.is_file():
        return None
    entry = json.loads(metadata.read_text()).get("accepted_input")
    return {k: v for k, v in entry.items() if not k.startswith("_")} if entry else None


def looks_like_ct(image: torch.Tensor) -> bool:
    """Whether a volume's values are Hounsfield units (see ``_CT_AIR_FRACTION``). The DICOM modality tag, when the
    reader kept it (``0008|0060`` in the metadata), decides instead."""
    tag = str(getattr(image, "meta", {}).get("0008|0060", "")).strip().upper()
    if tag:
        return tag == "CT"
    values = torch.as_tensor(image).flatten()
    values = values[:: max(1, values.numel() // 2_000_000)].float()  # a sample is enough for a share
    return bool(values.numel()) and float((values < _AIR_HU).float().mean()) >= _CT_AIR_FRACTION


def input_kind_problem(image: torch.Tensor, path: str | os.PathLike, dimension: int, accepted: Mapping | None) -> str:
    """One line saying why a loaded scan is not what the bundle segments, or ``""`` when it is.

    Args:
        image: the scan as loaded (``C×H×W`` picture or ``1×H×W×D`` volume).
        path: its file, for the message.
        dimension: 2 or 3, what the input is.
        accepted: the bundle's ``accepted_input`` (None: anything is accepted).
    """
    if not accepted:
        return ""
    expected_dimension, modality = accepted.get("dimension"), accepted.get("modality")
    nouns = {2: "pictures", 3: "volumes"}.get(expected_dimension, "inputs")
    what = " ".join(str(p) for p in (f"{expected_dimension}D" if expected_dimension else "", modality, nouns) if p)
    advice = "use a bundle or config for this kind of input, or set allow_other_inputs=true to segment it anyway"
    if expected_dimension is not None and dimension != expected_dimension:
        found = f"a 2D picture of {tuple(image.shape[1:])} pixels" if dimension == 2 else "a 3D volume"
        return f"{path}: {found}, but this bundle segments {what}; {advice}"
    if dimension == 3 and modality == "MR" and looks_like_ct(image):
        values = torch.as_tensor(image)
        return (
            f"{path}: looks like CT (values down to {float(values.min()):.0f}, air in Hounsfield units), but this "
            f"bundle segments {what}; {advice}"
        )
    return ""
