"""Datalists for public retinal fundus datasets in their published folder layouts, pooled into one training set.

    python -m common.datasets.fundus --task vessel --output_dir data/vessels \\
        --dataset chase_db1=/data/CHASE_DB1 --dataset drive=/data/DRIVE

Each reader finds a dataset's images and annotations where its release puts them and writes the annotation as a
canonical label PNG under ``output_dir`` (the annotations come as GIF, PPM, TIFF, soft maps, MATLAB files, polygon
JSON or contour text), plus a field-of-view (FOV) mask where the release has one or it can be derived. Images are
referenced in place. Labels:

* task ``vessel``: 0 background, 1 vessel (first observer where there are two);
* task ``disc_cup``: 0 background, 1 optic disc outside the cup (rim), 2 optic cup; the bundle turns this into two
  nested channels (disc = label ≥ 1, cup = label == 2).

Official train/test splits are kept where a release has them (DRIVE, FIVES, REFUGE2, DRISHTI-GS, and the 20/8 split
commonly used for CHASE_DB1); other sets are split by case with a seed. A validation share is taken from training.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from common.cli import errors_as_one_line
from common.data.transforms import field_of_view

from .layouts import LayoutCase, layout_parser, prepare_layout_datalist, read_binary, read_grey, report

__all__ = ["FUNDUS_DATASETS", "prepare_fundus_datalist", "field_of_view"]

TASK_LABELS = {"vessel": {"1": "retinal vessel"}, "disc_cup": {"1": "optic disc", "2": "optic cup"}}


def _find(folder: Path, patterns: tuple[str, ...]) -> list[Path]:
    files: list[Path] = []
    for pattern in patterns:
        files += folder.glob(pattern)
    return sorted(set(files))


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what} not found at {path}: is this the dataset's published layout?")
    return path


def _nested(disc: np.ndarray, cup: np.ndarray) -> np.ndarray:
    """Canonical disc/cup map from two binary masks (the cup lies inside the disc)."""
    label = (disc > 0).astype(np.uint8)
    label[cup > 0] = 2
    return label


def _polygon_mask(shape: tuple[int, int], points) -> np.ndarray:
    canvas = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(canvas).polygon([tuple(map(float, p)) for p in points], outline=1, fill=1)
    return np.asarray(canvas)


def _image_shape(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.height, image.width


# --- vessel datasets -------------------------------------------------------------------------------------------


def _drive(root: Path) -> Iterator[LayoutCase]:
    # training/images/21_training.tif, training/1st_manual/21_manual1.gif, training/mask/21_training_mask.gif;
    # test/ likewise with NN_test (test manual annotations are absent from some distributions)
    for folder, split in (("training", "training"), ("test", "testing")):
        for image in _find(root / folder / "images", ("*.tif", "*.png")):
            number, tag = image.stem.split("_", 1)
            manual = root / folder / "1st_manual" / f"{number}_manual1.gif"
            mask = root / folder / "mask" / f"{number}_{tag}_mask.gif"
            yield LayoutCase(
                f"drive_{image.stem}",
                image,
                (lambda m=manual: read_binary(m)) if manual.exists() else None,
                (lambda m=mask: read_binary(m) > 0) if mask.exists() else None,
                split,
            )


def _chase_db1(root: Path) -> Iterator[LayoutCase]:
    # Image_01L.jpg with Image_01L_1stHO.png (first observer) and _2ndHO.png; children 01-10 train, 11-14 test
    for image in _find(root, ("Image_*.jpg",)):
        manual = image.with_name(f"{image.stem}_1stHO.png")
        child = int(re.search(r"Image_(\d+)", image.stem).group(1))
        yield LayoutCase(
            f"chase_{image.stem}",
            image,
            lambda m=manual: read_binary(m),
            None,
            "training" if child <= 10 else "testing",
        )


def _stare(root: Path) -> Iterator[LayoutCase]:
    # stare-images/im0001.ppm(.gz) with labels-ah/im0001.ah.ppm(.gz) (Hoover, first observer)
    for image in _find(_require(root / "stare-images", "stare-images/"), ("*.ppm", "*.ppm.gz")):
        stem = image.name.split(".")[0]
        manual = [
            p for p in (root / "labels-ah" / f"{stem}.ah.ppm", root / "labels-ah" / f"{stem}.ah.ppm.gz") if p.exists()
        ]
        if manual:
            yield LayoutCase(f"stare_{stem}", image, lambda m=manual[0]: read_binary(m))


def _hrf(root: Path) -> Iterator[LayoutCase]:
    # images/01_dr.JPG, manual1/01_dr.tif, mask/01_dr_mask.tif
    for image in _find(_require(root / "images", "images/"), ("*.jpg", "*.JPG", "*.jpeg")):
        manual, mask = root / "manual1" / f"{image.stem}.tif", root / "mask" / f"{image.stem}_mask.tif"
        if manual.exists():
            yield LayoutCase(
                f"hrf_{image.stem}",
                image,
                lambda m=manual: read_binary(m),
                (lambda m=mask: read_binary(m) > 0) if mask.exists() else None,
            )


def _hrf_av(root: Path) -> Iterator[LayoutCase]:
    # HRF with artery/vein labels: {training,test}/images/01_dr.jpg, vessels/01_dr.png (artery, vein or crossing),
    # fov/01_dr.png; the published 24 / 21 split
    for folder, split in (("training", "training"), ("test", "testing")):
        for image in _find(_require(root / folder / "images", f"{folder}/images/"), ("*.jpg", "*.JPG", "*.png")):
            manual, mask = root / folder / "vessels" / f"{image.stem}.png", root / folder / "fov" / f"{image.stem}.png"
            if manual.exists():
                yield LayoutCase(
                    f"hrf_av_{image.stem}",
                    image,
                    lambda m=manual: read_binary(m),
                    (lambda m=mask: read_binary(m) > 0) if mask.exists() else None,
                    split,
                )


def _fives(root: Path) -> Iterator[LayoutCase]:
    # train/Original/1_A.png with train/Ground truth/1_A.png; test/ likewise
    for folder, split in (("train", "training"), ("test", "testing")):
        for image in _find(root / folder / "Original", ("*.png",)):
            manual = root / folder / "Ground truth" / image.name
            if manual.exists():
                yield LayoutCase(f"fives_{folder}_{image.stem}", image, lambda m=manual: read_binary(m), None, split)


# --- optic disc / cup datasets ---------------------------------------------------------------------------------


def _refuge2(root: Path) -> Iterator[LayoutCase]:
    # {train,val,test}/images/*.jpg with {split}/mask/*.png|bmp: 0 cup, 128 rim, 255 background
    def label(path: Path) -> np.ndarray:
        grey = read_grey(path)
        return _nested(grey < 200, grey < 64)

    for folder, split in (("train", "training"), ("val", "training"), ("test", "testing")):
        for image in _find(root / folder / "images", ("*.jpg", "*.png")):
            masks = [
                p
                for p in (root / folder / "mask" / f"{image.stem}.png", root / folder / "mask" / f"{image.stem}.bmp")
                if p.exists()
            ]
            if masks:
                yield LayoutCase(f"refuge2_{folder}_{image.stem}", image, lambda m=masks[0]: label(m), None, split)


def _drishti_gs(root: Path) -> Iterator[LayoutCase]:
    # Training/Images/drishtiGS_002.png with Training/GT/drishtiGS_002/SoftMap/drishtiGS_002_{OD,cup}segSoftmap.png
    # (soft maps: the share of experts marking the pixel; > 0.5 is the majority)
    for folder, split in (("Training", "training"), ("Test", "testing")):
        for image in _find(root / folder / "Images", ("*.png", "**/*.png")):
            soft = root / folder / "GT" / image.stem / "SoftMap"
            disc, cup = soft / f"{image.stem}_ODsegSoftmap.png", soft / f"{image.stem}_cupsegSoftmap.png"
            if disc.exists() and cup.exists():
                yield LayoutCase(
                    f"drishti_{image.stem}",
                    image,
                    lambda d=disc, c=cup: _nested(read_grey(d) > 127, read_grey(c) > 127),
                    None,
                    split,
                )


def _origa(root: Path) -> Iterator[LayoutCase]:
    # Images/001.jpg with Semi-automatic-annotations/001.mat ("mask": 1 rim, 2 cup); the mask can be wider and
    # taller than the image: crop it symmetrically in width and from the bottom in height
    from scipy.io import loadmat

    def label(mat: Path, image: Path) -> np.ndarray:
        mask = loadmat(mat)["mask"]
        height, width = _image_shape(image)
        cut = (mask.shape[1] - width) // 2
        mask = mask[:height, cut : cut + width] if cut > 0 else mask[:height, :width]
        return _nested(mask >= 1, mask == 2)

    for image in _find(_require(root / "Images", "Images/"), ("*.jpg",)):
        mat = root / "Semi-automatic-annotations" / f"{image.stem}.mat"
        if mat.exists():
            yield LayoutCase(f"origa_{image.stem}", image, lambda m=mat, i=image: label(m, i))


def _labelme_nested(
    json_path: Path, image: Path, disc_names: tuple[str, ...], cup_names: tuple[str, ...]
) -> np.ndarray:
    shapes = json.loads(json_path.read_text())["shapes"]
    size = _image_shape(image)
    disc = np.zeros(size, np.uint8)
    cup = np.zeros(size, np.uint8)
    for shape in shapes:
        if shape["label"] in disc_names:
            disc |= _polygon_mask(size, shape["points"])
        elif shape["label"] in cup_names:
            cup |= _polygon_mask(size, shape["points"])
    return _nested(disc, cup)


def _g1020(root: Path) -> Iterator[LayoutCase]:
    # Images/image_0.jpg with Images/image_0.json (LabelMe polygons "disc", "cup")
    for image in _find(_require(root / "Images", "Images/"), ("*.jpg",)):
        annotation = image.with_suffix(".json")
        if annotation.exists():
            yield LayoutCase(
                f"g1020_{image.stem}", image, lambda a=annotation, i=image: _labelme_nested(a, i, ("disc",), ("cup",))
            )


def _grape(root: Path) -> Iterator[LayoutCase]:
    # "ROI images"/<name>.jpg with json/<name>.json (LabelMe polygons "OD", "OC")
    for image in _find(_require(root / "ROI images", "ROI images/"), ("*.jpg",)):
        annotation = root / "json" / f"{image.stem}.json"
        if annotation.exists():
            yield LayoutCase(
                f"grape_{image.stem}", image, lambda a=annotation, i=image: _labelme_nested(a, i, ("OD",), ("OC",))
            )


def _papila(root: Path) -> Iterator[LayoutCase]:
    # FundusImages/RET002OD.jpg with ExpertsSegmentations/Contours/RET002OD_{disc,cup}_exp1.txt ("x y" per line);
    # expert 1 is the reference (expert 2 can serve as the human baseline)
    def contour(path: Path, size: tuple[int, int]) -> np.ndarray:
        points = np.loadtxt(path, ndmin=2)
        return _polygon_mask(size, points[:, :2])

    for image in _find(_require(root / "FundusImages", "FundusImages/"), ("*.jpg",)):
        base = root / "ExpertsSegmentations" / "Contours" / image.stem
        disc, cup = Path(f"{base}_disc_exp1.txt"), Path(f"{base}_cup_exp1.txt")
        if disc.exists() and cup.exists():
            yield LayoutCase(
                f"papila_{image.stem}",
                image,
                lambda d=disc, c=cup, i=image: _nested(contour(d, _image_shape(i)), contour(c, _image_shape(i))),
            )


def _image_folder(root: Path) -> Iterator[LayoutCase]:
    # generic: images/<id>.<ext> with labels/<id>.<ext> holding the canonical label values (0/1 or 0/1/2)
    from common.data.datalist import IMAGE_SUFFIXES, case_id, find_images

    labels = {case_id(p): p for p in find_images(_require(root / "labels", "labels/"))}
    for image in find_images(_require(root / "images", "images/")):
        cid = case_id(image)
        if image.name.lower().endswith(IMAGE_SUFFIXES) and cid in labels:
            yield LayoutCase(f"{root.name}_{cid}", image, lambda m=labels[cid]: read_grey(m).astype(np.uint8))


#: dataset name → (task, reader)
FUNDUS_DATASETS: dict[str, tuple[str, Callable[[Path], Iterator[LayoutCase]]]] = {
    "drive": ("vessel", _drive),
    "chase_db1": ("vessel", _chase_db1),
    "stare": ("vessel", _stare),
    "hrf": ("vessel", _hrf),
    "hrf_av": ("vessel", _hrf_av),
    "fives": ("vessel", _fives),
    "refuge2": ("disc_cup", _refuge2),
    "drishti_gs": ("disc_cup", _drishti_gs),
    "origa": ("disc_cup", _origa),
    "g1020": ("disc_cup", _g1020),
    "grape": ("disc_cup", _grape),
    "papila": ("disc_cup", _papila),
    "image_folder": ("any", _image_folder),
}


def prepare_fundus_datalist(
    sources: dict[str, str | os.PathLike],
    output_dir: str | os.PathLike,
    task: str = "vessel",
    test_fraction: float = 0.25,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> Path:
    """Convert the annotations of fundus datasets (names from :data:`FUNDUS_DATASETS`) and write a pooled
    ``datalist.json`` with labels, FOV masks and splits (see :func:`common.datasets.layouts.prepare_layout_datalist`).

    Args:
        task: ``vessel`` or ``disc_cup``; every dataset must annotate that task.
    """
    if task not in TASK_LABELS:
        raise ValueError(f"task must be one of {sorted(TASK_LABELS)}, got {task!r}")
    return prepare_layout_datalist(
        sources, output_dir, FUNDUS_DATASETS, task, TASK_LABELS[task], test_fraction, val_fraction, seed, field_of_view
    )


def main(argv: list[str] | None = None) -> int:
    parser = layout_parser("python -m common.datasets.fundus", __doc__.split("\n\n")[0], FUNDUS_DATASETS, 0.25)
    parser.add_argument("--task", choices=sorted(TASK_LABELS), default="vessel")
    args = parser.parse_args(argv)
    with errors_as_one_line():
        path = prepare_fundus_datalist(
            dict(args.dataset), args.output_dir, args.task, args.test_fraction, args.val_fraction, args.seed
        )
    print(report(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
