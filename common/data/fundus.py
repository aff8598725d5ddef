"""Datalists for public retinal fundus datasets in their published folder layouts, pooled into one training set.

    python -m common.data.fundus --task vessel --output_dir data/vessels \\
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

import argparse
import gzip
import io
import json
import os
import random
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .datalist import write_datalist

__all__ = ["FUNDUS_DATASETS", "FundusCase", "prepare_fundus_datalist", "field_of_view"]

TASK_LABELS = {"vessel": {"1": "retinal vessel"}, "disc_cup": {"1": "optic disc", "2": "optic cup"}}


@dataclass
class FundusCase:
    """One image of a fundus dataset.

    Attributes:
        case_id: unique within its dataset.
        image: path of the image file.
        label: callable returning the canonical label map (uint8, H×W), or None when unlabelled.
        fov: callable returning the FOV mask (bool, H×W), or None to derive it from the image.
        split: "training" or "testing" when the release fixes it, else None.
    """

    case_id: str
    image: Path
    label: Callable[[], np.ndarray] | None
    fov: Callable[[], np.ndarray] | None = None
    split: str | None = None


def _open(path: Path) -> Image.Image:
    """Open any PIL-readable file, also gzip-compressed (STARE ships ``.ppm.gz``)."""
    if path.suffix == ".gz":
        with gzip.open(path) as handle:
            return Image.open(io.BytesIO(handle.read()))
    return Image.open(path)


def _read(path: Path) -> np.ndarray:
    return np.asarray(_open(path))


def _grey(path: Path) -> np.ndarray:
    """Annotation as 8-bit grey levels: palette GIFs (DRIVE), 1-bit PNGs (CHASE_DB1) and RGB files alike."""
    return np.asarray(_open(path).convert("L"))


def _binary(path: Path) -> np.ndarray:
    return (_grey(path) > 127).astype(np.uint8)


def field_of_view(image: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """FOV of a fundus photograph: red channel above ``threshold`` of its maximum (the dark surround is outside)."""
    red = image[..., 0] if image.ndim == 3 else image
    return red.astype(np.float32) > threshold * max(float(red.max()), 1.0)


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


def _drive(root: Path) -> Iterator[FundusCase]:
    # training/images/21_training.tif, training/1st_manual/21_manual1.gif, training/mask/21_training_mask.gif;
    # test/ likewise with NN_test (test manual annotations are absent from some distributions)
    for folder, split in (("training", "training"), ("test", "testing")):
        for image in _find(root / folder / "images", ("*.tif", "*.png")):
            number, tag = image.stem.split("_", 1)
            manual = root / folder / "1st_manual" / f"{number}_manual1.gif"
            mask = root / folder / "mask" / f"{number}_{tag}_mask.gif"
            yield FundusCase(
                f"drive_{image.stem}",
                image,
                (lambda m=manual: _binary(m)) if manual.exists() else None,
                (lambda m=mask: _binary(m) > 0) if mask.exists() else None,
                split,
            )


def _chase_db1(root: Path) -> Iterator[FundusCase]:
    # Image_01L.jpg with Image_01L_1stHO.png (first observer) and _2ndHO.png; children 01-10 train, 11-14 test
    for image in _find(root, ("Image_*.jpg",)):
        manual = image.with_name(f"{image.stem}_1stHO.png")
        child = int(re.search(r"Image_(\d+)", image.stem).group(1))
        yield FundusCase(
            f"chase_{image.stem}", image, lambda m=manual: _binary(m), None, "training" if child <= 10 else "testing"
        )


def _stare(root: Path) -> Iterator[FundusCase]:
    # stare-images/im0001.ppm(.gz) with labels-ah/im0001.ah.ppm(.gz) (Hoover, first observer)
    for image in _find(_require(root / "stare-images", "stare-images/"), ("*.ppm", "*.ppm.gz")):
        stem = image.name.split(".")[0]
        manual = [
            p for p in (root / "labels-ah" / f"{stem}.ah.ppm", root / "labels-ah" / f"{stem}.ah.ppm.gz") if p.exists()
        ]
        if manual:
            yield FundusCase(f"stare_{stem}", image, lambda m=manual[0]: _binary(m))


def _hrf(root: Path) -> Iterator[FundusCase]:
    # images/01_dr.JPG, manual1/01_dr.tif, mask/01_dr_mask.tif
    for image in _find(_require(root / "images", "images/"), ("*.jpg", "*.JPG", "*.jpeg")):
        manual, mask = root / "manual1" / f"{image.stem}.tif", root / "mask" / f"{image.stem}_mask.tif"
        if manual.exists():
            yield FundusCase(
                f"hrf_{image.stem}",
                image,
                lambda m=manual: _binary(m),
                (lambda m=mask: _binary(m) > 0) if mask.exists() else None,
            )


def _fives(root: Path) -> Iterator[FundusCase]:
    # train/Original/1_A.png with train/Ground truth/1_A.png; test/ likewise
    for folder, split in (("train", "training"), ("test", "testing")):
        for image in _find(root / folder / "Original", ("*.png",)):
            manual = root / folder / "Ground truth" / image.name
            if manual.exists():
                yield FundusCase(f"fives_{folder}_{image.stem}", image, lambda m=manual: _binary(m), None, split)


# --- optic disc / cup datasets ---------------------------------------------------------------------------------


def _refuge2(root: Path) -> Iterator[FundusCase]:
    # {train,val,test}/images/*.jpg with {split}/mask/*.png|bmp: 0 cup, 128 rim, 255 background
    def label(path: Path) -> np.ndarray:
        grey = _grey(path)
        return _nested(grey < 200, grey < 64)

    for folder, split in (("train", "training"), ("val", "training"), ("test", "testing")):
        for image in _find(root / folder / "images", ("*.jpg", "*.png")):
            masks = [
                p
                for p in (root / folder / "mask" / f"{image.stem}.png", root / folder / "mask" / f"{image.stem}.bmp")
                if p.exists()
            ]
            if masks:
                yield FundusCase(f"refuge2_{folder}_{image.stem}", image, lambda m=masks[0]: label(m), None, split)


def _drishti_gs(root: Path) -> Iterator[FundusCase]:
    # Training/Images/drishtiGS_002.png with Training/GT/drishtiGS_002/SoftMap/drishtiGS_002_{OD,cup}segSoftmap.png
    # (soft maps: the share of experts marking the pixel; > 0.5 is the majority)
    for folder, split in (("Training", "training"), ("Test", "testing")):
        for image in _find(root / folder / "Images", ("*.png", "**/*.png")):
            soft = root / folder / "GT" / image.stem / "SoftMap"
            disc, cup = soft / f"{image.stem}_ODsegSoftmap.png", soft / f"{image.stem}_cupsegSoftmap.png"
            if disc.exists() and cup.exists():
                yield FundusCase(
                    f"drishti_{image.stem}",
                    image,
                    lambda d=disc, c=cup: _nested(_grey(d) > 127, _grey(c) > 127),
                    None,
                    split,
                )


def _origa(root: Path) -> Iterator[FundusCase]:
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
            yield FundusCase(f"origa_{image.stem}", image, lambda m=mat, i=image: label(m, i))


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


def _g1020(root: Path) -> Iterator[FundusCase]:
    # Images/image_0.jpg with Images/image_0.json (LabelMe polygons "disc", "cup")
    for image in _find(_require(root / "Images", "Images/"), ("*.jpg",)):
        annotation = image.with_suffix(".json")
        if annotation.exists():
            yield FundusCase(
                f"g1020_{image.stem}", image, lambda a=annotation, i=image: _labelme_nested(a, i, ("disc",), ("cup",))
            )


def _grape(root: Path) -> Iterator[FundusCase]:
    # "ROI images"/<name>.jpg with json/<name>.json (LabelMe polygons "OD", "OC")
    for image in _find(_require(root / "ROI images", "ROI images/"), ("*.jpg",)):
        annotation = root / "json" / f"{image.stem}.json"
        if annotation.exists():
            yield FundusCase(
                f"grape_{image.stem}", image, lambda a=annotation, i=image: _labelme_nested(a, i, ("OD",), ("OC",))
            )


def _papila(root: Path) -> Iterator[FundusCase]:
    # FundusImages/RET002OD.jpg with ExpertsSegmentations/Contours/RET002OD_{disc,cup}_exp1.txt ("x y" per line);
    # expert 1 is the reference (expert 2 can serve as the human baseline)
    def contour(path: Path, size: tuple[int, int]) -> np.ndarray:
        points = np.loadtxt(path, ndmin=2)
        return _polygon_mask(size, points[:, :2])

    for image in _find(_require(root / "FundusImages", "FundusImages/"), ("*.jpg",)):
        base = root / "ExpertsSegmentations" / "Contours" / image.stem
        disc, cup = Path(f"{base}_disc_exp1.txt"), Path(f"{base}_cup_exp1.txt")
        if disc.exists() and cup.exists():
            yield FundusCase(
                f"papila_{image.stem}",
                image,
                lambda d=disc, c=cup, i=image: _nested(contour(d, _image_shape(i)), contour(c, _image_shape(i))),
            )


def _image_folder(root: Path) -> Iterator[FundusCase]:
    # generic: images/<id>.<ext> with labels/<id>.<ext> holding the canonical label values (0/1 or 0/1/2)
    from .datalist import IMAGE_SUFFIXES, case_id, find_images

    labels = {case_id(p): p for p in find_images(_require(root / "labels", "labels/"))}
    for image in find_images(_require(root / "images", "images/")):
        cid = case_id(image)
        if image.name.lower().endswith(IMAGE_SUFFIXES) and cid in labels:
            yield FundusCase(f"{root.name}_{cid}", image, lambda m=labels[cid]: _grey(m).astype(np.uint8))


#: dataset name → (task, reader)
FUNDUS_DATASETS: dict[str, tuple[str, Callable[[Path], Iterator[FundusCase]]]] = {
    "drive": ("vessel", _drive),
    "chase_db1": ("vessel", _chase_db1),
    "stare": ("vessel", _stare),
    "hrf": ("vessel", _hrf),
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
    """Convert the annotations of one or more datasets and write a pooled ``datalist.json``.

    Args:
        sources: ``{dataset name: folder}``; names from :data:`FUNDUS_DATASETS` (``image_folder`` is the generic
            ``images/`` + ``labels/`` fallback; add ``@<suffix>`` to use it twice, e.g. ``image_folder@a``).
        output_dir: receives ``labels/<dataset>/``, ``fov/<dataset>/`` and ``datalist.json`` (image paths are
            relative to it).
        task: ``vessel`` or ``disc_cup``; every dataset must annotate that task.
        test_fraction: share of cases held out for testing in datasets without an official split.
        val_fraction: share of each dataset's training cases used for validation.
        seed: seed of the case-level splits.

    Returns:
        the path of the written ``datalist.json``; entries carry ``image``, ``label``, ``fov`` and ``dataset``.
    """
    if task not in TASK_LABELS:
        raise ValueError(f"task must be one of {sorted(TASK_LABELS)}, got {task!r}")
    out = Path(output_dir)
    datalist: dict = {"labels": TASK_LABELS[task], "training": [], "validation": [], "testing": []}
    for name, folder in sources.items():
        kind = name.split("@", 1)[0]
        if kind not in FUNDUS_DATASETS:
            raise KeyError(f"unknown fundus dataset {kind!r}; known: {', '.join(FUNDUS_DATASETS)}")
        dataset_task, reader = FUNDUS_DATASETS[kind]
        if dataset_task not in (task, "any"):
            raise ValueError(f"{kind} annotates {dataset_task}, not {task}")
        root = Path(folder)
        if not root.is_dir():
            raise FileNotFoundError(f"{kind}: folder not found: {root}")
        cases = list(reader(root))
        if not cases:
            raise FileNotFoundError(f"{kind}: no annotated images found under {root} in its published layout")
        entries = {"training": [], "testing": []}
        unsplit = []
        for case in cases:
            entry = _convert(case, out, name.replace("@", "_"))
            if case.split is None:
                unsplit.append(entry)
            elif case.split == "testing" or entry.get("label"):
                entries[case.split].append(entry)
        random.Random(seed).shuffle(unsplit)
        n_test = round(len(unsplit) * test_fraction)
        entries["testing"] += unsplit[:n_test]
        entries["training"] += unsplit[n_test:]
        training = sorted(entries["training"], key=lambda e: e["image"])
        random.Random(seed + 1).shuffle(training)
        n_val = round(len(training) * val_fraction)
        datalist["validation"] += sorted(training[:n_val], key=lambda e: e["image"])
        datalist["training"] += sorted(training[n_val:], key=lambda e: e["image"])
        datalist["testing"] += sorted(entries["testing"], key=lambda e: e["image"])
    return write_datalist(datalist, out)


def _convert(case: FundusCase, out: Path, dataset: str) -> dict:
    """Write the canonical label and FOV PNGs of one case; return its datalist entry (paths relative to ``out``)."""
    entry = {"image": os.path.relpath(case.image.resolve(), out.resolve()), "dataset": dataset}
    image = None
    if case.image.suffix == ".gz":  # PIL-based loaders cannot open it: store a PNG copy
        image = _read(case.image)
        png = out / "images" / dataset / f"{case.case_id}.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(png)
        entry["image"] = str(png.relative_to(out))
    if case.label is not None:
        label = case.label()
        path = out / "labels" / dataset / f"{case.case_id}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(label.astype(np.uint8)).save(path)
        entry["label"] = str(path.relative_to(out))
    fov = case.fov() if case.fov is not None else field_of_view(image if image is not None else _read(case.image))
    path = out / "fov" / dataset / f"{case.case_id}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(fov.astype(np.uint8)).save(path)
    entry["fov"] = str(path.relative_to(out))
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.data.fundus", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dataset",
        action="append",
        required=True,
        metavar="NAME=FOLDER",
        help=f"repeatable; NAME in: {', '.join(FUNDUS_DATASETS)}",
    )
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--task", choices=sorted(TASK_LABELS), default="vessel")
    parser.add_argument("--test_fraction", type=float, default=0.25)
    parser.add_argument("--val_fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sources = dict(item.split("=", 1) for item in args.dataset)
    path = prepare_fundus_datalist(
        sources, args.output_dir, args.task, args.test_fraction, args.val_fraction, args.seed
    )
    counts = {k: len(v) for k, v in json.loads(path.read_text()).items() if isinstance(v, list)}
    print(f"wrote {path}: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
