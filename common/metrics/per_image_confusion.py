"""Per-image confusion-matrix metrics (sensitivity, specificity, ...) as a MONAI metric handler."""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.handlers import IgniteMetricHandler
from monai.metrics import ConfusionMatrixMetric

__all__ = ["PerImageConfusionMatrix"]


class PerImageConfusionMatrix(IgniteMetricHandler):
    """A confusion-matrix metric computed image by image: the mean over images is the metric value, and the
    per-image values (``B×C``) go to ``engine.state.metric_details`` so that ``MetricsSaver`` writes them.

    MONAI's ``ConfusionMatrix`` handler stores raw confusion matrices as details, which ``MetricsSaver`` cannot turn
    into per-image sensitivity or specificity; this uses the same ``ConfusionMatrixMetric`` with
    ``compute_sample=True, reduction="none"`` and records its per-image result instead.

    Args:
        metric_name: any name ``ConfusionMatrixMetric`` accepts ("sensitivity", "specificity", "precision", ...).
        include_background: whether channel 0 counts (True for sigmoid outputs, where every channel is a structure).
        output_transform: maps the engine output to ``(y_pred, y)`` lists of binary ``C×...`` tensors.
        save_details: record the per-image values.
    """

    def __init__(
        self,
        metric_name: str = "sensitivity",
        include_background: bool = True,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        metric = ConfusionMatrixMetric(
            include_background=include_background, metric_name=metric_name, compute_sample=True, reduction="none"
        )
        super().__init__(metric_fn=metric, output_transform=output_transform, save_details=False)
        self.save_per_image = save_details

    def compute(self) -> float:
        per_image = self.metric_fn.aggregate()[0]  # B×C; NaN where the ratio is undefined (e.g. no positives)
        self._is_reduced = True
        if self.save_per_image:
            if self._engine is None or self._name is None:
                raise RuntimeError("attach the handler to an engine first")
            self._engine.state.metric_details[self._name] = per_image
        return float(torch.nanmean(per_image.float()))
