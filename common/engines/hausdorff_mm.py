"""Hausdorff distance in millimetres: MONAI's metric, given each case's voxel spacing."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.data import MetaTensor
from monai.handlers import IgniteMetricHandler
from monai.metrics import HausdorffDistanceMetric
from monai.metrics.utils import do_metric_reduction

__all__ = ["HausdorffDistanceMm"]


class _HausdorffDistanceNanAware(HausdorffDistanceMetric):
    """MONAI's metric, except that a mean over no defined value is NaN instead of 0: HD95 is undefined for a case
    whose prediction (or ground truth) is empty, and a run that predicted nothing must not read as "0 mm"."""

    def aggregate(self, reduction=None):
        value, not_nans = do_metric_reduction(self.get_buffer(), reduction or self.reduction)
        return torch.where(not_nans > 0, value, torch.full_like(value, float("nan")))


class HausdorffDistanceMm(IgniteMetricHandler):
    """MONAI's ``HausdorffDistance`` handler measured in millimetres.

    MONAI's handler calls the metric without spacing, so its distances are in voxels; this one reads each case's
    voxel size from the ground truth's affine (``MetaTensor.pixdim``, as loaded) and passes it on. Cases without
    metadata fall back to voxels (spacing 1). Where no case has a defined distance (e.g. every prediction empty) the
    mean is NaN, not MONAI's 0.

    Args:
        include_background, percentile, distance_metric, directed, reduction, save_details: as MONAI's handler.
        output_transform: gives ``(y_pred, y)`` as lists of ``C×spatial`` tensors (``from_engine(['pred', 'label'])``).
    """

    def __init__(
        self,
        include_background: bool = False,
        percentile: float | None = 95,
        distance_metric: str = "euclidean",
        directed: bool = False,
        reduction: str = "mean",
        output_transform=lambda x: x,
        save_details: bool = True,
    ) -> None:
        metric = _HausdorffDistanceNanAware(
            include_background=include_background,
            distance_metric=distance_metric,
            percentile=percentile,
            directed=directed,
            reduction=reduction,
        )
        super().__init__(metric_fn=metric, output_transform=output_transform, save_details=save_details)

    def update(self, output: Sequence) -> None:
        if len(output) != 2:
            raise ValueError(f"output must have length 2, got {len(output)}.")
        y_pred, y = output
        cases = y if isinstance(y, (list, tuple)) else list(y)
        spatial_dims = cases[0].ndim - 1
        spacing = [
            [float(s) for s in case.pixdim[:spatial_dims]] if isinstance(case, MetaTensor) else [1.0] * spatial_dims
            for case in cases
        ]
        for pred, label, case_spacing in zip(y_pred, cases, spacing):
            # one call per case: MONAI takes one spacing for a whole batch unless given per-case sequences
            self.metric_fn([pred], [label], spacing=case_spacing)
