"""Readers of published dataset layouts → canonical label PNGs + a pooled ``datalist.json``.

A reader walks one dataset's folder in its release layout and yields :class:`LayoutCase` objects;
:func:`prepare_layout_datalist` converts their annotations to canonical label PNGs (one value per class) under an
output folder, optionally writes field-of-view masks, keeps official train/test splits and splits the rest by case
with a seed. ``common.datasets.fundus`` and ``common.datasets.lesions`` hold the readers of the datasets they know.
"""

from __future__ import annotations

import gzip
import io
import os
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from common.data.datalist import report, write_datalist

__all__ = [
    "LayoutCase",
    "Reader",
    "layout_parser",
    "open_image",
    "prepare_layout_datalist",
    "read_binary",
    "read_grey",
    "report",
]


@dataclass
class LayoutCase:
    """One image of a dataset.

    Attributes:
        case_id: unique within its dataset.
        image: path of the image file.
        label: callable returning the canonical label map (uint8, H×W), or None when unlabelled.
        fov: callable returning a field-of-view mask (bool, H×W), or None.
        split: "training" or "testing" when the release fixes it, else None.
    """

    case_id: str
    image: Path
    label: Callable[[], np.ndarray] | None
    fov: Callable[[], np.ndarray] | None = None
    split: str | None = None


#: a reader: dataset folder → cases
Reader = Callable[[Path], Iterator[LayoutCase]]


def open_image(path: Path) -> Image.Image:
    """Open any PIL-readable file, also gzip-compressed (STARE ships ``.ppm.gz``)."""
    if path.suffix == ".gz":
        with gzip.open(path) as handle:
            return Image.open(io.BytesIO(handle.read()))
    return Image.open(path)


def read_grey(path: Path) -> np.ndarray:
    """Annotation as 8-bit grey levels: palette GIFs, 1-bit PNGs and RGB files alike."""
    return np.asarray(open_image(path).convert("L"))


def read_binary(path: Path) -> np.ndarray:
    """Binary mask (0/1) from an annotation drawn in white (> 127) on black."""
    return (read_grey(path) > 127).astype(np.uint8)


def prepare_layout_datalist(
    sources: Mapping[str, str | os.PathLike],
    output_dir: str | os.PathLike,
    readers: Mapping[str, tuple[str, Reader]],
    task: str,
    labels: Mapping[str, str],
    test_fraction: float = 0.25,
    val_fraction: float = 0.1,
    seed: int = 0,
    field_of_view: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Path:
    """Convert the annotations of one or more datasets and write a pooled ``datalist.json``.

    Args:
        sources: ``{dataset name: folder}``; a name is a key of ``readers``, optionally with ``@<suffix>`` to use the
            same reader twice (``image_folder@a``).
        output_dir: receives ``labels/<dataset>/`` (and ``fov/<dataset>/``) and ``datalist.json`` (image paths are
            relative to it).
        readers: ``{name: (task, reader)}``; a reader whose task is ``"any"`` serves every task.
        task: the task every dataset must annotate.
        labels: ``{"1": name, ...}`` stored in the datalist.
        test_fraction: share of cases held out for testing in datasets without an official split.
        val_fraction: share of each dataset's training cases used for validation.
        seed: seed of the case-level splits.
        field_of_view: derives a FOV mask from an image when the case has none; None writes no FOV masks.

    Returns:
        the path of the written ``datalist.json``; entries carry ``image``, ``label``, ``dataset`` (and ``fov``).
    """
    out = Path(output_dir)
    datalist: dict = {"labels": dict(labels), "training": [], "validation": [], "testing": []}
    for name, folder in sources.items():
        kind = name.split("@", 1)[0]
        if kind not in readers:
            raise ValueError(f"unknown dataset {kind!r}; known: {', '.join(readers)}")
        dataset_task, reader = readers[kind]
        if dataset_task not in (task, "any"):
            raise ValueError(f"{kind} annotates {dataset_task}, not {task}")
        root = Path(folder)
        if not root.is_dir():
            raise FileNotFoundError(f"{kind}: folder not found: {root}")
        cases = list(reader(root))
        if not cases:
            raise FileNotFoundError(f"{kind}: no annotated images found under {root} in its published layout")
        entries: dict[str, list] = {"training": [], "testing": []}
        unsplit = []
        for case in cases:
            entry = _convert(case, out, name.replace("@", "_"), field_of_view)
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


def _convert(case: LayoutCase, out: Path, dataset: str, field_of_view) -> dict:
    """Write the canonical label (and FOV) PNGs of one case; return its datalist entry (paths relative to ``out``)."""
    entry = {"image": os.path.relpath(case.image.resolve(), out.resolve()), "dataset": dataset}
    image = None
    if case.image.suffix == ".gz":  # PIL-based loaders cannot open it: store a PNG copy
        image = np.asarray(open_image(case.image))
        png = out / "images" / dataset / f"{case.case_id}.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(png)
        entry["image"] = str(png.relative_to(out))
    if case.label is not None:
        path = out / "labels" / dataset / f"{case.case_id}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(case.label().astype(np.uint8)).save(path)
        entry["label"] = str(path.relative_to(out))
    if case.fov is not None or field_of_view is not None:
        if case.fov is not None:
            fov = case.fov()
        else:
            fov = field_of_view(image if image is not None else np.asarray(open_image(case.image)))
        path = out / "fov" / dataset / f"{case.case_id}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(fov.astype(np.uint8)).save(path)
        entry["fov"] = str(path.relative_to(out))
    return entry


def _dataset_source(item: str) -> tuple[str, str]:
    """``NAME=FOLDER`` (a ``--dataset`` option) → ``(NAME, FOLDER)``; argparse reports a malformed item."""
    import argparse

    name, separator, folder = item.partition("=")
    if not separator or not name or not folder:
        raise argparse.ArgumentTypeError(f"expects NAME=FOLDER, got {item!r}")
    return name, folder


def layout_parser(prog: str, description: str, readers: Mapping[str, tuple[str, Reader]], test_fraction: float):
    """The command-line options every layout reader module shares (``--dataset NAME=FOLDER`` repeatable,
    ``--output_dir``, split fractions, seed); modules add their own (e.g. ``--task``)."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--dataset",
        action="append",
        required=True,
        type=_dataset_source,
        metavar="NAME=FOLDER",
        help=f"repeatable; NAME in: {', '.join(readers)}",
    )
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--test_fraction", type=float, default=test_fraction)
    parser.add_argument("--val_fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    return parser
