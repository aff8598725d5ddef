"""Synapse multi-organ CT (MICCAI 2015 BTCV "Beyond the Cranial Vault", abdomen) → ``datalist.json``.

The raw release has ``img/img<nnnn>.nii.gz`` and ``label/label<nnnn>.nii.gz`` (often under ``RawData/Training``)
with 13 organ labels. The usual benchmark (TransUNet, SAMed, BALR-SAM) evaluates 8 organs on 12 fixed test cases
and trains on the other 18; this builder keeps that split (a validation share is drawn from the 18 by seed) and
writes the 8 organ names. The 13 → 8 remapping happens in the bundle's transforms
(``MapLabelValued`` with :data:`SYNAPSE_RAW_LABELS` → :data:`SYNAPSE_TARGET_LABELS`), so no label file is rewritten.

    python -m common.datasets.synapse --dataset_dir /data/Synapse/RawData/Training --output_dir /data/synapse
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

from common.cli import errors_as_one_line
from common.data.datalist import paired_entries, report, write_datalist

__all__ = [
    "SYNAPSE_LABELS",
    "SYNAPSE_RAW_LABELS",
    "SYNAPSE_TARGET_LABELS",
    "SYNAPSE_TEST_CASES",
    "build_synapse_datalist",
    "find_synapse_cases",
]

#: the 8 evaluated organs, in the benchmark's order
SYNAPSE_LABELS = {
    "1": "aorta",
    "2": "gallbladder",
    "3": "left kidney",
    "4": "right kidney",
    "5": "liver",
    "6": "pancreas",
    "7": "spleen",
    "8": "stomach",
}
# raw BTCV ids: 1 spleen, 2 right kidney, 3 left kidney, 4 gallbladder, 5 oesophagus, 6 liver, 7 stomach, 8 aorta,
# 9 inferior vena cava, 10 portal and splenic vein, 11 pancreas, 12 right adrenal, 13 left adrenal
SYNAPSE_RAW_LABELS = list(range(1, 14))
SYNAPSE_TARGET_LABELS = [7, 4, 3, 2, 0, 5, 8, 1, 0, 0, 6, 0, 0]
#: the 12 test volumes of the TransUNet split
SYNAPSE_TEST_CASES = ("0001", "0002", "0003", "0004", "0008", "0022", "0025", "0029", "0032", "0035", "0036", "0038")
_IMAGE = re.compile(r"img(\d+)\.nii(\.gz)?$")


def find_synapse_cases(root: str | os.PathLike) -> dict[str, tuple[Path, Path]]:
    """``{"<nnnn>": (image, label)}`` for every ``img<nnnn>.nii[.gz]`` under ``root`` with its
    ``../label/label<nnnn>.nii[.gz]``.

    Raises:
        FileNotFoundError: no images. ValueError: an image without its label.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Synapse folder not found: {root}")
    cases, missing = {}, []
    for image in sorted(root.rglob("img*.nii*")):
        match = _IMAGE.search(image.name)
        if not match:
            continue
        number = match.group(1)
        candidates = [image.parent.parent / "label" / f"label{number}.nii{s}" for s in (".gz", "")]
        label = next((p for p in candidates if p.is_file()), None)
        if label is None:
            missing.append(image.name)
            continue
        cases[number] = (image, label)
    if missing:
        raise ValueError(f"images without label/label<nnnn>.nii[.gz]: {missing[:10]}")
    if not cases:
        raise FileNotFoundError(f"no img<nnnn>.nii[.gz] files under {root}")
    return cases


def build_synapse_datalist(
    dataset_dir: str | os.PathLike,
    val_cases: int = 2,
    seed: int = 0,
    relative_to: str | os.PathLike | None = None,
) -> dict:
    """The benchmark split: the 12 test cases as ``testing`` (those present), ``val_cases`` of the others drawn by
    ``seed`` as ``validation``, the rest ``training``."""
    base = Path(relative_to or dataset_dir).resolve()
    cases = find_synapse_cases(dataset_dir)
    test = sorted(c for c in cases if c in SYNAPSE_TEST_CASES)
    rest = sorted(c for c in cases if c not in SYNAPSE_TEST_CASES)
    if val_cases >= len(rest):
        raise ValueError(f"{len(rest)} non-test cases cannot give {val_cases} validation cases and training cases")
    shuffled = rest[:]
    random.Random(seed).shuffle(shuffled)
    splits = {"training": sorted(shuffled[val_cases:]), "validation": sorted(shuffled[:val_cases]), "testing": test}
    datalist: dict = {"labels": dict(SYNAPSE_LABELS)}
    for split, ids in splits.items():
        datalist[split] = paired_entries(cases, ids, base)
    return datalist


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m common.datasets.synapse", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset_dir", required=True, help="folder with img/ and label/ (searched recursively)")
    parser.add_argument("--output_dir", default=None, help="where datalist.json goes (default: dataset_dir)")
    parser.add_argument("--val_cases", type=int, default=2, help="validation cases drawn from the 18 training cases")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    output_dir = Path(args.output_dir or args.dataset_dir)
    with errors_as_one_line():  # the output folder is made only once the datalist is built
        datalist = build_synapse_datalist(args.dataset_dir, args.val_cases, args.seed, relative_to=output_dir)
        path = write_datalist(datalist, output_dir)
    print(report(path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
