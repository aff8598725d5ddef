"""The main job on real data: segment held-out hippocampus MR volumes with a shipped adapter, and adapt LoRA yourself.

    python -m common.quickstart --output_dir quickstart_output            # under a minute on 2 CPU cores
    python -m common.quickstart --output_dir quickstart_output --adapt    # + LoRA adaptation, about 3 minutes more

1. segments the three held-out MSD hippocampus MR volumes shipped inside the package (``common/samples``, CC-BY-SA
   4.0) with the BALR-SAM bundle's shipped adapter on LiteMedSAM's real weights, through the same path as
   ``python -m common.segment``: label volumes (``segmentations/*_seg.nii.gz``, the input's geometry), montage PNGs
   and structure volumes in mL;
2. scores them against their ground truth (3D Dice per structure) into ``metrics.json``;
3. with ``--adapt``: injects LoRA into LiteMedSAM (SAM2LoRA's placement: image-encoder ``attn.qkv`` and the
   mask-decoder attention projections), trains it prompt-free on 2D slices of the eight embedded training volumes
   (both structures as one "hippocampus" mask) with MONAI's ``SupervisedTrainer`` and the composite loss, and
   segments the held-out volumes' slices before (zero-shot, no prompt) and after: ``adapt/overlay.png``,
   ``adapt/segmentations/*.png``, ``adapt/adapter.pt`` and the Dice pair in ``metrics.json``.

``--backbone sam_vit_test`` runs the adaptation path in seconds on a tiny random-weight model (the test suite does
this); the shipped adapter needs LiteMedSAM.
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

from common.backbones.module_names import in_network
from common.cli import bundles_folder
from common.networks.sam2lora import SAM2LORA_TARGETS

__all__ = ["run_quickstart", "main"]

logger = logging.getLogger("common.quickstart")

#: the embedded real MR cases (MSD hippocampus, CC-BY-SA 4.0; common/samples/README.md)
SAMPLES = Path(__file__).resolve().parent / "samples" / "hippocampus"
#: the bundle whose shipped adapter segments them, in the bundles folder (common.cli.bundles_folder)
DEFAULT_BUNDLE_NAME = "balr_sam_segmentation"

# SAM2LoRA's placement on LiteMedSAM (image-encoder qkv + decoder attention projections), in the coordinates of the
# prompt-free network, whose backbone sits under "sam.".
LORA_TARGETS = [in_network(pattern) for pattern in SAM2LORA_TARGETS["tiny_vit"]]
# Without prompts the decoder must learn what to segment: its output tokens are trained too (a few thousand values).
EXTRA_TRAINABLE = {"decoder_output_tokens": [in_network(r"mask_decoder\.(mask_tokens|iou_token)")]}


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
        # slices of different volumes differ a little in size (about 35×51): one padded size makes them a batch
        steps += [mt.ResizeWithPadOrCropd(keys=keys, spatial_size=(64, 64)),
                  mt.RandFlipd(keys=keys, prob=0.5, spatial_axis=0),
                  mt.RandFlipd(keys=keys, prob=0.5, spatial_axis=1)]  # fmt: skip
    return mt.Compose(steps + [mt.EnsureTyped(keys=keys, dtype=torch.float32, track_meta=False)])


@torch.no_grad()
def _predict(network: torch.nn.Module, loader, device: torch.device) -> tuple[list, list, list, list]:
    """Images, labels, binary predictions and Dice per case (of the thresholded logits)."""
    from common.metrics import label_dice

    network.eval()
    images, labels, preds = [], [], []
    for batch in loader:
        image, label = batch["image"].to(device), batch["label"].to(device)
        pred = (network(image) > 0).float()
        images += [x[0].cpu().numpy() for x in image]
        labels += [y[0].cpu().numpy() for y in label]
        preds += [p[0].cpu().numpy() for p in pred]
    # every held-out slice holds hippocampus, so no Dice is NaN
    dices = [label_dice(p.astype(np.int64), (y > 0.5).astype(np.int64), 1)[0] for p, y in zip(preds, labels)]
    return images, labels, preds, dices


def _save_overlay_grid(path: Path, images, labels, before, after, dice_before, dice_after) -> None:
    """One row per test case: image | ground truth | zero-shot prediction | adapted prediction."""
    from PIL import Image, ImageDraw

    from common.data import overlay_masks

    # one tile size for every row (slices differ in size), enlarged so that the captions fit
    height, width = (max(x.shape[k] for x in images) for k in (0, 1))
    scale = max(1, math.ceil(160 / width))

    def tile(x: np.ndarray) -> np.ndarray:
        padded = np.pad(x, [(0, height - x.shape[0]), (0, width - x.shape[1])])
        return padded.repeat(scale, axis=0).repeat(scale, axis=1)

    rows = []
    for i, (img, lab, b, a) in enumerate(zip(*(map(tile, x) for x in (images, labels, before, after)))):
        empty = np.zeros_like(img)
        # one mask per tile, each in its own colour: ground truth green, zero-shot orange, adapted blue
        tiles = [overlay_masks(img, np.stack(m)) for m in ([empty], [lab], [empty, empty, b], [empty, a])]
        row = Image.fromarray(np.concatenate(tiles, axis=1))
        draw = ImageDraw.Draw(row)
        tile_width = img.shape[1]
        for j, text in enumerate(
            ["image", "ground truth", f"zero-shot Dice {dice_before[i]:.2f}", f"LoRA-adapted Dice {dice_after[i]:.2f}"]
        ):
            draw.rectangle([j * tile_width, 0, j * tile_width + 6 * len(text) + 6, 12], fill=(0, 0, 0))
            draw.text((j * tile_width + 3, 1), text, fill=(255, 255, 255))
        rows.append(np.asarray(row))
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def _slice_pictures(cases: list[dict], folder: Path) -> list[dict]:
    """Every axial slice with hippocampus of ``cases`` (volumes read and scaled as the bundles read MR: RAS, the
    scan's 0.5-99.5 percentiles) as an 8-bit PNG and a binary PNG mask (both structures = 1) in ``folder``; returns
    datalist entries ``{"image", "label", "case", "slice"}``."""
    from monai import transforms as mt
    from PIL import Image

    from common.data import ScaleScanIntensityd

    load = mt.Compose([
        mt.LoadImaged(keys=["image", "label"], image_only=True), mt.EnsureChannelFirstd(keys=["image", "label"]),
        mt.Orientationd(keys=["image", "label"], axcodes="RAS"), ScaleScanIntensityd(keys="image", intensity="mr"),
    ])  # fmt: skip
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(exist_ok=True)
    entries = []
    for case in cases:
        data = load(case)
        image, label = np.asarray(data["image"][0]), np.asarray(data["label"][0]) > 0
        stem = Path(case["image"]).name.split(".")[0]
        for index in np.flatnonzero(label.any(axis=(0, 1))):
            name = f"{stem}_z{index:02d}.png"
            Image.fromarray((image[..., index] * 255).round().astype(np.uint8)).save(folder / "images" / name)
            Image.fromarray(label[..., index].astype(np.uint8) * 255).save(folder / "labels" / name)
            entries.append({"image": str(folder / "images" / name), "label": str(folder / "labels" / name),
                            "case": stem, "slice": int(index)})  # fmt: skip
    return entries


def segment_samples(output_dir: str | Path, bundle: str | Path | None = None) -> dict:
    """Segment the embedded held-out volumes with ``bundle``'s shipped adapter (its default ``inference.json``, as
    ``python -m common.segment`` does) and score them; returns the part of ``metrics.json`` it wrote."""
    import shutil
    import tempfile

    import nibabel as nib

    from common.metrics import volume_metrics
    from common.data import load_datalist
    from common.segment import SegmentationError, segment_scans

    bundle = bundle or bundles_folder(option="--bundle <bundle folder>") / DEFAULT_BUNDLE_NAME

    bundle = Path(bundle)
    if not (bundle / "models" / "model.pt").is_file():
        raise SegmentationError(
            f"{bundle}/models/model.pt not found: the quickstart segments with the adapter a bundle ships (run it "
            "from a clone of the repository, whose bundles/ folder holds them)"
        )
    out = Path(output_dir) / "segmentations"
    cases = load_datalist(SAMPLES, "testing")
    started = time.time()
    with tempfile.TemporaryDirectory() as inputs:
        for case in cases:
            shutil.copy(case["image"], inputs)
        results = segment_scans(bundle, inputs, out, progress=False)
    seconds = time.time() - started
    failed = {k: v for k, v in results.items() if v != "ok"}
    if failed:
        raise SegmentationError("; ".join(failed.values()))
    names = json.loads((SAMPLES / "datalist.json").read_text())["labels"]
    per_case = {}
    for case in cases:
        stem = Path(case["image"]).name.split(".")[0]
        truth_file = nib.load(case["label"])
        truth = np.asarray(truth_file.dataobj).round().astype(int)
        predicted = np.asarray(nib.load(out / f"{stem}_seg.nii.gz").dataobj).astype(int)
        metrics = volume_metrics(predicted, truth, len(names), truth_file.header.get_zooms()[:3])
        volumes = json.loads((out / f"{stem}_volumes.json").read_text())["classes"]
        per_case[stem] = {
            "dice": dict(zip(names.values(), metrics["dice"])),
            "hd95_mm": dict(zip(names.values(), metrics["hd95"])),
            "volume_ml": {name: volumes[name]["volume_ml"] for name in names.values() if name in volumes},
        }
        logger.info("%s: Dice %s", stem, ", ".join(f"{k} {v:.3f}" for k, v in per_case[stem]["dice"].items()))
    mean = {name: float(np.mean([c["dice"][name] for c in per_case.values()])) for name in names.values()}
    logger.info("mean Dice over the %d held-out volumes: %s", len(per_case),
                ", ".join(f"{k} {v:.3f}" for k, v in mean.items()))  # fmt: skip
    return {
        "bundle": str(bundle),
        "cases": per_case,
        "mean_dice": mean,
        "mean_dice_both": float(np.mean(list(mean.values()))),
        "segment_seconds": round(seconds, 1),
        "outputs": str(out),
    }


def _train_prompt_free(
    network: torch.nn.Module, loader, iterations: int, learning_rate: float, device: torch.device
) -> tuple[int, list[float], float]:
    """Train ``network``'s trainable parameters for ``iterations`` batches of ``loader`` with MONAI's
    ``SupervisedTrainer`` and the composite loss; returns the iterations run, each one's loss and the seconds."""
    from monai.handlers import StatsHandler, from_engine

    from common.engines import SupervisedTrainer, choose_amp
    from common.losses import CompositeSegmentationLoss

    trainer = SupervisedTrainer(
        device=device,
        max_epochs=math.ceil(iterations / len(loader)),
        train_data_loader=loader,
        network=network,
        optimizer=torch.optim.AdamW([p for p in network.parameters() if p.requires_grad], lr=learning_rate),
        loss_function=CompositeSegmentationLoss(),
        epoch_length=None,
        train_handlers=[StatsHandler(tag_name="train_loss", output_transform=from_engine(["loss"], first=True))],
        amp=choose_amp(device),  # the CPU fast path: bfloat16 where this CPU computes it natively
    )
    losses: list[float] = []

    def _record_and_stop(engine) -> None:
        losses.append(float(engine.state.output[0]["loss"]))
        if engine.state.iteration >= iterations:  # the budget is in iterations, not whole epochs
            engine.terminate()

    trainer.add_event_handler("ITERATION_COMPLETED", _record_and_stop)
    started = time.time()
    trainer.run()
    return trainer.state.iteration, losses, time.time() - started


def _write_adaptation_pictures(
    out: Path, test_files: list[dict], images, labels, zero_shot, adapted, dice_before, dice_after
) -> None:
    """``out/segmentations/<slice>.png`` (the adapted masks) and ``out/overlay.png``: one row per held-out volume,
    its slice with the most hippocampus, zero-shot and adapted."""
    from PIL import Image

    seg_dir = out / "segmentations"
    seg_dir.mkdir(exist_ok=True)
    for item, pred in zip(test_files, adapted):
        Image.fromarray((pred > 0).astype(np.uint8) * 255).save(seg_dir / Path(item["image"]).name)
    rows = [max((i for i, f in enumerate(test_files) if f["case"] == case), key=lambda i: labels[i].sum())
            for case in dict.fromkeys(f["case"] for f in test_files)]  # fmt: skip
    pick = lambda values: [values[i] for i in rows]  # noqa: E731
    _save_overlay_grid(out / "overlay.png", *map(pick, (images, labels, zero_shot, adapted, dice_before,
                                                          dice_after)))  # fmt: skip


def adapt_lora(
    output_dir: str | Path,
    backbone: str = "litemedsam",
    input_size: int | None = 64,
    iterations: int = 300,
    batch_size: int = 4,
    rank: int = 8,
    alpha: float = 16.0,
    learning_rate: float = 3e-3,
    seed: int = 0,
    device: str = "cpu",
) -> dict:
    """LoRA on slices of the embedded training volumes, Dice on the held-out volumes' slices before and after;
    writes ``output_dir`` (``overlay.png``, ``segmentations/``, ``adapter.pt``) and returns its metrics."""
    from monai.utils import set_determinism

    from common.adapters import LoraConfig, configure_trainable, inject_adapters, save_adapter_checkpoint
    from common.backbones import default_checkpoint, get_backbone_spec, sha256sum
    from common.networks import SamSegmentationNet

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    set_determinism(seed=seed)
    torch_device = torch.device(device)
    train_files, test_files, train_loader, test_loader = _slice_loaders(out, batch_size)

    checkpoint = default_checkpoint(backbone)
    size = input_size if input_size and get_backbone_spec(backbone).resizable else None
    network = SamSegmentationNet(backbone, checkpoint=checkpoint, input_size=size).to(torch_device)
    logger.info("backbone %s at %d² (%s)", backbone, network.input_size,
                "weights: " + checkpoint if checkpoint else "random weights")  # fmt: skip

    images, labels, zero_shot, dice_before = _predict(network, test_loader, torch_device)
    logger.info("zero-shot (no prompt) mean Dice on the held-out slices: %.3f", float(np.mean(dice_before)))

    adapted = inject_adapters(network, LoraConfig(rank=rank, alpha=alpha, target_modules=LORA_TARGETS))
    report = configure_trainable(network, EXTRA_TRAINABLE)
    logger.info("LoRA rank %d on %d layers; %s", rank, len(adapted), report)

    iterations_done, losses, train_seconds = _train_prompt_free(
        network, train_loader, iterations, learning_rate, torch_device
    )
    _, _, adapted_pred, dice_after = _predict(network, test_loader, torch_device)
    logger.info(
        "adapted mean Dice on the held-out slices: %.3f (zero-shot %.3f)", np.mean(dice_after), np.mean(dice_before)
    )
    _write_adaptation_pictures(out, test_files, images, labels, zero_shot, adapted_pred, dice_before, dice_after)
    adapter_path = save_adapter_checkpoint(network, out / "adapter.pt")
    summary = {
        "backbone": backbone,
        "backbone_checkpoint": checkpoint,
        "backbone_checkpoint_sha256": sha256sum(checkpoint) if checkpoint else None,
        "input_size": network.input_size,
        "prompt_mode": "none (prompt-free)",
        "training_slices": len(train_files),
        "test_slices": [Path(item["image"]).name for item in test_files],
    }
    return {**summary, **_adaptation_metrics(dice_before, dice_after, report, rank, alpha, len(adapted)),
            "adapter_checkpoint_bytes": adapter_path.stat().st_size, "iterations": iterations_done,
            "batch_size": batch_size, "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None, "train_seconds": round(train_seconds, 1)}  # fmt: skip


def _slice_loaders(out: Path, batch_size: int):
    """The sample volumes' slices written as pictures under ``out/data``: training and held-out file lists and
    their loaders (training shuffled, held-out one at a time)."""
    from monai.data import DataLoader, Dataset

    from common.data import load_datalist

    train_files = _slice_pictures(load_datalist(SAMPLES, "training"), out / "data" / "training")
    test_files = _slice_pictures(load_datalist(SAMPLES, "testing"), out / "data" / "testing")
    logger.info("LoRA adaptation: %d training slices, %d held-out slices", len(train_files), len(test_files))
    train_loader = DataLoader(
        Dataset(train_files, _transforms(train=True)), batch_size=batch_size, shuffle=True, num_workers=0
    )
    test_loader = DataLoader(Dataset(test_files, _transforms(train=False)), batch_size=1, num_workers=0)
    return train_files, test_files, train_loader, test_loader


def _adaptation_metrics(dice_before: list, dice_after: list, report, rank: int, alpha: float, layers: int) -> dict:
    """Dice before and after adaptation, per held-out slice and on average, and what was trained."""
    return {
        "dice_zero_shot": dice_before,
        "dice_adapted": dice_after,
        "mean_dice_zero_shot": float(np.mean(dice_before)),
        "mean_dice_adapted": float(np.mean(dice_after)),
        "lora": {"rank": rank, "alpha": alpha, "layers": layers},
        "parameters": {
            "total": report.total,
            "trainable": report.trainable,
            "groups": report.groups,
            "trainable_share": report.trainable_share,
        },
    }


def segment_whole_brain(scan: str | Path, output_dir: str | Path, bundle: str | Path | None = None) -> dict:
    """Segment a whole-brain T1 with ``bundle``'s shipped adapter into ``output_dir/whole_brain`` (both hippocampi
    found by registration to the MNI152 template, as ``python -m common.segment`` does); returns its volumes report
    and the seconds it took."""
    from common.segment import SegmentationError, segment_scans

    bundle = bundle or bundles_folder(option="--bundle <bundle folder>") / DEFAULT_BUNDLE_NAME

    out = Path(output_dir) / "whole_brain"
    started = time.time()
    results = segment_scans(bundle, scan, out, progress=False)
    failed = [message for message in results.values() if message != "ok"]
    if failed:
        raise SegmentationError("; ".join(failed))
    report = json.loads((out / f"{Path(scan).name.split('.')[0]}_volumes.json").read_text())
    logger.info("%s: left %.2f mL, right %.2f mL%s", scan, report["sides"]["left"]["volume_ml"],
                report["sides"]["right"]["volume_ml"], "".join(f"; {w}" for w in report["warnings"]))  # fmt: skip
    return {"scan": str(scan), "seconds": round(time.time() - started, 1), "volumes": report}


def run_quickstart(
    output_dir: str | Path = "quickstart_output",
    bundle: str | Path | None = None,
    adapt: bool = False,
    segment: bool = True,
    whole_brain: str | Path | None = None,
    **adapt_settings,
) -> dict:
    """Run the main job and return the metrics written to ``output_dir/metrics.json``: ``segmentation`` (the
    shipped adapter on the held-out volumes), with ``whole_brain`` a whole-brain T1 (:func:`segment_whole_brain`)
    and, with ``adapt``, ``adaptation`` (see :func:`adapt_lora`)."""
    start = time.time()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics: dict = {"samples": str(SAMPLES), "torch_threads": torch.get_num_threads()}
    if segment:
        metrics["segmentation"] = segment_samples(out, bundle)
    if whole_brain is not None:
        metrics["whole_brain"] = segment_whole_brain(whole_brain, out, bundle)
    if adapt:
        metrics["adaptation"] = adapt_lora(out / "adapt", **adapt_settings)
    metrics["total_seconds"] = round(time.time() - start, 1)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    logger.info("wrote %s", out / "metrics.json")
    return metrics


def main(argv: list[str] | None = None) -> int:
    from common.segment import SegmentationError

    parser = argparse.ArgumentParser(prog="python -m common.quickstart", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="quickstart_output", help="where everything is written")
    parser.add_argument(
        "--bundle",
        default=None,
        help=f"bundle whose shipped adapter segments (default: {DEFAULT_BUNDLE_NAME} in $MONAI_SAM_PEFT_BUNDLES, "
        "else in bundles/ of the working folder)",
    )
    parser.add_argument(
        "--whole_brain", metavar="SCAN", help="also segment both hippocampi of a whole-brain T1 (NIfTI, NRRD, DICOM)"
    )
    parser.add_argument("--adapt", action="store_true", help="also adapt LoRA on the embedded training volumes")
    parser.add_argument("--no_segment", dest="segment", action="store_false", help="only the --adapt part")
    parser.add_argument("--backbone", default="litemedsam", help="--adapt: backbone (default: real LiteMedSAM weights)")
    parser.add_argument("--input_size", type=int, default=64, help="--adapt: backbone input size (default 64)")
    parser.add_argument("--iterations", type=int, default=300, help="--adapt: training iterations (default 300)")
    parser.add_argument("--batch_size", type=int, default=4, help="--adapt: slices per iteration")
    parser.add_argument("--rank", type=int, default=8, help="--adapt: LoRA rank")
    parser.add_argument("--alpha", type=float, default=16.0, help="--adapt: LoRA alpha")
    parser.add_argument("--learning_rate", type=float, default=3e-3, help="--adapt: AdamW learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = vars(parser.parse_args(argv))
    output_dir = Path(args.pop("output_dir"))
    if output_dir.exists() and not output_dir.is_dir():
        parser.error(f"--output_dir {output_dir} is a file; give a folder")
    if args["whole_brain"] is not None and not Path(args["whole_brain"]).exists():
        parser.error(f"--whole_brain {args['whole_brain']}: no such file or folder")
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(message)s")
    try:
        metrics = run_quickstart(output_dir, args.pop("bundle"), args.pop("adapt"), args.pop("segment"),
                                 args.pop("whole_brain"), **args)  # fmt: skip
    except (SegmentationError, OSError) as error:  # OSError: an unwritable output folder, a full disk
        print(f"error: {error}", file=sys.stderr)
        return 1
    summary = {"total_seconds": metrics["total_seconds"]}
    if "segmentation" in metrics:
        summary["mean_dice_shipped_adapter"] = metrics["segmentation"]["mean_dice"]
    if "whole_brain" in metrics:
        summary["whole_brain_ml"] = {k: v["volume_ml"] for k, v in metrics["whole_brain"]["volumes"]["sides"].items()}
    if "adaptation" in metrics:
        summary.update({k: metrics["adaptation"][k] for k in ("mean_dice_zero_shot", "mean_dice_adapted")})
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
