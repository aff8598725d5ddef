"""Vessel accuracy of a bundle's adapter on fundus pictures from a camera it was or was not trained on.

    python -m common.benchmark.cross_camera --bundle bundles/sam2lora_fundus_segmentation --dataset hrf_av \\
        --output_dir /tmp/cross_camera [--split test] [--max_cases N] [--weights W] [--set fov_diameter=null] \\
        [--match_intensity histogram --reference_exclude chase_Image_03R chase_Image_06R]

Each picture of the split is segmented through the product route (:func:`common.segment.segment_scans`, the bundle's
own ``inference.json``, so the field-of-view resampling and threshold are the bundle's) and scored inside the
dataset's FOV mask (derived from the picture where the release has none): Dice, AUC, sensitivity, specificity, and
seconds per picture. ``--match_intensity`` first maps each picture's colours inside its FOV onto those of the training
camera's pictures (``--intensity_reference``, less ``--reference_exclude``): per channel, either mean and standard
deviation (``meanstd``) or the whole histogram (``histogram``, :func:`skimage.exposure.match_histograms`), to
measure whether an inference-time photometric normalisation helps a camera the adapter was not trained on.
Writes ``<output_dir>/<dataset>_<split>.md`` and ``.json`` with per-picture numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from common.cli import config_override, data_root

__all__ = ["CAMERAS", "camera_cases", "match_intensity", "mean_of_cases", "score_bundle", "main"]

#: dataset name → (folder under the data root, published layout reader in common.datasets.fundus, camera)
CAMERAS = {
    "chase_db1": ("chase_db1", "chase_db1", "Nidek NM-200-D, 999×960, 30° field"),
    "hrf_av": ("hrf_av", "hrf_av", "Canon CR-1, 3504×2336, 45° field"),
}



def camera_cases(dataset: str, data_root: Path, split: str) -> list[dict]:
    """``[{"name", "image", "truth" (H×W bool), "fov" (H×W bool)}]`` of one split (``test`` or ``training``)."""
    from common.datasets.fundus import FUNDUS_DATASETS
    from common.data.transforms import field_of_view

    folder, reader, _ = CAMERAS[dataset]
    wanted = {"test": "testing", "training": "training"}[split]
    cases = []
    for case in FUNDUS_DATASETS[reader][1](data_root / folder):
        if (case.split or "training") != wanted:
            continue
        picture = np.asarray(Image.open(case.image).convert("RGB"))
        fov = case.fov() if case.fov is not None else field_of_view(picture)
        cases.append({"name": case.case_id, "image": str(case.image), "truth": case.label() > 0, "fov": fov > 0})
    return cases


def match_intensity(cases: list[dict], reference: list[dict], how: str, work_dir: Path) -> list[dict]:
    """``cases`` with each picture's colours inside its FOV mapped onto those of the ``reference`` pictures (inside
    theirs; every 7th pixel, enough for 3 channels' statistics), written as PNG under ``work_dir``: per channel,
    mean and standard deviation (``how="meanstd"``) or the histogram (``"histogram"``). Outside the FOV unchanged."""
    from skimage.exposure import match_histograms

    pixels = np.concatenate([np.asarray(Image.open(c["image"]).convert("RGB"))[c["fov"]][::7] for c in reference])
    pixels = pixels.astype(np.float32)
    mean, std = pixels.mean(0), pixels.std(0)
    matched = []
    for case in cases:
        picture = np.asarray(Image.open(case["image"]).convert("RGB")).astype(np.float32)
        inside = picture[case["fov"]]
        if how == "meanstd":
            picture[case["fov"]] = (inside - inside.mean(0)) / np.maximum(inside.std(0), 1e-6) * std + mean
        else:
            picture[case["fov"]] = match_histograms(inside, pixels, channel_axis=-1)
        path = work_dir / "matched" / f"{case['name']}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(picture, 0, 255).round().astype(np.uint8)).save(path)
        matched.append({**case, "image": str(path)})
    return matched


def score_bundle(
    bundle: Path,
    cases: list[dict],
    work_dir: Path,
    weights: Path | None = None,
    overrides: dict | None = None,
    configs: tuple[str, ...] = (),
) -> list[dict]:
    """Segment each case with the bundle (``inference.json``, then ``configs`` of its ``configs/`` folder;
    probabilities written) and score it; one dict of metrics per case."""
    from common.metrics import vessel_metrics
    from common.segment import segment_scans

    rows = []
    for case in cases:
        picture = work_dir / "in" / f"{case['name']}{Path(case['image']).suffix}"
        picture.parent.mkdir(parents=True, exist_ok=True)
        picture.unlink(missing_ok=True)
        picture.symlink_to(Path(case["image"]).resolve())
        out = work_dir / "out"
        started = time.perf_counter()
        results = segment_scans(
            bundle, picture, out, weights, configs, {**(overrides or {}), "save_probabilities": True}, progress=False
        )
        seconds = time.perf_counter() - started
        if results.get(str(picture)) != "ok":
            raise RuntimeError(f"{case['name']}: {results}")
        mask = np.asarray(Image.open(out / f"{picture.stem}_seg.png")) > 0
        probability = np.asarray(Image.open(out / f"{picture.stem}_prob.tif"), dtype=np.float32)
        metrics = vessel_metrics(mask, probability, case["truth"], case["fov"])
        rows.append({"case": case["name"], **{k: round(float(v), 4) for k, v in metrics.items()},
                     "seconds": round(seconds, 1), "dice_by_threshold": _dice_by_threshold(probability, case)})  # fmt: skip
        logging.getLogger(__name__).info("%s: %s", case["name"], rows[-1])
    return rows


#: probability thresholds at which every picture's Dice is also reported, to choose the bundle's threshold on a
#: validation split (never on a test split)
THRESHOLDS = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)


def _dice_by_threshold(probability: np.ndarray, case: dict) -> dict[str, float]:
    inside = case["fov"]
    truth = case["truth"][inside]
    values = probability[inside]
    dice = {}
    for threshold in THRESHOLDS:
        pred = values > threshold
        overlap = int(np.sum(pred & truth))
        dice[f"{threshold:.2f}"] = round(2 * overlap / max(int(pred.sum()) + int(truth.sum()), 1), 4)
    return dice


def mean_of_cases(rows: list[dict]) -> dict:
    """Means of :func:`score_bundle`'s rows: Dice, AUC, sensitivity, specificity, seconds, Dice per threshold."""
    keys = ("dice", "auc", "sensitivity", "specificity", "seconds")
    summary = {key: round(float(np.mean([row[key] for row in rows])), 4) for key in keys}
    summary["dice_by_threshold"] = {
        t: round(float(np.mean([row["dice_by_threshold"][t] for row in rows])), 4) for t in rows[0]["dice_by_threshold"]
    }
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.benchmark.cross_camera", description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", required=True, type=Path)
    parser.add_argument("--dataset", required=True, choices=sorted(CAMERAS))
    parser.add_argument("--split", default="test", choices=("test", "training"))
    parser.add_argument("--max_cases", type=int, default=None, help="the first N pictures of the split")
    parser.add_argument(
        "--cases", nargs="+", default=None, metavar="NAME", help="only these pictures of the split (e.g. validation ones)"
    )
    parser.add_argument("--weights", type=Path, default=None, help="adapter checkpoint (default: the bundle's)")
    parser.add_argument(
        "--data_root", type=Path, default=None, help="folder holding the fundus sets (default: $MONAI_SAM_PEFT_DATA, "
        "else ../shared/data)"
    )
    parser.add_argument("--set", action="append", default=[], type=config_override, metavar="ID=VALUE")
    parser.add_argument(
        "--match_intensity", choices=("meanstd", "histogram"), default=None,
        help="map each picture's colours inside its FOV onto the reference camera's training pictures first",
    )  # fmt: skip
    parser.add_argument("--intensity_reference", choices=sorted(CAMERAS), default="chase_db1")
    parser.add_argument(
        "--reference_exclude", nargs="+", default=[], metavar="NAME",
        help="reference training pictures left out of the colour statistics (its validation pictures)",
    )  # fmt: skip
    parser.add_argument("--label", default=None, help="name of this configuration in the report")
    parser.add_argument("--output_dir", required=True, type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    args.data_root = data_root(args.data_root)
    if not (args.data_root / CAMERAS[args.dataset][0]).is_dir():
        print(f"error: {args.data_root / CAMERAS[args.dataset][0]} not found: give --data_root", file=sys.stderr)
        return 1
    cases = camera_cases(args.dataset, args.data_root, args.split)
    if args.cases:
        unknown = sorted(set(args.cases) - {case["name"] for case in cases})
        if unknown:
            print(f"error: no picture {', '.join(unknown)} in {args.dataset} {args.split}", file=sys.stderr)
            return 1
        cases = [case for case in cases if case["name"] in args.cases]
    cases = cases[: args.max_cases]
    overrides = dict(args.set)
    with tempfile.TemporaryDirectory() as work:
        if args.match_intensity:
            excluded = set(args.reference_exclude)
            reference = camera_cases(args.intensity_reference, args.data_root, "training")
            reference = [case for case in reference if case["name"] not in excluded]
            cases = match_intensity(cases, reference, args.match_intensity, Path(work))
        rows = score_bundle(args.bundle, cases, Path(work), args.weights, overrides)
    label = args.label or (", ".join(f"{k}={v}" for k, v in overrides.items()) or "bundle defaults")
    if args.match_intensity:
        label += f"; colours {args.match_intensity}-matched to {args.intensity_reference} inside the FOV"
    report = {
        "command": "python -m common.benchmark.cross_camera " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
        "bundle": str(args.bundle), "dataset": args.dataset, "camera": CAMERAS[args.dataset][2],
        "split": args.split, "configuration": label, "mean": mean_of_cases(rows), "cases": rows,
    }  # fmt: skip
    args.output_dir.mkdir(parents=True, exist_ok=True)
    stem = args.output_dir / f"{args.dataset}_{args.split}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    mean = report["mean"]
    lines = [
        f"# {args.bundle.name} on {args.dataset} {args.split} ({report['date']}, {report['machine']})", "",
        f"`{report['command']}`; camera: {report['camera']}; configuration: {label}.", "",
        "| picture | Dice | AUC | sensitivity | specificity | seconds |", "|---|---|---|---|---|---|",
        *(f"| {r['case']} | {r['dice']:.3f} | {r['auc']:.3f} | {r['sensitivity']:.3f} | {r['specificity']:.3f} | "
          f"{r['seconds']:.1f} |" for r in rows),
        f"| **mean of {len(rows)}** | **{mean['dice']:.3f}** | **{mean['auc']:.3f}** | {mean['sensitivity']:.3f} | "
        f"{mean['specificity']:.3f} | {mean['seconds']:.1f} |", "",
        "Mean Dice at other probability thresholds (choose the bundle's threshold on a validation split only): "
        + ", ".join(f"{t}: {d:.3f}" for t, d in mean["dice_by_threshold"].items()) + ".",
    ]  # fmt: skip
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
