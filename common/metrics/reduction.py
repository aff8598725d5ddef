"""MONAI's metric reduction, except that a mean over no defined value is NaN."""

from __future__ import annotations

import torch
from monai.metrics.utils import do_metric_reduction
from monai.utils import MetricReduction

__all__ = ["reduce_defined"]


def reduce_defined(values: torch.Tensor, reduction: MetricReduction | str) -> torch.Tensor:
    """``do_metric_reduction`` over the defined (non-NaN) values; NaN where there were none.

    MONAI reports 0 when every value is NaN, which reads as a perfect score for metrics where lower is better (an
    HD95 of 0 mm when every prediction was empty, no false positive when no class was ever absent).
    """
    value, not_nans = do_metric_reduction(values, reduction)
    return torch.where(not_nans > 0, value, torch.full_like(value, float("nan")))
