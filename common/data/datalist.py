"""Datalists in the Medical Segmentation Decathlon style, relative to ``dataset_dir``.

``dataset_dir/datalist.json``::

    {"labels": {"1": "liver"}, "training": [{"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz"}, ...],
     "validation": [...], "testing": [{"image": "imagesTs/b.nii.gz"}, ...]}
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping
from pathlib import Path

from monai.data import load_decathlon_datalist

__all__ = [
    "IMAGE_SUFFIXES",
    "DATALIST_NAME",
    "case_id",
    "find_images",
    "build_datalist",
    "write_datalist",
    "load_datalist",
    "report",
    "split_cases",
]

#: file types a datalist may reference: 2D (PNG, JPEG, TIFF, GIF, BMP) and 3D (NIfTI, NRRD, MHA)
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp")
DATALIST_NAME = "datalist.json"


def case_id(path: str | os.PathLike) -> str:
    """File name without its image suffix (``case_001.nii.gz`` → ``case_001``)."""
    name = Path(path).name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def find_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES))


def build_datalist(
    dataset_dir: str | os.PathLike,
    image_dir: str = "images",
    label_dir: str | None = "labels",
    label_suffix: str = "",
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    labels: Mapping[str, str] | None = None,
    relative_to: str | os.PathLike | None = None,
    skip_unlabelled: bool = False,
) -> dict:
    """Pair images with labels by case id and split them into training/validation/testing, case by case.

    Args:
        dataset_dir: root; ``image_dir`` and ``label_dir`` are relative to it, and so are the written paths.
        image_dir: folder of images.
        label_dir: folder of labels (``None``: unlabelled, everything goes to "testing").
        label_suffix: extra text at the end of label case ids (``"_mask"`` for ``a.png`` ↔ ``a_mask.png``).
        val_fraction, test_fraction: shares of labelled cases for validation and testing (seeded shuffle).
        seed: shuffle seed, so that the split is reproducible.
        labels: optional ``{"1": "name"}`` map stored in the datalist.
        relative_to: folder the written paths are relative to (default ``dataset_dir``); use the folder the datalist
            will be written to when the data itself is read-only or shared.
        skip_unlabelled: leave out images without a label (e.g. MSD's ``hippocampus_118``) instead of failing.

    Raises:
        FileNotFoundError: missing folders or no images. ValueError: an image without a label, or a label without
            an image (a silent mismatch would shrink or corrupt the dataset).
    """
    root = Path(dataset_dir)
    base = Path(relative_to) if relative_to is not None else root

    def rel(path: Path) -> str:
        return os.path.relpath(path.resolve(), base.resolve())

    images = {case_id(p): p for p in find_images(root / image_dir)}
    if not images:
        raise FileNotFoundError(f"no images in {root / image_dir} (supported: {', '.join(IMAGE_SUFFIXES)})")
    datalist: dict = {"labels": dict(labels or {}), "training": [], "validation": [], "testing": []}
    if label_dir is None:
        datalist["testing"] = [{"image": rel(p)} for p in images.values()]
        return datalist
    label_files = {
        case_id(p)[: len(case_id(p)) - len(label_suffix)]: p
        for p in find_images(root / label_dir)
        if case_id(p).endswith(label_suffix)
    }
    unlabelled = sorted(set(images) - set(label_files))
    orphans = sorted(set(label_files) - set(images))
    if skip_unlabelled:
        images = {c: p for c, p in images.items() if c in label_files}
        unlabelled = []
    if unlabelled or orphans:
        raise ValueError(
            f"images and labels do not pair up in {root}: images without label {unlabelled[:10]}, "
            f"labels without image {orphans[:10]}"
        )
    for split, ids in split_cases(images, val_fraction, test_fraction, seed).items():
        datalist[split] = [{"image": rel(images[c]), "label": rel(label_files[c])} for c in ids]
    return datalist


def split_cases(cases, val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[str]]:
    """Seeded case-level split: ``{"training", "validation", "testing"}`` → sorted case ids.

    Whole cases (patients, volumes) go to one split, so no case's slices or images leak between splits.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"fractions must leave training cases, got val {val_fraction} and test {test_fraction}")
    ids = sorted(cases)
    random.Random(seed).shuffle(ids)
    n_val, n_test = round(len(ids) * val_fraction), round(len(ids) * test_fraction)
    return {
        "validation": sorted(ids[:n_val]),
        "testing": sorted(ids[n_val : n_val + n_test]),
        "training": sorted(ids[n_val + n_test :]),
    }


def paired_entries(cases: Mapping, ids, base: str | os.PathLike) -> list[dict]:
    """``[{"image", "label"}]`` for ``ids`` of ``cases`` (``{id: (image path, label path)}``), paths relative to
    ``base`` as the datalist stores them."""
    base = Path(base).resolve()
    return [
        {
            "image": os.path.relpath(Path(cases[c][0]).resolve(), base),
            "label": os.path.relpath(Path(cases[c][1]).resolve(), base),
        }
        for c in ids
    ]


def write_datalist(datalist: Mapping, dataset_dir: str | os.PathLike, name: str = DATALIST_NAME) -> Path:
    """Write ``datalist`` as ``dataset_dir/name`` (pretty JSON); returns the path."""
    path = Path(dataset_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(datalist, indent=2) + "\n")
    return path


def load_datalist(dataset_dir: str | os.PathLike, split: str = "training", name: str = DATALIST_NAME) -> list[dict]:
    """Entries of one split with absolute paths (MONAI's ``load_decathlon_datalist`` with ``base_dir``).

    Raises:
        FileNotFoundError: no datalist, or an entry pointing at a missing file.
    """
    path = Path(dataset_dir) / name
    if not path.is_file():
        raise FileNotFoundError(
            f"no {name} in {dataset_dir}; build one with common.data.build_datalist / write_datalist"
        )
    data = load_decathlon_datalist(path, is_segmentation=True, data_list_key=split, base_dir=dataset_dir)
    for item in data:
        for key in ("image", "label"):
            if key in item and not Path(item[key]).exists():
                raise FileNotFoundError(f"{path} lists {item[key]} ({split}/{key}), which does not exist")
    return data


def report(path: str | os.PathLike) -> str:
    """One line saying what a written datalist holds: cases per split and the label names."""
    datalist = json.loads(Path(path).read_text())
    counts = ", ".join(f"{len(v)} {k}" for k, v in datalist.items() if isinstance(v, list))
    labels = f"; labels {datalist['labels']}" if datalist.get("labels") else ""
    return f"wrote {path}: {counts}{labels}"
