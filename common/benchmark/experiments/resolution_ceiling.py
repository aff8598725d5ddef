"""How well can a network that sees whole pictures at a given input size segment thin structures at all?

    python -m common.benchmark.experiments.resolution_ceiling --sizes 256 512 1024

The ground truth itself is taken through the input size the way a prediction is: shrunk so that its long side is
the input size (area averaging: the best soft answer at that size), enlarged back bilinearly and thresholded at
0.5. Its Dice against the original truth, inside the field of view, is what a perfect network working at that size
would score; a target above it cannot be met by shrinking whole pictures (CHASE_DB1 vessels at 256²: about 0.91).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["truth_through_size", "resolution_ceiling", "main"]


def truth_through_size(truth: np.ndarray, size: int) -> np.ndarray:
    """The binary ``H×W`` ``truth`` as a perfect network working on the long side ``size`` would give it back:
    area-shrunk to ``size`` (pictures already that small are kept), bilinearly enlarged, thresholded at 0.5."""
    mask = torch.as_tensor(np.asarray(truth) > 0, dtype=torch.float32)[None, None]
    height, width = mask.shape[-2:]
    scale = size / max(height, width)
    if scale >= 1:
        return np.asarray(truth) > 0
    small = F.interpolate(mask, size=(max(1, round(height * scale)), max(1, round(width * scale))), mode="area")
    back = F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)
    return back[0, 0].numpy() > 0.5


def resolution_ceiling(
    truths: Sequence[np.ndarray], sizes: Sequence[int], fields_of_view: Sequence[np.ndarray] | None = None
) -> dict[int, float]:
    """Mean Dice (inside each field of view, when given) of ``truth_through_size`` against the truth, per size."""
    result = {}
    for size in sizes:
        scores = []
        for index, truth in enumerate(truths):
            inside = np.ones(truth.shape, bool) if fields_of_view is None else np.asarray(fields_of_view[index]) > 0
            true = (np.asarray(truth) > 0) & inside
            kept = truth_through_size(truth, size) & inside
            scores.append(2 * (kept & true).sum() / max(1, kept.sum() + true.sum()))
        result[int(size)] = float(np.mean(scores))
    return result


def _chase_db1_test_split(data_root: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Vessels and fields of view of the accuracy benchmark's CHASE_DB1 test pictures (its own split and files)."""
    from PIL import Image

    from common.benchmark.accuracy import prepare_dataset
    from common.data import load_datalist

    truths, fovs = [], []
    with tempfile.TemporaryDirectory() as folder:
        data_dir = prepare_dataset("chase_db1", data_root, Path(folder))
        for case in load_datalist(data_dir, "testing"):
            with Image.open(case["label"]) as label, Image.open(case["fov"]) as fov:
                truths.append(np.asarray(label) > 0)
                fovs.append(np.asarray(fov) > 0)
    return truths, fovs


def main(argv: list[str] | None = None) -> int:
    from common.cli import data_root

    parser = argparse.ArgumentParser(
        prog="python -m common.benchmark.experiments.resolution_ceiling", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024], help="input sizes (long side)")
    parser.add_argument("--data_root", default=None, help="folder holding chase_db1/ (default: ../shared/data)")
    settings = parser.parse_args(argv)
    try:
        truths, fovs = _chase_db1_test_split(data_root(settings.data_root))
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print("CHASE_DB1 test images 21-28, first observer, inside the FOV: Dice of the truth taken through the size")
    print("\n| input size (long side) | Dice ceiling |\n|---|---|")
    for size, dice in resolution_ceiling(truths, settings.sizes, fovs).items():
        print(f"| {size} | {dice:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
