"""The cases Dice cannot score: a class absent from the ground truth, and whether the prediction invented it."""

from __future__ import annotations

import torch
from monai.handlers import IgniteMetricHandler
from monai.metrics import CumulativeIterationMetric
from monai.metrics.utils import ignore_background
from monai.utils import MetricReduction

from .reduction import reduce_defined

__all__ = ["EmptyClassFalsePositiveRate", "EmptyClassFalsePositiveHandler"]


class EmptyClassFalsePositiveRate(CumulativeIterationMetric):
    """Per case and class: 1 when the class is absent from the ground truth but predicted, 0 when absent from both,
    NaN when the class is present (those cases are Dice's business).

    With ``DiceMetric(ignore_empty=True)`` an absent class is left out of the Dice mean instead of being counted as a
    perfect 1 (the inflation S-SAM's reference evaluation suffers from, worst for rare classes such as tumours); this
    metric reports those left-out cases separately. Its aggregate (``reduction="mean"``) averages, over classes, the
    false-positive rate among the cases where the class is absent (NaN when no class was ever absent).

    Args:
        include_background: score channel 0 too.
        reduction: MONAI reduction of the ``B×C`` values (NaNs are ignored).

    Shapes:
        ``y_pred``, ``y``: one-hot / binary ``B×C×spatial``.
    """

    def __init__(self, include_background: bool = False, reduction: MetricReduction | str = MetricReduction.MEAN):
        super().__init__()
        self.include_background = include_background
        self.reduction = reduction

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if not self.include_background:
            y_pred, y = ignore_background(y_pred=y_pred, y=y)
        if y_pred.shape != y.shape:
            raise ValueError(f"y_pred {tuple(y_pred.shape)} and y {tuple(y.shape)} must have the same shape")
        present = y.flatten(2).gt(0).any(-1)
        predicted = y_pred.flatten(2).gt(0).any(-1)
        values = predicted.float()
        values[present] = float("nan")
        return values

    def aggregate(self, reduction: MetricReduction | str | None = None) -> torch.Tensor:
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError("the data to aggregate must be a PyTorch Tensor")
        return reduce_defined(data, reduction or self.reduction)


class EmptyClassFalsePositiveHandler(IgniteMetricHandler):
    """Ignite handler of :class:`EmptyClassFalsePositiveRate` (per-case values go to ``MetricsSaver`` details)."""

    def __init__(self, include_background: bool = False, output_transform=lambda x: x, save_details: bool = True):
        super().__init__(
            metric_fn=EmptyClassFalsePositiveRate(include_background=include_background),
            output_transform=output_transform,
            save_details=save_details,
        )
