"""BALR-SAM decoder-side ablation on real MR slices: low-rank tensor attention on/off × boundary loss on/off.

Trains what BALR-SAM trains after the frozen image encoder (the mask decoder, with or without its low-rank tensor
attention, and the class tokens) on cached LiteMedSAM embeddings of hippocampus slices, with MONAI ``DiceCELoss``
alone or plus the ramped MONAI ``BoundaryLoss`` (``common.losses.WithBoundaryLoss``), all four combinations from the
same start, and reports per-class Dice on held-out slices of other volumes. The encoder-side parts (block adapters,
CDEN) need the encoder in the loop and are compared by bundle runs instead (``--use_adapters`` / ``--use_cden``).

    python -m common.benchmark.experiments.balr_decoder_ablation --dataset_dir /tmp/hippo --output_dir /tmp/balr_ablation
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import numpy as np
import torch
from monai.losses import BoundaryLoss, DiceCELoss

from common.backbones.forward import ImageFeatures, prompt_free_embeddings
from common.losses import WithBoundaryLoss
from common.networks import BalrSamNet

from .cached_slices import cache_embeddings, held_out_dice, sample_slices, write_results

__all__ = ["main"]


def _logits(net: BalrSamNet, embedding: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    features = ImageFeatures(embedding=embedding)
    low_res, _ = net.decode(features, *prompt_free_embeddings(net.sam, features))
    return net.postprocess(low_res, *size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m common.benchmark.experiments.balr_decoder_ablation", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--dataset_dir", required=True, help="folder with a hippocampus-style datalist.json")
    parser.add_argument("--output_dir", required=True, help="where results.json and results.md go")
    parser.add_argument("--num_volumes", type=int, default=48)
    parser.add_argument("--slices_per_volume", type=int, default=3)
    parser.add_argument("--held_out_fraction", type=float, default=1 / 6)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--learning_rate", type=float, default=5e-4)
    parser.add_argument("--boundary_weight", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    started = time.time()
    images, label_map, names = sample_slices(args.dataset_dir, args.num_volumes, args.slices_per_volume, 64, args.seed)
    split = int(round(images.shape[0] * (1 - args.held_out_fraction)))
    embedding = cache_embeddings("litemedsam", images)
    size = tuple(images.shape[-2:])
    print(f"cached LiteMedSAM embeddings of {len(images)} slices ({split} training, {len(images) - split} held out)")
    results = []
    for tensor_attention, boundary in itertools.product((True, False), (True, False)):
        torch.manual_seed(args.seed)
        net = BalrSamNet(
            "litemedsam",
            num_classes=len(names),
            use_adapters=False,
            use_cden=False,
            use_tensor_attention=tensor_attention,
        )
        params = [p for n, p in net.named_parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=1e-4)
        loss_fn = WithBoundaryLoss(
            DiceCELoss(softmax=True, to_onehot_y=True),
            BoundaryLoss(softmax=True, to_onehot_y=True, include_background=False),
            max_weight=args.boundary_weight if boundary else 0.0,
            ramp_iterations=args.iterations // 2,
        )
        losses, t = [], time.time()
        for _ in range(args.iterations):
            index = torch.randint(0, split, (args.batch_size,))
            loss = loss_fn(_logits(net, embedding[index], size), label_map[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        net.eval()
        with torch.no_grad():
            prediction = _logits(net, embedding[split:], size).argmax(1)
        dice = held_out_dice(prediction, label_map[split:], len(names))
        row = {
            "use_tensor_attention": tensor_attention,
            "boundary_loss": boundary,
            "trainable": net.parameter_report.trainable,
            "held_out_dice": dict(zip(names, dice)),
            "loss_first_10": float(np.mean(losses[:10])),
            "loss_last_10": float(np.mean(losses[-10:])),
            "seconds": round(time.time() - t, 1),
        }
        results.append(row)
        print(json.dumps(row), flush=True)
    header = ["tensor attention", "boundary loss", "trainable"]
    header += [f"held-out Dice {n}" for n in names] + ["loss first → last 10"]
    rows = [
        [r["use_tensor_attention"], r["boundary_loss"], f"{r['trainable']:,}"]
        + [f"{d:.3f}" for d in r["held_out_dice"].values()]
        + [f"{r['loss_first_10']:.3f} → {r['loss_last_10']:.3f}"]
        for r in results
    ]
    write_results(
        args.output_dir, dict(vars(args), seconds_total=round(time.time() - started, 1)), results, header, rows
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
