"""Command line: build ``datalist.json`` from an image folder and a label folder.

    python -m common.datasets.make_datalist --dataset_dir /data/Task04_Hippocampus --image_dir imagesTr \\
        --label_dir labelsTr --output_dir /data/hippocampus --test_fraction 0.2 --val_fraction 0.08 --skip_unlabelled
"""

from __future__ import annotations

from common.data.datalist import build_datalist, report, write_datalist


def main(argv: list[str] | None = None) -> int:
    """Build and write a datalist from an image folder and a label folder."""
    import argparse
    import json

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
    parser.add_argument("--labels", default="{}", help='JSON map of label values to names, e.g. \'{"1": "liver"}\'')
    parser.add_argument("--skip_unlabelled", action="store_true")
    args = parser.parse_args(argv)
    output_dir = args.output_dir or args.dataset_dir
    datalist = build_datalist(
        args.dataset_dir,
        args.image_dir,
        args.label_dir,
        args.label_suffix,
        args.val_fraction,
        args.test_fraction,
        args.seed,
        json.loads(args.labels),
        relative_to=output_dir,
        skip_unlabelled=args.skip_unlabelled,
    )
    path = write_datalist(datalist, output_dir)
    print(report(path))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
