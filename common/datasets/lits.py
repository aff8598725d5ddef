"""LiTS (Liver Tumor Segmentation challenge) layout → ``datalist.json`` with a case-level split.

LiTS ships CT volumes ``volume-<n>.nii`` next to label maps ``segmentation-<n>.nii`` (0 background, 1 liver,
2 tumour), often in two folders "Training Batch 1" and "Training Batch 2"; every folder under the root is searched.

    python -m common.datasets.lits --dataset_dir /data/LiTS --output_dir /data/lits \\
        --val_fraction 0.1 --test_fraction 0.2
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from common.cli import errors_as_one_line
from common.data.datalist import paired_entries, report, split_cases, write_datalist

__all__ = ["LITS_LABELS", "build_lits_datalist", "find_lits_cases"]

LITS_LABELS = {"1": "liver", "2": "tumor"}
_VOLUME = re.compile(r"volume-(\d+)\.nii(\.gz)?$")


def find_lits_cases(root: str | os.PathLike) -> dict[str, tuple[Path, Path]]:
    """``{"lits_<n>": (volume, segmentation)}`` for every ``volume-<n>.nii[.gz]`` under ``root`` with its label.

    Raises:
        FileNotFoundError: no volumes. ValueError: a volume without its segmentation file (or two volumes with
            one number).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"LiTS folder not found: {root}")
    cases: dict[str, tuple[Path, Path]] = {}
    missing = []
    for volume in sorted(root.rglob("volume-*.nii*")):
        match = _VOLUME.search(volume.name)
        if not match:
            continue
        case = f"lits_{int(match.group(1)):03d}"
        if case in cases:
            raise ValueError(f"two volumes numbered {match.group(1)}: {cases[case][0]} and {volume}")
        labels = [volume.with_name(f"segmentation-{match.group(1)}.nii{suffix}") for suffix in ("", ".gz")]
        label = next((p for p in labels if p.is_file()), None)
        if label is None:
            missing.append(volume.name)
            continue
        cases[case] = (volume, label)
    if missing:
        raise ValueError(f"volumes without segmentation-<n>.nii[.gz] beside them: {missing[:10]}")
    if not cases:
        raise FileNotFoundError(f"no volume-<n>.nii[.gz] files under {root}")
    return cases


def build_lits_datalist(
    dataset_dir: str | os.PathLike,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    relative_to: str | os.PathLike | None = None,
) -> dict:
    """Case-level training/validation/testing split of a LiTS folder, with LiTS's label names."""
    base = Path(relative_to or dataset_dir).resolve()
    cases = find_lits_cases(dataset_dir)
    datalist: dict = {"labels": dict(LITS_LABELS)}
    for split, ids in split_cases(cases, val_fraction, test_fraction, seed).items():
        datalist[split] = paired_entries(cases, ids, base)
    return datalist


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m common.datasets.lits", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset_dir", required=True, help="the LiTS folder (searched recursively)")
    parser.add_argument("--output_dir", default=None, help="where datalist.json goes (default: dataset_dir)")
    parser.add_argument("--val_fraction", type=float, default=0.1)
    parser.add_argument("--test_fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    output_dir = Path(args.output_dir or args.dataset_dir)
    with errors_as_one_line():  # the output folder is made only once the datalist is built
        datalist = build_lits_datalist(
            args.dataset_dir, args.val_fraction, args.test_fraction, args.seed, relative_to=output_dir
        )
        path = write_datalist(datalist, output_dir)
    print(report(path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
