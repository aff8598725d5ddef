"""What S-SAM's two text-only prompting options change: a decoder-side comparison on real MR slices.

S-SAM prompts the mask decoder with one token per label name. The reference drops SAM's dense "no mask" embedding
and the image positional encoding in that case; ``SSamNet`` makes both options (``use_dense_prompt``,
``use_image_pe``). This command trains the parts of S-SAM that sit after the image encoder (Text Affine Layer and
the decoder transformer's LayerNorms) for each of the four combinations on the *same cached* LiteMedSAM image
embeddings of hippocampus slices, and reports the Dice of each class on held-out slices from other volumes. The
encoder's SVD scales are not trained here (that is what makes caching possible), so this isolates the prompting
options from the encoder adaptation; it runs on 2 CPU cores in about 10 minutes.

    python -m common.datasets.make_datalist --dataset_dir ../shared/data/msd_hippocampus --output_dir /tmp/hippo \\
        --val_fraction 0.008 --test_fraction 0.2 --seed 0 --skip_unlabelled \\
        --labels '{"1": "anterior hippocampus", "2": "posterior hippocampus"}'
    python -m common.benchmark.experiments.s_sam_prompt_options --dataset_dir /tmp/hippo --output_dir /tmp/s_sam_options
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceFocalLoss

from common.backbones.forward import ImageFeatures
from common.networks import SSamNet

from .cached_slices import cache_embeddings, held_out_dice, sample_slices, write_results

__all__ = ["train_decoder_side", "main"]


def _class_targets(label_map: torch.Tensor, num_classes: int, size: tuple[int, int]) -> torch.Tensor:
    label_map = F.interpolate(label_map, size=size, mode="nearest")
    return torch.cat([(label_map == k) for k in range(1, num_classes + 1)], dim=1).float()


def s_sam_held_out_dice(net: SSamNet, embedding: torch.Tensor, label_map: torch.Tensor) -> list[float]:
    """Dice per class over all held-out slices, label map = argmax over (0.5 background, class probabilities)."""
    net.eval()
    with torch.no_grad():
        logits = net.decode_classes(ImageFeatures(embedding=embedding))
    net.train()
    background = torch.full_like(logits[:, :1], 0.5)
    return held_out_dice(torch.cat([background, logits.sigmoid()], dim=1).argmax(1), label_map, net.num_classes)


def train_decoder_side(
    net: SSamNet,
    embedding: torch.Tensor,
    label_map: torch.Tensor,
    iterations: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
) -> list[float]:
    """Train everything of ``net`` outside the image encoder on cached embeddings with the bundle's loss; returns
    the loss per iteration."""
    torch.manual_seed(seed)
    params = [p for n, p in net.named_parameters() if p.requires_grad and ".image_encoder." not in n]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=1e-2)
    loss_fn = DiceFocalLoss(sigmoid=True, gamma=3.0, alpha=0.75, smooth_nr=1.0, smooth_dr=1.0)
    losses = []
    for _ in range(iterations):
        index = torch.randint(0, embedding.shape[0], (batch_size,))
        logits = net.decode_classes(ImageFeatures(embedding=embedding[index]))
        loss = loss_fn(logits, _class_targets(label_map[index], net.num_classes, logits.shape[-2:]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m common.benchmark.experiments.s_sam_prompt_options", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--dataset_dir", required=True, help="folder with a hippocampus-style datalist.json")
    parser.add_argument("--output_dir", required=True, help="where results.json and results.md go")
    parser.add_argument("--num_volumes", type=int, default=48, help="training volumes to draw slices from")
    parser.add_argument("--slices_per_volume", type=int, default=3)
    parser.add_argument("--held_out_fraction", type=float, default=1 / 6, help="last volumes' slices held out")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--learning_rate", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0, help="seed of the slice sampling")
    parser.add_argument("--train_seeds", type=int, nargs="+", default=[0, 1, 2], help="one training run per seed")
    args = parser.parse_args(argv)

    started = time.time()
    images, label_map, names = sample_slices(args.dataset_dir, args.num_volumes, args.slices_per_volume, 64, args.seed)
    split = int(round(images.shape[0] * (1 - args.held_out_fraction)))
    embedding = cache_embeddings("litemedsam", images)
    print(f"cached LiteMedSAM embeddings of {len(images)} slices ({split} training, {len(images) - split} held out)")
    results = []
    for dense, pe in itertools.product((False, True), repeat=2):
        per_seed, t = [], time.time()
        for seed in args.train_seeds:
            torch.manual_seed(seed)
            net = SSamNet("litemedsam", label_names=names, use_dense_prompt=dense, use_image_pe=pe)
            losses = train_decoder_side(
                net, embedding[:split], label_map[:split], args.iterations, args.batch_size, args.learning_rate, seed
            )
            dice = s_sam_held_out_dice(net, embedding[split:], label_map[split:])
            per_seed.append(
                {
                    "seed": seed,
                    "dice": dice,
                    "loss_first_10": float(np.mean(losses[:10])),
                    "loss_last_10": float(np.mean(losses[-10:])),
                }
            )
        row = {
            "use_dense_prompt": dense,
            "use_image_pe": pe,
            # mean over the training seeds (escaping the saturated start is a matter of luck at short budgets)
            "held_out_dice": {n: float(np.nanmean([r["dice"][i] for r in per_seed])) for i, n in enumerate(names)},
            "loss_first_10": float(np.mean([r["loss_first_10"] for r in per_seed])),
            "loss_last_10": float(np.mean([r["loss_last_10"] for r in per_seed])),
            "per_seed": per_seed,
            "seconds": round(time.time() - t, 1),
        }
        results.append(row)
        print(json.dumps(row), flush=True)
    header = ["use_dense_prompt", "use_image_pe"]
    header += [f"held-out Dice {n}, mean of {len(args.train_seeds)} seeds" for n in names]
    header += ["seeds that learned", "loss first → last 10"]
    rows = [
        [r["use_dense_prompt"], r["use_image_pe"]]
        + [f"{d:.3f}" for d in r["held_out_dice"].values()]
        + [
            f"{sum(any(d > 0 for d in seed['dice']) for seed in r['per_seed'])} of {len(r['per_seed'])}",
            f"{r['loss_first_10']:.3f} → {r['loss_last_10']:.3f}",
        ]
        for r in results
    ]
    write_results(
        args.output_dir, dict(vars(args), seconds_total=round(time.time() - started, 1)), results, header, rows
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
