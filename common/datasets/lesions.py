"""Datalists for public polyp and skin-lesion datasets in their published folder layouts (binary lesion masks).

    python -m common.datasets.lesions --output_dir data/polyps --dataset kvasir_seg=/data/Kvasir-SEG \\
        --dataset cvc_clinicdb=/data/CVC-ClinicDB
    python -m common.datasets.lesions --output_dir data/isic2017 --dataset isic2017=/data/ISIC2017

Labels are written as canonical PNGs (0 background, 1 lesion) under ``output_dir``; images are referenced in place.
ISIC 2017 keeps its official training / validation / test parts (validation joins training, from which the
validation share is drawn); Kvasir-SEG and CVC-ClinicDB have no official split and are split by case with a seed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

from common.cli import errors_as_one_line

from .layouts import LayoutCase, layout_parser, prepare_layout_datalist, read_binary, report

__all__ = ["LESION_DATASETS", "prepare_lesion_datalist"]

LABELS = {"1": "lesion"}


def _kvasir_seg(root: Path) -> Iterator[LayoutCase]:
    # images/<id>.jpg with masks/<id>.jpg (JPEG masks: threshold at mid-grey)
    for image in sorted((root / "images").glob("*.jpg")):
        mask = root / "masks" / image.name
        if mask.exists():
            yield LayoutCase(f"kvasir_{image.stem}", image, lambda m=mask: read_binary(m))


def _cvc_clinicdb(root: Path) -> Iterator[LayoutCase]:
    # Original/<n>.tif with "Ground Truth"/<n>.tif (the PNG re-release: PNG/Original, PNG/Ground Truth)
    for base in (root, root / "PNG", root / "TIF"):
        images = sorted(p for p in (base / "Original").glob("*") if p.suffix.lower() in (".tif", ".tiff", ".png"))
        for image in images:
            mask = base / "Ground Truth" / image.name
            if mask.exists():
                yield LayoutCase(f"cvc_{image.stem}", image, lambda m=mask: read_binary(m))
        if images:
            return


def _isic2017(root: Path) -> Iterator[LayoutCase]:
    # ISIC-2017_<Part>_Data/ISIC_0000000.jpg with ISIC-2017_<Part>_Part1_GroundTruth/ISIC_0000000_segmentation.png
    for part, split in (("Training", "training"), ("Validation", "training"), ("Test_v2", "testing")):
        data = root / f"ISIC-2017_{part}_Data"
        truth = root / f"ISIC-2017_{part}_Part1_GroundTruth"
        for image in sorted(data.glob("ISIC_*.jpg")):  # the *_superpixels.png files are not images to segment
            mask = truth / f"{image.stem}_segmentation.png"
            if mask.exists():
                yield LayoutCase(f"isic_{image.stem}", image, lambda m=mask: read_binary(m), None, split)


def _image_folder(root: Path) -> Iterator[LayoutCase]:
    # generic: images/<id>.<ext> with masks/<id>.<ext> (white lesion on black), e.g. PraNet's polyp benchmark folders
    from common.data.datalist import case_id, find_images

    masks = {case_id(p): p for p in find_images(root / "masks")}
    for image in find_images(root / "images"):
        if case_id(image) in masks:
            yield LayoutCase(f"{root.name}_{case_id(image)}", image, lambda m=masks[case_id(image)]: read_binary(m))


#: dataset name → (task, reader)
LESION_DATASETS = {
    "kvasir_seg": ("lesion", _kvasir_seg),
    "cvc_clinicdb": ("lesion", _cvc_clinicdb),
    "isic2017": ("lesion", _isic2017),
    "image_folder": ("lesion", _image_folder),
}


def prepare_lesion_datalist(
    sources: dict[str, str | os.PathLike],
    output_dir: str | os.PathLike,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> Path:
    """Convert the masks of lesion datasets (names from :data:`LESION_DATASETS`) and write a pooled
    ``datalist.json`` (see :func:`common.datasets.layouts.prepare_layout_datalist`)."""
    return prepare_layout_datalist(
        sources, output_dir, LESION_DATASETS, "lesion", LABELS, test_fraction, val_fraction, seed, field_of_view=None
    )


def main(argv: list[str] | None = None) -> int:
    parser = layout_parser("python -m common.datasets.lesions", __doc__.split("\n\n")[0], LESION_DATASETS, 0.2)
    args = parser.parse_args(argv)
    with errors_as_one_line():
        path = prepare_lesion_datalist(
            dict(args.dataset), args.output_dir, args.test_fraction, args.val_fraction, args.seed
        )
    print(report(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
