"""Export a trained bundle as one plain full-weight checkpoint, with every mergeable adapter folded into its layer.

    python -m common.export_merged --bundle bundles/sam2lora_fundus_segmentation [--weights models/model.pt] \\
        [--output models/model_merged.pt] [--config hippocampus_inference.json] [--set backbone=litemedsam]

The network is built as ``inference.json`` builds it, the adapter weights are loaded, and each adapter layer whose
update is linear (LoRA, SAM2LoRA's LoRA, S-SAM's SVD re-scaling) is replaced by a plain ``nn.Linear`` / ``nn.Conv2d``
holding ``W + ΔW``: the same outputs within float rounding, with no adapter code at run time. Layers that cannot be
folded stay as modules: Conv-LoRA's experts (non-linear convolutions between the low-rank factors) and BALR-SAM's
bottleneck adapters (a GELU between their factors), as do the trained extra modules of every method (heads, skip
fusions, BALR's detail-enhancement branch and decoder attention). The file holds every tensor (base weights
included), so it runs without the base checkpoint:

    python -m monai.bundle run --config_file "['configs/inference.json','configs/merged_inference.json']"

and ``python -m monai.bundle onnx_export --net_id network --ckpt_file models/model_merged.pt`` with the same two
configs exports the prompt-free network to ONNX.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["export_merged", "main"]


def export_merged(
    bundle: str | Path,
    output: str | Path | None = None,
    weights: str | Path | None = None,
    configs: Sequence[str] = (),
    overrides: dict | None = None,
) -> tuple[Path, int, list[str]]:
    """Write the merged full-weight state dict of ``bundle``'s trained network.

    Returns:
        the file written, the number of adapter layers folded, and the names of those kept as modules.
    """
    from common.adapters import adapter_layers, merge_and_unload
    from common.segment import load_bundle_for_inference

    bundle = Path(bundle)
    _, network = load_bundle_for_inference(bundle, weights, configs, overrides)
    network = getattr(network, "module", network).cpu()
    before = len(list(adapter_layers(network)))
    merge_and_unload(network, strict=False)
    kept = [name for name, _ in adapter_layers(network)]
    output = Path(output) if output is not None else bundle / "models" / "model_merged.pt"
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    torch.save({k: v.detach().cpu() for k, v in network.state_dict().items()}, partial)
    os.replace(partial, output)  # never a half-written file under the real name
    return output, before - len(kept), kept


def main(argv: Sequence[str] | None = None) -> int:
    from common.cli import config_override
    from common.segment import SegmentationError

    parser = argparse.ArgumentParser(prog="python -m common.export_merged", description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", required=True, help="the bundle folder")
    parser.add_argument("--weights", default=None, help="adapter checkpoint (default <bundle>/models/model.pt)")
    parser.add_argument("--output", default=None, help="default <bundle>/models/model_merged.pt")
    parser.add_argument("--config", action="append", default=[], help="extra inference config of the bundle")
    parser.add_argument(
        "--set", action="append", default=[], type=config_override, metavar="ID=VALUE", help="any config value"
    )
    args = parser.parse_args(argv)
    overrides = dict(args.set)
    try:
        path, merged, kept = export_merged(args.bundle, args.output, args.weights, args.config, overrides)
    except (SegmentationError, OSError) as error:  # OSError: an output path under a file, a full disk
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{path}: {merged} adapter layers folded into plain layers, {len(kept)} kept as modules")
    for name in kept:
        print(f"  kept (cannot be merged): {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
