"""Real MR slices and their cached LiteMedSAM embeddings, shared by the decoder-side benchmark commands.

Training only what sits after a frozen image encoder lets a CPU compare decoder options in minutes: the encoder
runs once per slice here, and every variant trains on the same embeddings.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    LoadImaged,
    Orientationd,
    ResizeWithPadOrCropd,
    ScaleIntensityRangePercentilesd,
)

from common.metrics import label_dice
from common.data import load_datalist
from common.networks import SamSegmentationNet

__all__ = ["HIPPOCAMPUS_LABELS", "cache_embeddings", "held_out_dice", "sample_slices", "write_results"]

HIPPOCAMPUS_LABELS = {"1": "anterior hippocampus", "2": "posterior hippocampus"}


def sample_slices(
    dataset_dir: str, num_volumes: int, slices_per_volume: int, size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Foreground axial slices ``N×1×size×size`` (images scaled 0-1, label maps) of the first ``num_volumes``
    training volumes, ``slices_per_volume`` drawn per volume, in volume order; plus the label names."""
    # the label names prompt the decoder: the datalist's own, or MSD hippocampus's when it names none
    labels = json.loads((Path(dataset_dir) / "datalist.json").read_text()).get("labels") or HIPPOCAMPUS_LABELS
    load = Compose(
        [
            LoadImaged(["image", "label"], image_only=True),
            EnsureChannelFirstd(["image", "label"]),
            Orientationd(["image", "label"], axcodes="RAS"),
            ScaleIntensityRangePercentilesd("image", 0.5, 99.5, 0.0, 1.0, clip=True),
            ResizeWithPadOrCropd(["image", "label"], (size, size, -1)),
        ]
    )
    rng = np.random.default_rng(seed)
    images, maps = [], []
    for item in load_datalist(dataset_dir, "training")[:num_volumes]:
        data = load(item)
        label = data["label"][0]
        foreground = [z for z in range(label.shape[-1]) if label[..., z].any()]
        for z in rng.choice(foreground, min(slices_per_volume, len(foreground)), replace=False):
            # plain tensors (no MetaTensor metadata riding along through the training loops)
            images.append(torch.as_tensor(np.asarray(data["image"][0, ..., z]), dtype=torch.float32))
            maps.append(torch.as_tensor(np.asarray(label[..., z]), dtype=torch.float32))
    names = [labels[k] for k in sorted(labels, key=int)]
    return torch.stack(images)[:, None], torch.stack(maps)[:, None], names


def cache_embeddings(backbone: str, images: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """Image embeddings ``N×C×h×w`` of ``images`` (``N×1×H×W``, 0-1) by the frozen ``backbone``'s encoder."""
    net = SamSegmentationNet(backbone).eval()
    with torch.no_grad():
        return torch.cat(
            [
                net.encode(net.preprocess(images[i : i + batch_size])).embedding
                for i in range(0, len(images), batch_size)
            ]
        )


def held_out_dice(prediction: torch.Tensor, label_map: torch.Tensor, num_classes: int) -> list[float]:
    """Dice per class 1..K over all slices at once (``prediction``: label map ``N×h×w``; ``label_map``:
    ``N×1×H×W``, resized to the prediction's grid); NaN for a class absent from both."""
    truth = torch.nn.functional.interpolate(label_map, size=prediction.shape[-2:], mode="nearest")[:, 0]
    return label_dice(prediction.cpu().numpy(), truth.round().long().cpu().numpy(), num_classes)


def write_results(output_dir: str | Path, settings: dict, results: list[dict], header: list[str], rows: list[list]):
    """``results.json`` (settings and results) and ``results.md`` (a Markdown table), printed as well."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.json").write_text(json.dumps({"settings": settings, "results": results}, indent=2) + "\n")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    (output / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
