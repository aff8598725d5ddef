"""Whole-brain T1 to hippocampus labels: time per step, agreement with reference labels, and robustness to how the
same scan is stored.

    python -m common.benchmark.whole_brain --bundle bundles/balr_sam_segmentation \
        --scan ../shared/data/freesurfer_bert/bert_t1_brain.nii.gz \
        --reference ../shared/data/freesurfer_bert/bert_hippocampus_aseg.nii.gz --output_dir /tmp/whole_brain

1. End to end: ``python -m common.segment`` on the scan in a fresh process, start-up included (wall time).
2. Steps, in this process with the bundle loaded once: reading + registration + boxes (preprocessing; the
   registration's own time from the result), segmenting the boxes, pasting back + writing (postprocessing).
3. Agreement with ``--reference`` (a label map with 1 = left and 2 = right hippocampus, FreeSurfer's ``aseg``
   values renumbered as in ``freesurfer_bert``): Dice per side of anterior ∪ posterior, volumes beside the reference's.
4. Robustness (``--variants``): the scan rotated by 15°, resampled to 1.5 mm and to 0.8 mm, stored in another
   orientation, and with intensities rescaled; per variant the sides found and the Dice per side against the
   unmodified scan's labels, compared in world coordinates.

Writes ``whole_brain.json`` and ``whole_brain.md`` under ``--output_dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

__all__ = ["main", "make_variants", "side_dice"]

#: label values of each side in a whole-brain label map (CropTemplateRegionsd) and in the reference
SIDES = {"left": ((1, 2), 1), "right": ((3, 4), 2)}


def side_dice(labels: np.ndarray, other: np.ndarray, other_is_reference: bool) -> dict[str, float]:
    """Dice per side between a whole-brain label map and a reference (1 left, 2 right) or another label map."""
    result = {}
    for side, (values, reference_value) in SIDES.items():
        mine = np.isin(labels, values)
        theirs = other == reference_value if other_is_reference else np.isin(other, values)
        total = mine.sum() + theirs.sum()
        result[side] = float(2 * (mine & theirs).sum() / total) if total else 1.0
    return result


def make_variants(scan: Path, folder: Path) -> dict[str, tuple[Path, np.ndarray]]:
    """The scan stored five other ways: ``{name: (file, world_to_original)}``, where ``world_to_original`` (4×4)
    takes a point of the variant's world to the same anatomy in the original's world."""
    import nibabel as nib
    from nibabel.processing import resample_from_to, resample_to_output

    folder.mkdir(parents=True, exist_ok=True)
    image = nib.load(str(scan))
    data = np.asarray(image.dataobj, dtype=np.float32)
    variants = {}
    angle = np.deg2rad(15.0)
    rotation = np.eye(4)  # 15° about the left-right axis (a nodding head), the usual tilt between scans
    rotation[1:3, 1:3] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    turned = resample_from_to(nib.Nifti1Image(data, rotation @ image.affine), (image.shape, image.affine), order=1)
    variants["rotated 15°"] = (turned, np.linalg.inv(rotation))
    for spacing in (1.5, 0.8):
        resampled = resample_to_output(nib.Nifti1Image(data, image.affine), voxel_sizes=(spacing,) * 3, order=1)
        variants[f"{spacing} mm"] = (resampled, np.eye(4))
    variants["RAS orientation"] = (nib.as_closest_canonical(nib.Nifti1Image(data, image.affine)), np.eye(4))
    variants["intensities ×3.7 + 100"] = (nib.Nifti1Image(data * 3.7 + 100.0, image.affine), np.eye(4))
    written = {}
    for index, (name, (variant, to_original)) in enumerate(variants.items()):
        path = folder / f"variant{index}.nii.gz"
        nib.save(variant, str(path))
        written[name] = (path, to_original)
    return written


def _in_original_grid(labels, to_original: np.ndarray, original) -> np.ndarray:
    """A label image of a variant (nibabel), nearest neighbour on the unmodified scan's grid."""
    import nibabel as nib
    from nibabel.processing import resample_from_to

    moved = nib.Nifti1Image(np.asarray(labels.dataobj).astype(np.int16), to_original @ labels.affine)
    return np.asarray(resample_from_to(moved, original, order=0).dataobj)


def _grid_round_trip(labels: np.ndarray, original, variant_file: Path, to_original: np.ndarray) -> np.ndarray:
    """The unmodified labels taken to the variant's grid and back (nearest neighbour): the best Dice a perfect
    segmentation of the variant could reach in this comparison."""
    import nibabel as nib
    from nibabel.processing import resample_from_to

    variant = nib.load(str(variant_file))
    moved = nib.Nifti1Image(labels.astype(np.int16), np.linalg.inv(to_original) @ original.affine)
    return _in_original_grid(resample_from_to(moved, (variant.shape, variant.affine), order=0), to_original, original)


def _segment(parser, network, scan: Path) -> dict:
    """Run the bundle on one scan with the loaded network; the time of each step."""
    import torch

    preprocessing = parser.get_parsed_content("preprocessing")
    postprocessing = parser.get_parsed_content("postprocessing")
    inferer = parser.get_parsed_content("inferer")
    started = time.perf_counter()
    data = preprocessing({"image": str(scan)})
    prepared = time.perf_counter()
    with torch.no_grad():
        data["pred"] = inferer(data["image"][None], network)[0].float().cpu()
    segmented = time.perf_counter()
    postprocessing(data)
    finished = time.perf_counter()
    fit = data["image"].meta.get("template_fit", {})
    return {
        "read, register, cut boxes": prepared - started,
        "of which registration": fit.get("seconds", 0.0),
        "segment the boxes": segmented - prepared,
        "paste back, write": finished - segmented,
        "template_correlation": fit.get("correlation"),
    }


def _end_to_end(bundle: Path, scan: Path, output: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "common.segment", "--bundle", str(bundle), "--input", str(scan), "--output",
         str(output), "--quiet"], check=True, capture_output=True,
    )  # fmt: skip
    return time.perf_counter() - started


def run(args: argparse.Namespace) -> dict:
    import nibabel as nib

    from common.segment import load_bundle_for_inference

    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "date": date.today().isoformat(), "machine": f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores", "bundle": str(args.bundle), "scan": str(args.scan),
    }  # fmt: skip
    report["end_to_end_seconds"] = [
        _end_to_end(args.bundle, args.scan, output / f"cli{i}") for i in range(args.repeats)
    ]
    parser, network = load_bundle_for_inference(args.bundle, overrides={"output_dir": str(output / "steps")})
    report["steps_seconds"] = _segment(parser, network, args.scan)
    stem = Path(args.scan).name.split(".")[0]
    labels_file = output / "steps" / f"{stem}_seg.nii.gz"
    labels = np.asarray(nib.load(str(labels_file)).dataobj)
    report["volumes"] = json.loads((output / "steps" / f"{stem}_volumes.json").read_text())
    if args.reference:
        reference = nib.load(str(args.reference))
        voxel_ml = float(abs(np.linalg.det(reference.affine[:3, :3]))) / 1000
        reference = np.asarray(reference.dataobj)
        report["reference"] = {
            "dice": side_dice(labels, reference, other_is_reference=True),
            "reference_volume_ml": {side: float((reference == v).sum() * voxel_ml) for side, (_, v) in SIDES.items()},
        }
    if args.variants:
        original = nib.load(str(args.scan))
        report["variants"] = {}
        for name, (path, to_original) in make_variants(Path(args.scan), output / "variants").items():
            parser.update({"output_dir": str(output / "variants" / "out")})
            seconds = _segment(parser, network, path)
            written = nib.load(str(output / "variants" / "out" / f"{path.name.split('.')[0]}_seg.nii.gz"))
            variant_labels = _in_original_grid(written, to_original, original)
            report["variants"][name] = {"dice_vs_unmodified": side_dice(variant_labels, labels, False),
                                        "grid_ceiling": side_dice(_grid_round_trip(labels, original, path,
                                                                                   to_original), labels, False),
                                        "seconds": seconds}  # fmt: skip
    return report


def render(report: dict) -> str:
    lines = [f"# Whole-brain T1 → hippocampus labels ({report['date']}, {report['machine']})", "",
             f"`python -m common.benchmark.whole_brain` on `{report['scan']}` with `{report['bundle']}`.", "",
             "| step | seconds |", "|---|---|"]  # fmt: skip
    runs = report["end_to_end_seconds"]
    lines.append(f"| end to end (`common.segment`, fresh process, start-up included; {len(runs)} runs) | "
                 f"{' / '.join(f'{s:.1f}' for s in runs)} |")  # fmt: skip
    for step, seconds in report["steps_seconds"].items():
        if step != "template_correlation":
            lines.append(f"| {step} (bundle already loaded) | {seconds:.1f} |")
    lines.append(f"\nTemplate correlation: {report['steps_seconds']['template_correlation']}.")
    sides = report["volumes"].get("sides", {})
    if "reference" in report:
        ref = report["reference"]
        lines += ["", "| side | Dice vs reference | volume (mL) | reference volume (mL) |", "|---|---|---|---|"]
        for side in ("left", "right"):
            lines.append(f"| {side} | {ref['dice'][side]:.3f} | {sides.get(side, {}).get('volume_ml', 0):.2f} | "
                         f"{ref['reference_volume_ml'][side]:.2f} |")  # fmt: skip
    if report["volumes"].get("warnings"):
        lines.append("\nWarnings: " + "; ".join(report["volumes"]["warnings"]))
    if "variants" in report:
        lines += ["", "| variant | Dice vs unmodified, left | right | grid ceiling, left / right | seconds (steps) |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for name, row in report["variants"].items():
            steps = ("read, register, cut boxes", "segment the boxes", "paste back, write")
            total = sum(row["seconds"][step] for step in steps)
            ceiling = row["grid_ceiling"]
            dice = row["dice_vs_unmodified"]
            lines.append(f"| {name} | {dice['left']:.3f} | {dice['right']:.3f} | {ceiling['left']:.3f} / "
                         f"{ceiling['right']:.3f} | {total:.1f} |")  # fmt: skip
        lines.append("\nGrid ceiling: the unmodified labels taken to the variant's grid and back (nearest neighbour), "
                     "the best a perfect segmentation of the variant could score in this comparison.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.benchmark.whole_brain", description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", required=True, type=Path, help="a hippocampus bundle folder")
    parser.add_argument("--scan", required=True, type=Path, help="a whole-brain T1 (NIfTI)")
    parser.add_argument("--reference", type=Path, help="reference labels: 1 left, 2 right hippocampus")
    parser.add_argument("--output_dir", required=True, type=Path)
    parser.add_argument("--repeats", type=int, default=2, help="end-to-end runs (the first may read cold caches)")
    parser.add_argument("--variants", action="store_true", help="also the five stored-differently variants")
    args = parser.parse_args(argv)
    for path in (args.bundle, args.scan, args.reference):
        if path is not None and not path.exists():
            parser.error(f"{path}: no such file or folder")
    report = run(args)
    (args.output_dir / "whole_brain.json").write_text(json.dumps(report, indent=2) + "\n")
    text = render(report)
    (args.output_dir / "whole_brain.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
