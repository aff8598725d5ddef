"""Segmentation losses shared by the bundles (MONAI's losses are used directly wherever MONAI has them)."""

from .boundary_ramp import WithBoundaryLoss
from .composite import CompositeSegmentationLoss, soft_iou
from .focal_tversky import FocalTverskyLoss
from .mask_classification import MaskClassificationLoss
from .structure import StructureLoss
from .with_auxiliary import WithAuxiliaryLoss

__all__ = [
    "CompositeSegmentationLoss",
    "FocalTverskyLoss",
    "MaskClassificationLoss",
    "StructureLoss",
    "WithAuxiliaryLoss",
    "WithBoundaryLoss",
    "soft_iou",
]
