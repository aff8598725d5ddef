"""Command line: build ``datalist.json`` from an image folder and a label folder.

    python -m common.datasets.make_datalist --dataset_dir /data/Task04_Hippocampus --image_dir imagesTr \\
        --label_dir labelsTr --output_dir /data/hippocampus --test_fraction 0.2 --val_fraction 0.08 --skip_unlabelled
"""

from __future__ import annotations

import argparse
import json
import sys

from common.cli import errors_as_one_line
from common.data.datalist import build_datalist, report, write_datalist


def _label_names(text: str) -> dict:
    """``--labels``: a JSON object of label values to names; argparse reports anything else."""
    try:
        names = json.loads(text)
    except json.JSONDecodeError:
        names = None
    if not isinstance(names, dict):
        raise argparse.ArgumentTypeError(f"expects a JSON object such as '{{\"1\": \"liver\"}}', got {text!r}")
    return names


def main(argv: list[str] | None = None) -> int:
    """Build and write a datalist from an image folder and a label folder."""
    parser = argparse.ArgumentParser(
        prog="python -m common.datasets.make_datalist", description=build_datalist.__doc__.split("\n")[0]
    )
    parser.add_argument("--dataset_dir", required=True, help="folder holding the image and label folders")
    parser.add_argument("--image_dir", default="images")
    parser.add_argument("--label_dir", default="labels")
    parser.add_argument("--label_suffix", default="")
    parser.add_argument("--output_dir", default=None, help="where datalist.json goes (default: dataset_dir)")
    parser.add_argument("--val_fraction", type=float, default=0.2)
    parser.add_argument("--test_fraction", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--labels", type=_label_names, default={}, help='JSON map of label values to names, e.g. \'{"1": "liver"}\''
    )
    parser.add_argument("--skip_unlabelled", action="store_true")
    args = parser.parse_args(argv)
    output_dir = args.output_dir or args.dataset_dir
    with errors_as_one_line():
        datalist = build_datalist(
            args.dataset_dir,
            args.image_dir,
            args.label_dir,
            args.label_suffix,
            args.val_fraction,
            args.test_fraction,
            args.seed,
            args.labels,
            relative_to=output_dir,
            skip_unlabelled=args.skip_unlabelled,
        )
        path = write_datalist(datalist, output_dir)
    print(report(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
