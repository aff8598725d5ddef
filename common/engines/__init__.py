"""Additions to MONAI's engines that the bundles need (MONAI's own engines and handlers are used as they are)."""

from .gradient_clipping import GradientClipping
from .per_image_confusion import PerImageConfusionMatrix

__all__ = ["GradientClipping", "PerImageConfusionMatrix"]
