"""Additions to MONAI's engines that the bundles need (MONAI's own engines and handlers are used as they are)."""

from .gradient_clipping import GradientClipping

__all__ = ["GradientClipping"]
