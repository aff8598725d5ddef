"""Label efficiency on MSD hippocampus: test Dice against the number of labelled training volumes, one line per
method, from the runs of ``common.benchmark.accuracy --labelled_cases N --subset_seed S`` (each method at the same
wall-clock budget), with LiteMedSAM's released weights prompted by each slice's ground-truth box as the zero-shot
reference row.

    python -m common.benchmark.label_efficiency --runs runs/label_efficiency/msd_hippocampus [--zero_shot]

writes ``label_efficiency.md`` / ``.json`` (method × labelled volumes: mean test Dice over both structures, mean and
range over seeds) and ``label_efficiency.png`` (Dice against labelled volumes, log scale, the seeds' range shaded)
into the runs folder. ``--zero_shot`` first segments the test volumes with box prompts (``zero_shot.json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

__all__ = ["box_prompted_volume", "zero_shot_box_prompts", "label_efficiency_table", "main"]

logger = logging.getLogger("common.benchmark.label_efficiency")

METHOD_NAMES = {"balr_sam": "BALR-SAM", "conv_lora": "Conv-LoRA", "s_sam": "S-SAM", "sam2lora": "SAM2LoRA",
                "unet": "MONAI UNet (from scratch)"}  # fmt: skip


def box_prompted_volume(
    network, image: np.ndarray, label: np.ndarray, num_classes: int, batch_size: int = 16
) -> np.ndarray:
    """Segment ``image`` (``H×W×D``, axial slices along the last axis) slice by slice with one tight box per
    structure taken from ``label`` on that slice: the zero-shot upper bound of box prompting. Each slice is encoded
    once for all its structures; where two structures' masks overlap, the larger logit wins. Intensities are scaled
    to the volume's 0.5-99.5 percentiles by the bundles' own transform (``ScaleScanIntensityd``, ``"mr"``).

    Returns:
        ``H×W×D`` integer labels 0..num_classes.
    """
    from common.backbones.forward import prompt_embeddings
    from common.data.intensity import ScaleScanIntensityd

    volume = torch.as_tensor(image, dtype=torch.float32)[None]  # channel first: a volume to the transform
    scaled = np.asarray(ScaleScanIntensityd("image", "mr")({"image": volume})["image"][0], dtype=np.float32)
    prediction = np.zeros(label.shape, np.int64)
    height, width = label.shape[:2]
    slices = [z for z in range(label.shape[2]) if label[:, :, z].any()]
    for start in range(0, len(slices), batch_size):
        chunk = slices[start : start + batch_size]
        pictures = torch.from_numpy(np.stack([scaled[:, :, z] for z in chunk]))[:, None]
        with torch.no_grad():
            features = network.encode(network.preprocess(pictures))
            best = torch.full((len(chunk), height, width), -torch.inf)
            for k in range(1, num_classes + 1):
                present, boxes = [], []
                for z in chunk:
                    rows, cols = np.nonzero(label[:, :, z] == k)
                    present.append(bool(rows.size))  # a slice without structure k gets a dummy box, ignored
                    boxes.append([cols.min(), rows.min(), cols.max(), rows.max()] if rows.size else [0, 0, 1, 1])
                boxes = network.to_input_coordinates(torch.tensor(boxes, dtype=torch.float32), height, width)
                sparse, dense = prompt_embeddings(network.sam, features, boxes, None, None)
                logits = network.postprocess(network.decode(features, sparse, dense)[0], height, width)[:, 0]
                logits[~torch.tensor(present)] = -torch.inf
                wins = (logits > 0) & (logits > best)
                for i, z in enumerate(chunk):
                    prediction[:, :, z][wins[i].numpy()] = k
                best = torch.maximum(best, logits)
    return prediction


def zero_shot_box_prompts(data_dir: Path, max_cases: int | None = None) -> dict:
    """LiteMedSAM's released weights, no training, prompted with each structure's ground-truth box on every slice
    (:func:`box_prompted_volume`) on the test split of ``data_dir/datalist.json``: per-case and mean 3D Dice and HD95
    (mm), as the accuracy runs report them."""
    import nibabel

    from common.data.datalist import load_datalist
    from common.metrics import volume_metrics
    from common.networks import SamSegmentationNet

    network = SamSegmentationNet("litemedsam").eval()  # the packaged released weights
    per_case = {}
    cases = load_datalist(data_dir, "testing")[:max_cases]
    for index, case in enumerate(cases, 1):
        image = nibabel.load(case["image"])
        label = np.asarray(nibabel.load(case["label"]).dataobj).astype(np.int64)
        prediction = box_prompted_volume(network, np.asarray(image.dataobj, np.float32), label, 2)
        stem = Path(case["image"]).name.split(".")[0]
        per_case[stem] = volume_metrics(prediction, label, 2, spacing=image.header.get_zooms()[:3])
        logger.info("%d/%d %s: Dice %s", index, len(cases), stem, [round(d, 3) for d in per_case[stem]["dice"]])
    dice = np.array([m["dice"] for m in per_case.values()], float)
    return {
        "method": "LiteMedSAM zero-shot, ground-truth box per structure and slice",
        "labelled_cases": {"count": 0, "seed": None},
        "test_cases": len(per_case),
        "mean": {"mean_dice": float(np.nanmean(dice)), "dice": dict(zip(("1", "2"), np.nanmean(dice, 0).tolist()))},
        "per_case": per_case,
    }


def label_efficiency_table(runs_dir: Path) -> dict:
    """``{method: {labelled volumes: [mean test Dice of each seed]}}`` from every ``*/metrics.json`` under
    ``runs_dir`` that trained on a labelled subset (``labelled_cases.seed`` set), plus ``zero_shot.json``'s row."""
    table: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(runs_dir.glob("*/metrics.json")):
        result = json.loads(path.read_text())
        subset = result.get("labelled_cases") or {}
        if subset.get("seed") is None:
            continue
        table[result["method"]][int(subset["count"])].append(float(result["mean"]["mean_dice"]))
    zero_shot = runs_dir / "zero_shot.json"
    if zero_shot.is_file():
        table["litemedsam_box_prompts"][0].append(json.loads(zero_shot.read_text())["mean"]["mean_dice"])
    return {method: dict(sorted(counts.items())) for method, counts in table.items()}


def _cell(values: list[float]) -> str:
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.3f} (1 seed)"
    return f"{np.mean(values):.3f} ({min(values):.3f}–{max(values):.3f}, {len(values)} seeds)"


def write_report(runs_dir: Path, budget: str) -> str:
    """``label_efficiency.md`` / ``.json`` / ``.png`` in ``runs_dir``; returns the Markdown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    table = label_efficiency_table(runs_dir)
    counts = sorted({n for row in table.values() for n in row if n > 0})
    header = "| method | " + " | ".join(f"{n} labelled" for n in counts) + " |"
    rows = []
    for method, row in table.items():
        if method == "litemedsam_box_prompts":
            rows.append(f"| LiteMedSAM, no training, ground-truth box per slice (zero-shot reference) | "
                        f"{_cell(row[0])} |" + " |" * (len(counts) - 1))  # fmt: skip
            continue
        cells = " | ".join(_cell(row.get(n, [])) for n in counts)
        rows.append(f"| {METHOD_NAMES.get(method, method)} | {cells} |")
    text = "\n".join(
        [
            "# Label efficiency on MSD hippocampus",
            "",
            f"Mean test Dice over both structures (52 test volumes), per number of labelled training volumes; "
            f"mean over seeds (range, seeds). Each run: {budget}; model chosen on the 26 validation volumes.",
            "",
            header,
            "|" + "---|" * (header.count("|") - 1),
            *rows,
            "",
        ]
    )
    (runs_dir / "label_efficiency.md").write_text(text)
    (runs_dir / "label_efficiency.json").write_text(json.dumps(table, indent=2) + "\n")
    figure, axis = plt.subplots(figsize=(6, 4), dpi=120)
    for method, row in table.items():
        points = [(n, values) for n, values in row.items() if n > 0]
        if method == "litemedsam_box_prompts":
            axis.axhline(row[0][0], color="0.4", linestyle=":", label="LiteMedSAM + true boxes (no training)")
            continue
        if not points:
            continue
        n = np.array([p[0] for p in points])
        mean = np.array([np.mean(p[1]) for p in points])
        line = axis.plot(n, mean, marker="o", label=METHOD_NAMES.get(method, method))[0]
        axis.fill_between(n, [min(p[1]) for p in points], [max(p[1]) for p in points], color=line.get_color(),
                          alpha=0.2)  # fmt: skip
    axis.set_xscale("log")
    axis.set_xticks(counts, [str(n) for n in counts])
    axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # only the labelled counts are labelled
    axis.set_xlabel("labelled training volumes")
    axis.set_ylabel("test Dice (mean of both structures)")
    axis.set_title("MSD hippocampus, equal wall-clock budget per run")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(runs_dir / "label_efficiency.png")
    plt.close(figure)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m common.benchmark.label_efficiency", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--runs", required=True, help="the accuracy runs' dataset folder (<output_dir>/msd_hippocampus)"
    )
    parser.add_argument("--zero_shot", action="store_true", help="segment the test volumes with box prompts first")
    parser.add_argument("--max_cases", type=int, default=None, help="--zero_shot on the first N test volumes only")
    parser.add_argument("--budget", default="15 min of wall-clock training on 2 CPU cores",
                        help="the runs' budget, as the table states it")  # fmt: skip
    settings = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s", stream=sys.stdout)
    runs_dir = Path(settings.runs).resolve()  # the datalist holds paths relative to its folder
    if not (runs_dir / "data" / "datalist.json").is_file():
        print(f"error: {runs_dir} holds no accuracy runs (no data/datalist.json)", file=sys.stderr)
        return 1
    if settings.zero_shot:
        result = zero_shot_box_prompts(runs_dir / "data", settings.max_cases)
        (runs_dir / "zero_shot.json").write_text(json.dumps(result, indent=2) + "\n")
    print(write_report(runs_dir, settings.budget))
    return 0


if __name__ == "__main__":
    sys.exit(main())
