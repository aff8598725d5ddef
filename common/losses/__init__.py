"""Segmentation losses shared by the bundles (MONAI's losses are used directly wherever MONAI has them)."""

from .composite import CompositeSegmentationLoss, soft_iou
from .focal_tversky import FocalTverskyLoss

__all__ = ["CompositeSegmentationLoss", "FocalTverskyLoss", "soft_iou"]
