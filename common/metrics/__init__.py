"""The project's segmentation metrics, in one place: the MONAI metric handlers the bundles' evaluators use (HD95 in
millimetres, per-image confusion-matrix metrics, the empty-class false-positive rate) and the per-case metrics every
benchmark, test and the quick start compute from written label maps (``common.metrics.case_metrics``)."""

from .case_metrics import label_dice, vessel_metrics, volume_metrics
from .empty_class_metric import EmptyClassFalsePositiveHandler, EmptyClassFalsePositiveRate
from .hausdorff_mm import HausdorffDistanceMm
from .per_image_confusion import PerImageConfusionMatrix

__all__ = [
    "EmptyClassFalsePositiveHandler",
    "EmptyClassFalsePositiveRate",
    "HausdorffDistanceMm",
    "PerImageConfusionMatrix",
    "label_dice",
    "vessel_metrics",
    "volume_metrics",
]
