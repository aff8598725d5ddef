"""Volume inference speed: slices per second with batched slices versus one slice per forward pass.

Runs the prompt-free network on one real volume (read and checked by ``read_scan``, scaled by the bundles'
``ScaleScanIntensityd``, left in its stored orientation) through :class:`common.engines.SliceBatchInferer`, first one
slice at a time, then ``--batch_size`` slices per forward pass, same backbone, same slices, best of ``--repeats``.
Also checks that both give the same logits.

    python -m common.benchmark.experiments.slice_batching --volume ../shared/data/totalsegmentator_samples/example_ct_sm.nii.gz \
        --intensity ct:abdomen --backbone sam_vit_test --output_dir /tmp/slice_batching
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from common.data import read_scan
from common.data.intensity import ScaleScanIntensityd
from common.engines import SliceBatchInferer
from common.networks import SamSegmentationNet

from .cached_slices import write_results

__all__ = ["main", "slices_per_second"]


def slices_per_second(network, volume: torch.Tensor, batch_size: int, spatial_axis: int, repeats: int):
    """Best-of-``repeats`` slices/s and the logits of ``SliceBatchInferer(batch_size)`` on ``1×C×H×W×D``."""
    inferer = SliceBatchInferer(spatial_axis=spatial_axis, batch_size=batch_size)
    best, logits = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        with torch.no_grad():
            logits = inferer(volume, network)
        best = min(best, time.perf_counter() - started)
    return volume.shape[2 + spatial_axis] / best, logits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m common.benchmark.experiments.slice_batching", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--volume", required=True, help="a NIfTI / NRRD / DICOM-folder volume")
    parser.add_argument("--output_dir", required=True, help="where results.json and results.md go")
    parser.add_argument("--backbone", default="sam_vit_test")
    parser.add_argument("--intensity", default="mr", help="as the bundles' 'intensity' setting")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--slice_axis", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    volume = ScaleScanIntensityd("image", args.intensity)({"image": read_scan(args.volume, dimension=3)})["image"]
    volume = volume.as_tensor()[None]
    network = SamSegmentationNet(args.backbone).eval()  # default weights: real where offline, random for tests
    rows, results = [], []
    reference = None
    for batch_size in (1, args.batch_size):
        rate, logits = slices_per_second(network, volume, batch_size, args.slice_axis, args.repeats)
        reference = logits if reference is None else reference
        difference = float((logits - reference).abs().max())
        results.append({"batch_size": batch_size, "slices_per_second": rate, "max_abs_logit_difference": difference})
        print(f"batch {batch_size}: {rate:.1f} slices/s")
    speedup = results[1]["slices_per_second"] / results[0]["slices_per_second"]
    for result in results:
        rows.append(
            [
                result["batch_size"],
                f"{result['slices_per_second']:.1f}",
                f"{result['slices_per_second'] / results[0]['slices_per_second']:.2f}×",
                f"{result['max_abs_logit_difference']:.1e}",
            ]
        )
    settings = {
        **vars(args),
        "volume_shape": list(volume.shape[2:]),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "speedup": speedup,
    }
    write_results(
        args.output_dir, settings, results, ["slices per batch", "slices/s", "vs one at a time", "max |Δ logit|"], rows
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
