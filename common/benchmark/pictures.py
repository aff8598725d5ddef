"""Pictures of a training run: the learning curve and predictions over ground truth."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from common.data.visualize import overlay_masks

__all__ = ["save_learning_curve", "truth_overlay"]


def save_learning_curve(
    path: str | os.PathLike,
    loss: Sequence[tuple[int, float]],
    metrics: Mapping[str, Sequence[tuple[int, float]]],
    title: str = "",
) -> None:
    """PNG of the training loss per iteration (raw and a moving average) with the validation metrics on a second
    axis, both against training iterations.

    Args:
        loss: ``(iteration, loss)`` pairs (``monai.handlers.MetricLogger.loss``).
        metrics: name → ``(iteration, value)`` pairs (``MetricLogger.metrics``).
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    figure, loss_axis = plt.subplots(figsize=(7, 4), dpi=120)
    if loss:
        steps, values = (np.asarray(v, dtype=float) for v in zip(*loss))
        loss_axis.plot(steps, values, color="0.75", linewidth=0.8, label="training loss")
        window = max(1, len(values) // 20)
        if window > 1:
            smooth = np.convolve(values, np.ones(window) / window, mode="valid")
            loss_axis.plot(steps[window - 1 :], smooth, color="0.2", linewidth=1.4, label=f"mean of {window}")
    loss_axis.set_xlabel("training iteration")
    loss_axis.set_ylabel("loss")
    metric_axis = loss_axis.twinx()
    for index, (name, points) in enumerate(metrics.items()):
        if points:
            steps, values = zip(*points)
            metric_axis.plot(steps, values, marker="o", color=f"C{index}", label=name)
    metric_axis.set_ylabel("validation metric")
    handles = loss_axis.get_legend_handles_labels()[0] + metric_axis.get_legend_handles_labels()[0]
    if handles:
        loss_axis.legend(handles=handles, loc="center right", fontsize="small")
    loss_axis.set_title(title, fontsize="medium")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def truth_overlay(
    image: np.ndarray, prediction: np.ndarray, truth: np.ndarray, num_classes: int, min_size: int = 256
) -> np.ndarray:
    """``H×W×3`` uint8 picture: predicted classes filled in colour, ground-truth borders in white.

    A volume (``H×W×D``) is shown at its axial slice with the most ground truth (the most predicted voxels when
    the truth is empty), transposed and flipped as radiologists read axial slices.

    Args:
        image: ``H×W`` grey, ``H×W×3`` RGB (2D) or ``H×W×D`` (volume), intensities 0-1.
        prediction, truth: integer label maps of the image's spatial shape.
        min_size: pictures whose shorter side is smaller are enlarged by an integer factor.
    """
    prediction, truth = np.asarray(prediction), np.asarray(truth)
    image = np.asarray(image, dtype=np.float32)
    volume = prediction.ndim == 3
    if volume:
        reference = truth if truth.any() else prediction
        index = int(np.argmax((reference > 0).reshape(-1, reference.shape[-1]).sum(0)))
        image, prediction, truth = image[..., index], prediction[..., index], truth[..., index]
    elif image.ndim == 3:
        image = np.moveaxis(image, -1, 0)  # H×W×3 → 3×H×W
    classes = range(1, num_classes + 1)
    picture = overlay_masks(
        image, np.stack([prediction == c for c in classes]), np.stack([truth == c for c in classes])
    )
    return picture.transpose(1, 0, 2)[::-1, ::-1] if volume else picture
