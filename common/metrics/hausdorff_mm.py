"""Hausdorff distance in millimetres: MONAI's metric, given each case's voxel spacing."""

from __future__ import annotations

from collections.abc import Sequence

from monai.data import MetaTensor
from monai.handlers import IgniteMetricHandler
from monai.metrics import HausdorffDistanceMetric

from .reduction import reduce_defined

__all__ = ["HausdorffDistanceMm"]


class _HausdorffDistanceNanAware(HausdorffDistanceMetric):
    """MONAI's metric whose mean over no defined distance is NaN (every prediction empty), not "0 mm"."""

    def aggregate(self, reduction=None):
        return reduce_defined(self.get_buffer(), reduction or self.reduction)


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
        for pred, label in zip(y_pred, y):
            spatial_dims = label.ndim - 1
            spacing = [float(s) for s in label.pixdim[:spatial_dims]] if isinstance(label, MetaTensor) else None
            # one call per case: MONAI takes one spacing for a whole batch unless given per-case sequences
            self.metric_fn([pred], [label], spacing=spacing)
