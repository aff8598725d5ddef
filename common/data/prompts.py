"""Per-sample point and box prompts drawn from a sample's own label (SAM2LoRA's prompted training)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable
from scipy.ndimage import binary_erosion

__all__ = ["SamplePromptsd"]


class SamplePromptsd(Randomizable, MapTransform):
    """Add ``point_coords`` (``N×2``, x = column, y = row), ``point_labels`` (``N``) and ``box`` (``4``: x0, y0, x1,
    y1) drawn from the label of this sample.

    Positive points are drawn uniformly from the foreground eroded by ``erosion`` pixels (the whole foreground when
    erosion would remove it), negative points from the background; the box is the foreground's bounding box with
    each side moved outwards by a random 0 to ``box_jitter`` of the image size. A sample without foreground gets
    padding points (label -1, which SAM ignores) and a whole-image box. Each sample gets its own prompts: batches
    collate them to ``B×N×2``, ``B×N`` and ``B×4``, and ``monai.engines.PrepareBatchExtraInput`` passes them to the
    network as keyword arguments.

    Args:
        keys: the label key (channel-first, ``C×H×W``; all foreground channels together define the object).
        num_positive: positive points per sample (SAM2LoRA's script: 5).
        num_negative: negative points per sample.
        erosion: erosion radius in pixels before sampling positives (SAM2LoRA: 2).
        box_jitter: maximum outward box jitter as a fraction of the image size (SAM2LoRA: 0.02).
        prefix: prefix of the added keys.
    """

    def __init__(
        self,
        keys: KeysCollection = "label",
        num_positive: int = 5,
        num_negative: int = 0,
        erosion: int = 2,
        box_jitter: float = 0.02,
        prefix: str = "",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if num_positive < 0 or num_negative < 0 or num_positive + num_negative == 0:
            raise ValueError("need at least one point (num_positive + num_negative >= 1)")
        self.num_positive = num_positive
        self.num_negative = num_negative
        self.erosion = erosion
        self.box_jitter = box_jitter
        self.prefix = prefix

    def _points(self, candidates: np.ndarray, count: int, label: int) -> tuple[np.ndarray, np.ndarray]:
        if count == 0:
            return np.zeros((0, 2), np.float32), np.zeros((0,), np.int64)
        if len(candidates) == 0:
            return np.zeros((count, 2), np.float32), np.full((count,), -1, np.int64)
        picks = candidates[self.R.randint(0, len(candidates), size=count)]
        return picks[:, ::-1].astype(np.float32), np.full((count,), label, np.int64)  # (row, col) → (x, y)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            label = np.asarray(d[key].detach().cpu() if isinstance(d[key], torch.Tensor) else d[key])
            if label.ndim != 3:
                raise ValueError(f"{key}: expected a channel-first 2D label C×H×W, got shape {label.shape}")
            foreground = label.any(axis=0)
            height, width = foreground.shape
            inner = binary_erosion(foreground, iterations=self.erosion) if self.erosion > 0 else foreground
            if not inner.any():
                inner = foreground
            pos_xy, pos_lab = self._points(np.argwhere(inner), self.num_positive, 1)
            neg_xy, neg_lab = self._points(np.argwhere(~foreground), self.num_negative, 0)
            if foreground.any():
                rows, cols = np.nonzero(foreground)
                jitter = self.R.uniform(0, self.box_jitter, size=4) * np.array([width, height, width, height])
                box = np.array([cols.min(), rows.min(), cols.max(), rows.max()], np.float32)
                box += jitter * np.array([-1, -1, 1, 1])
                box = np.clip(box, 0, [width - 1, height - 1, width - 1, height - 1])
            else:
                box = np.array([0, 0, width - 1, height - 1], np.float32)
            d[f"{self.prefix}point_coords"] = torch.from_numpy(np.concatenate([pos_xy, neg_xy]))
            d[f"{self.prefix}point_labels"] = torch.from_numpy(np.concatenate([pos_lab, neg_lab]))
            d[f"{self.prefix}box"] = torch.from_numpy(box.astype(np.float32))
        return d
