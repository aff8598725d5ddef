"""Segmentation metrics of one test case, computed the same way for every method and the baseline from the label
maps (and probabilities) they wrote: vessel metrics inside the field of view for 2D pictures, per-class Dice and HD95
in mm for volumes, and the Dice every benchmark and test reports."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_roc_auc
from monai.networks.utils import one_hot

__all__ = ["label_dice", "vessel_metrics", "volume_metrics"]


def vessel_metrics(
    prediction: np.ndarray, probability: np.ndarray, truth: np.ndarray, field_of_view: np.ndarray | None = None
) -> dict[str, float]:
    """Dice, AUC, sensitivity and specificity of a binary segmentation, counted over the pixels inside the FOV.

    The dark surround of a fundus photograph would otherwise add hundreds of thousands of trivial true negatives
    to specificity and AUC (the usual protocol for DRIVE / CHASE_DB1 counts inside the FOV only).

    Args:
        prediction: ``H×W`` binary prediction.
        probability: ``H×W`` foreground probability (for AUC).
        truth: ``H×W`` binary ground truth.
        field_of_view: ``H×W`` mask; ``None`` = every pixel.
    """
    shapes = {np.shape(prediction), np.shape(probability), np.shape(truth)}
    if field_of_view is not None:
        shapes.add(np.shape(field_of_view))
    if len(shapes) != 1:
        raise ValueError(f"prediction, probability, truth and FOV must have one shape, got {sorted(shapes)}")
    inside = np.ones(np.shape(truth), bool) if field_of_view is None else np.asarray(field_of_view) > 0
    pred = np.asarray(prediction)[inside] > 0
    true = np.asarray(truth)[inside] > 0
    tp, fp = int(np.sum(pred & true)), int(np.sum(pred & ~true))
    fn, tn = int(np.sum(~pred & true)), int(np.sum(~pred & ~true))
    nan = float("nan")
    auc = (
        float(
            compute_roc_auc(
                torch.as_tensor(np.asarray(probability)[inside], dtype=torch.float32), torch.as_tensor(true)
            )
        )
        if 0 < true.sum() < true.size
        else nan  # AUC is undefined with one class only
    )
    return {
        "dice": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else nan,
        "auc": auc,
        "sensitivity": tp / (tp + fn) if tp + fn else nan,
        "specificity": tn / (tn + fp) if tn + fp else nan,
    }


def _one_hot_pair(prediction: np.ndarray, truth: np.ndarray, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Both label maps as one-hot ``1×(K+1)×…`` tensors, after checking that they share a shape."""
    if np.shape(prediction) != np.shape(truth):
        raise ValueError(f"prediction {np.shape(prediction)} and truth {np.shape(truth)} differ in shape")
    return tuple(
        one_hot(torch.as_tensor(np.asarray(m), dtype=torch.long)[None, None], num_classes + 1, dim=1)
        for m in (prediction, truth)
    )


def _absent_from_both(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    return (pred[0, 1:].flatten(1).sum(1) == 0) & (true[0, 1:].flatten(1).sum(1) == 0)


def label_dice(prediction: np.ndarray, truth: np.ndarray, num_classes: int) -> list[float]:
    """Dice per class 1..K of two integer label maps of one shape (any number of axes: a stack of slices is scored
    as one volume); NaN for a class absent from both, so it is left out of means instead of scoring 1."""
    return _dice(*_one_hot_pair(prediction, truth, num_classes))


def _dice(pred: torch.Tensor, true: torch.Tensor) -> list[float]:
    """:func:`label_dice` of one-hot ``1×(K+1)×…`` label maps."""
    dice = compute_dice(pred, true, include_background=False, ignore_empty=False)[0]
    dice[_absent_from_both(pred, true)] = float("nan")
    return [float(v) for v in dice]


def volume_metrics(
    prediction: np.ndarray, truth: np.ndarray, num_classes: int, spacing: Sequence[float] | None = None
) -> dict[str, list[float]]:
    """Per-class Dice and 95th-percentile Hausdorff distance (in mm with ``spacing``) of two label maps.

    A class absent from both gives NaN for both metrics (left out of means, not scored 1); a class present in one
    only gives Dice 0 and an infinite HD95 (MONAI gives NaN there), so a missed structure is never averaged away.

    Args:
        prediction, truth: ``H×W×D`` (or ``H×W``) integer label maps with values 0..num_classes.
        num_classes: foreground classes 1..K.
        spacing: voxel size in mm per axis; ``None`` = voxels.

    Returns:
        ``{"dice": [K values], "hd95": [K values]}``.
    """
    pred, true = _one_hot_pair(prediction, truth, num_classes)
    dice = _dice(pred, true)
    hd95 = compute_hausdorff_distance(
        pred,
        true,
        include_background=False,
        percentile=95,
        spacing=None if spacing is None else [float(s) for s in spacing],
    )[0]
    pred_empty, true_empty = pred[0, 1:].flatten(1).sum(1) == 0, true[0, 1:].flatten(1).sum(1) == 0
    hd95[pred_empty & true_empty] = float("nan")
    hd95[pred_empty ^ true_empty] = float("inf")
    return {"dice": dice, "hd95": [float(v) for v in hd95]}
