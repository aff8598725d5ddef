"""The main job on an embedded default: LoRA-adapt real LiteMedSAM weights to a generated sample dataset.

    python -m common.quickstart --output_dir quickstart_output

1. writes a synthetic 2D dataset (``common.data.make_synthetic_dataset``: organs among unlabelled distractors);
2. builds the prompt-free network on LiteMedSAM with its real pretrained weights, injects LoRA into every
   image-encoder ``attn.qkv`` and every mask-decoder attention projection, and trains the LoRA parameters and the
   decoder's output tokens with MONAI's ``SupervisedTrainer`` and the composite loss;
3. segments the test images before (zero-shot, no prompt) and after adaptation and writes
   ``segmentations/*.png``, ``overlay.png``, ``metrics.json`` and the adapter-only checkpoint ``adapter.pt``.

Defaults take about five minutes on 2 CPU cores. ``--backbone sam_vit_test`` runs the same path in seconds on a tiny
random-weight model (the test suite does this).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

__all__ = ["run_quickstart", "main"]

logger = logging.getLogger("common.quickstart")

# SAM2LoRA's placement (image-encoder qkv + decoder attention projections), written for the prompt-free network,
# whose backbone sits under "sam.".
LORA_TARGETS = [
    r"sam\.image_encoder\..*attn\.qkv",
    r"sam\.(sam_)?mask_decoder\.transformer\..*(q|k|v|out)_proj",
]
# Without prompts the decoder must learn what to segment: its output tokens are trained too (a few thousand values).
EXTRA_TRAINABLE = {"decoder_output_tokens": [r"sam\.(sam_)?mask_decoder\.(mask_tokens|iou_token)"]}


def _transforms(train: bool):
    from monai import transforms as mt

    keys = ["image", "label"]
    steps = [
        # reverse_indexing=False keeps PIL's row-major H×W layout, so saved PNGs match the inputs pixel for pixel
        mt.LoadImaged(keys=keys, image_only=True, reader="PILReader", reverse_indexing=False),
        mt.EnsureChannelFirstd(keys=keys),
        mt.ScaleIntensityRanged(keys="image", a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, clip=True),
        mt.AsDiscreted(keys="label", threshold=0.5),
    ]
    if train:
        steps += [mt.RandFlipd(keys=keys, prob=0.5, spatial_axis=0), mt.RandFlipd(keys=keys, prob=0.5, spatial_axis=1)]
    return mt.Compose(steps + [mt.EnsureTyped(keys=keys, dtype=torch.float32, track_meta=False)])


@torch.no_grad()
def _predict(network: torch.nn.Module, loader, device: torch.device) -> tuple[list, list, list, list]:
    """Images, labels, binary predictions and Dice per case (MONAI DiceMetric on the thresholded logits)."""
    from monai.metrics import DiceMetric

    metric = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
    network.eval()
    images, labels, preds, dices = [], [], [], []
    for batch in loader:
        image, label = batch["image"].to(device), batch["label"].to(device)
        pred = (network(image) > 0).float()
        dices += metric(pred, label)[:, 0].tolist()
        images += [x[0].cpu().numpy() for x in image]
        labels += [y[0].cpu().numpy() for y in label]
        preds += [p[0].cpu().numpy() for p in pred]
    return images, labels, preds, dices


def _save_overlay_grid(path: Path, images, labels, before, after, dice_before, dice_after) -> None:
    """One row per test case: image | ground truth | zero-shot prediction | adapted prediction."""
    from PIL import Image, ImageDraw

    from common.data import overlay_masks

    rows = []
    for i, (img, lab, b, a) in enumerate(zip(images, labels, before, after)):
        empty = np.zeros_like(img)
        # one mask per tile, each in its own colour: ground truth green, zero-shot orange, adapted blue
        tiles = [overlay_masks(img, np.stack(m)) for m in ([empty], [lab], [empty, empty, b], [empty, a])]
        row = Image.fromarray(np.concatenate(tiles, axis=1))
        draw = ImageDraw.Draw(row)
        width = img.shape[1]
        for j, text in enumerate(
            ["image", "ground truth", f"zero-shot Dice {dice_before[i]:.2f}", f"LoRA-adapted Dice {dice_after[i]:.2f}"]
        ):
            draw.rectangle([j * width, 0, j * width + 6 * len(text) + 6, 12], fill=(0, 0, 0))
            draw.text((j * width + 3, 1), text, fill=(255, 255, 255))
        rows.append(np.asarray(row))
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def run_quickstart(
    output_dir: str | Path = "quickstart_output",
    backbone: str = "litemedsam",
    iterations: int = 60,
    batch_size: int = 2,
    num_train: int = 16,
    num_test: int = 4,
    rank: int = 8,
    alpha: float = 16.0,
    learning_rate: float = 1e-3,
    seed: int = 0,
    device: str = "cpu",
) -> dict:
    """Run the main job and return the metrics written to ``output_dir/metrics.json``."""
    from monai.data import DataLoader, Dataset
    from monai.engines import SupervisedTrainer
    from monai.handlers import StatsHandler, from_engine
    from monai.utils import set_determinism
    from PIL import Image

    from common.adapters import LoraConfig, configure_trainable, inject_adapters, save_adapter_checkpoint
    from common.backbones import default_checkpoint, sha256sum
    from common.data import load_datalist, make_synthetic_dataset
    from common.losses import CompositeSegmentationLoss
    from common.networks import SamSegmentationNet

    start = time.time()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    set_determinism(seed=seed)
    torch_device = torch.device(device)

    data_dir = out / "data"
    make_synthetic_dataset(
        data_dir, spatial_dims=2, num_classes=1, num_train=num_train, num_val=0, num_test=num_test, seed=seed
    )
    logger.info("sample dataset: %d training and %d test images in %s", num_train, num_test, data_dir)
    train_loader = DataLoader(
        Dataset(load_datalist(data_dir, "training"), _transforms(train=True)),
        batch_size=batch_size,
        shuffle=True,
        num_workers=0,
    )
    test_files = load_datalist(data_dir, "testing")
    test_loader = DataLoader(Dataset(test_files, _transforms(train=False)), batch_size=batch_size, num_workers=0)

    checkpoint = default_checkpoint(backbone)
    network = SamSegmentationNet(backbone, checkpoint=checkpoint).to(torch_device)
    logger.info("backbone %s (%s)", backbone, "weights: " + checkpoint if checkpoint else "random weights")

    images, labels, zero_shot, dice_before = _predict(network, test_loader, torch_device)
    logger.info("zero-shot (no prompt) mean Dice on the test images: %.3f", float(np.mean(dice_before)))

    adapted = inject_adapters(network, LoraConfig(rank=rank, alpha=alpha, target_modules=LORA_TARGETS))
    report = configure_trainable(network, EXTRA_TRAINABLE)
    logger.info("LoRA rank %d on %d layers; %s", rank, len(adapted), report)

    epochs = math.ceil(iterations / len(train_loader))
    trainer = SupervisedTrainer(
        device=torch_device,
        max_epochs=epochs,
        train_data_loader=train_loader,
        network=network,
        optimizer=torch.optim.AdamW([p for p in network.parameters() if p.requires_grad], lr=learning_rate),
        loss_function=CompositeSegmentationLoss(),
        epoch_length=None,
        train_handlers=[StatsHandler(tag_name="train_loss", output_transform=from_engine(["loss"], first=True))],
    )
    losses: list[float] = []

    def _record_and_stop(engine) -> None:
        losses.append(float(engine.state.output[0]["loss"]))
        if engine.state.iteration >= iterations:  # the budget is in iterations, not whole epochs
            engine.terminate()

    trainer.add_event_handler("ITERATION_COMPLETED", _record_and_stop)
    train_start = time.time()
    trainer.run()
    train_seconds = time.time() - train_start

    _, _, adapted_pred, dice_after = _predict(network, test_loader, torch_device)
    logger.info(
        "adapted mean Dice on the test images: %.3f (zero-shot %.3f)", np.mean(dice_after), np.mean(dice_before)
    )

    seg_dir = out / "segmentations"
    seg_dir.mkdir(exist_ok=True)
    for item, pred in zip(test_files, adapted_pred):
        Image.fromarray((pred > 0).astype(np.uint8) * 255).save(seg_dir / Path(item["image"]).name)
    _save_overlay_grid(out / "overlay.png", images, labels, zero_shot, adapted_pred, dice_before, dice_after)
    adapter_path = save_adapter_checkpoint(network, out / "adapter.pt")

    metrics = {
        "backbone": backbone,
        "backbone_checkpoint": checkpoint,
        "backbone_checkpoint_sha256": sha256sum(checkpoint) if checkpoint else None,
        "prompt_mode": "none (prompt-free)",
        "test_cases": [Path(item["image"]).name for item in test_files],
        "dice_zero_shot": dice_before,
        "dice_adapted": dice_after,
        "mean_dice_zero_shot": float(np.mean(dice_before)),
        "mean_dice_adapted": float(np.mean(dice_after)),
        "lora": {"rank": rank, "alpha": alpha, "layers": len(adapted)},
        "parameters": {
            "total": report.total,
            "trainable": report.trainable,
            "groups": report.groups,
            "trainable_share": report.trainable_share,
        },
        "adapter_checkpoint_bytes": adapter_path.stat().st_size,
        "iterations": trainer.state.iteration,
        "batch_size": batch_size,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.time() - start, 1),
        "torch_threads": torch.get_num_threads(),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    logger.info("wrote %s, %s, %s and %s", seg_dir, out / "overlay.png", out / "metrics.json", adapter_path)
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.quickstart", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="quickstart_output", help="where everything is written")
    parser.add_argument("--backbone", default="litemedsam", help="backbone name (default: real LiteMedSAM weights)")
    parser.add_argument("--iterations", type=int, default=60, help="training iterations (default 60)")
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--num_train", type=int, default=16, help="generated training images")
    parser.add_argument("--num_test", type=int, default=4, help="generated test images")
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank")
    parser.add_argument("--alpha", type=float, default=16.0, help="LoRA alpha")
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(message)s")
    metrics = run_quickstart(**vars(args))
    print(json.dumps({k: metrics[k] for k in ("mean_dice_zero_shot", "mean_dice_adapted", "total_seconds")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
