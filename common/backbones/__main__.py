"""List the backbones, or time a forward+backward pass of some of them.

    python -m common.backbones                      # table of names, input sizes, normalisation
    python -m common.backbones --time sam_vit_test sam2.1_hiera_test --batch 2 --repeats 5
    python -m common.backbones --download bundles/balr_sam_segmentation   # the paper backbone's checkpoint

Timing builds each named backbone with random weights (no download), wraps it in the prompt-free network and reports
the median of ``--repeats`` forward+backward passes on a random batch at the backbone's input size.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from . import BACKBONES


def _list() -> None:
    print(f"{'name':<20}{'family':<8}{'input':>6}  {'resize':<10}{'mean (0-1 scale)':<24}description")
    for spec in BACKBONES.values():
        mean = "(" + ", ".join(f"{m:.3f}" for m in spec.pixel_mean) + ")"
        resize = "long+pad" if spec.keep_aspect_ratio else "square"
        print(f"{spec.name:<20}{spec.family:<8}{spec.input_size:>6}  {resize:<10}{mean:<24}{spec.description}")


def _time(names: list[str], batch: int, repeats: int) -> None:
    from common.networks import SamSegmentationNet

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {batch}, median of {repeats}")
    for name in names:
        net = SamSegmentationNet(name, checkpoint=None)
        size = net.input_size
        image = torch.rand(batch, 3, size, size)
        seconds = []
        for i in range(repeats + 1):
            start = time.perf_counter()
            net(image).mean().backward()
            net.zero_grad(set_to_none=True)
            if i:  # the first pass warms up allocators and kernels
                seconds.append(time.perf_counter() - start)
        print(f"{name:<20}{size:>5}²  forward+backward {statistics.median(seconds):.3f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.backbones", description=__doc__.split("\n\n")[0])
    parser.add_argument("--time", nargs="+", metavar="NAME", help="time forward+backward of these backbones")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--download",
        metavar="BUNDLE",
        help="fetch the files the bundle's paper_large_files.yml lists (the paper backbone's checkpoint) into it",
    )
    args = parser.parse_args(argv)
    if args.download:
        from .official_checkpoints import download_paper_weights

        try:
            for path in download_paper_weights(args.download):
                print(f"{path}: ready (sha256 checked)")
        except (OSError, ValueError, RuntimeError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.time:
        _time(args.time, args.batch, args.repeats)
    else:
        _list()
    return 0


if __name__ == "__main__":
    sys.exit(main())
