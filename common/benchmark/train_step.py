"""Training-step cost of each method against the MONAI UNet baseline, through the bundles' own training configs, on
the same machine in one command.

    python -m common.benchmark.train_step --dataset msd_hippocampus --output_dir docs/results/train_step

Each method runs in a fresh process: the bundle's ``train.json`` with the dataset's declared overlays (as
:mod:`common.benchmark.accuracy` trains it, on 5 of the training cases: a step's cost does not depend on how many
volumes feed it), ``--warmup`` iterations untimed, then ``--iterations`` timed ones. Per iteration the time is
split into waiting for the batch (data loading on the critical path) and the step itself (forward, loss,
backward, optimiser); the statistics are over full batches (the subset's last, shorter batch is timed but left
out). ``--profile`` also writes the operators that take the step's time (``torch.profiler``), one table per method.
Output: ``train_step.md`` / ``train_step.json`` (seconds per iteration, median; ratio to the UNet), with the
hardware, torch version and precision beside them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from common.benchmark.efficiency import run_worker
from common.cli import bundles_folder, config_override
from common.cli import data_root as find_data_root

__all__ = ["measure_method", "main"]

#: the config key holding how many samples one training image or volume gives
SAMPLES_KEY = "samples_per_image"
#: methods measured by default, the baseline last (the ratios are to it)
DEFAULT_METHODS = ("balr_sam", "s_sam", "conv_lora", "sam2lora", "unet")


def measure_method(method: str, dataset: str, settings: dict, work_dir: Path) -> dict:
    """Time ``settings["warmup"] + settings["iterations"]`` training iterations of ``method`` on ``dataset`` in this
    process; returns seconds per iteration (median and quartiles), the share spent waiting for batches, the
    precision the bundle chose and, with ``settings["profile"]``, the top operators by self and by total CPU time."""
    from ignite.engine import Events

    from common.benchmark import accuracy

    run_dir = work_dir / method
    bundle_dir = run_dir / "bundle"  # a copy: training writes models/ under its bundle_root
    shutil.rmtree(bundle_dir, ignore_errors=True)
    shutil.copytree(
        bundles_folder(settings["bundles"]) / accuracy.METHODS[method].bundle,
        bundle_dir,
        ignore=shutil.ignore_patterns("*.pt", "*.pth", "eval"),
    )
    data_dir = accuracy.prepare_dataset(dataset, Path(settings["data_root"]), work_dir)
    data_dir = accuracy.labelled_subset(data_dir, 5, 0, work_dir)
    namespace = argparse.Namespace(  # what accuracy's training helpers read of its command line
        backbone=settings["backbone"], device=None, overrides=dict(settings["overrides"]),
        num_workers=settings["num_workers"], whole_pictures=False,
    )  # fmt: skip
    total = settings["warmup"] + settings["iterations"]
    overrides = {
        **accuracy._run_overrides(method, dataset, run_dir, data_dir, namespace),
        "bundle_root": str(bundle_dir),
        "output_dir": str(run_dir / "logs"),
        "max_epochs": 1,
        "epoch_length": total,
        "train#trainer#epoch_length": total,
        "val_interval": 1000,  # no validation inside the timed epoch
        "resume": False,
        "initial_weights": None,
    }
    parser = accuracy.training_parser(method, dataset, bundle_dir, overrides, namespace)
    parser.get_parsed_content("initialize")
    trainer = parser.get_parsed_content("train#trainer")
    marks: dict[str, list[float]] = {"fetch": [], "step": [], "images": []}
    clock = {}

    def _mark(name):
        def handler(_engine):
            clock[name] = time.perf_counter()

        return handler

    def _record(engine):
        if engine.state.iteration > settings["warmup"]:
            marks["fetch"].append(clock["step"] - clock["fetch"])
            marks["step"].append(time.perf_counter() - clock["step"])
            marks["images"].append(_batch_images(engine.state.batch))

    trainer.add_event_handler(Events.GET_BATCH_STARTED, _mark("fetch"))
    trainer.add_event_handler(Events.ITERATION_STARTED, _mark("step"))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, _record)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=total), lambda engine: engine.terminate())
    profiler = None
    if settings["profile"]:
        from torch.profiler import ProfilerActivity, profile

        profiler = profile(activities=[ProfilerActivity.CPU])
        # the timed iterations only: the warm-up's one-off costs (first allocations, oneDNN primitives) left out
        trainer.add_event_handler(Events.ITERATION_COMPLETED(once=max(1, settings["warmup"])), lambda _e: profiler.start())
    trainer.run()
    profile_rows = None
    if profiler is not None:
        profiler.stop()
        averages = profiler.key_averages()
        # self time names the kernels that cost; total time the phases they belong to (backward, optimiser, loader)
        profile_rows = "\n\n".join(
            f"sorted by {key}\n" + averages.table(sort_by=key, row_limit=30)
            for key in ("self_cpu_time_total", "cpu_time_total")
        )
    every = [f + s for f, s in zip(marks["fetch"], marks["step"])]
    # a subset's last batch can be short (5 volumes in batches of 2): it would pull the median down, so the
    # statistics are over full batches, the cost every iteration of a real training run pays
    full = max(marks["images"])
    full_batches = [seconds for seconds, images in zip(every, marks["images"]) if images == full]
    fetch = [seconds for seconds, images in zip(marks["fetch"], marks["images"]) if images == full]
    quartiles = statistics.quantiles(full_batches, n=4) if len(full_batches) > 1 else [full_batches[0]] * 3
    network = parser.get_parsed_content("network")
    amp = parser.get_parsed_content("amp") if "amp" in parser else None
    return {
        "method": method,
        "seconds_per_iteration": round(statistics.median(full_batches), 4),
        "quartiles": [round(quartiles[0], 4), round(quartiles[2], 4)],
        # what a run pays per iteration: every timed iteration, stalls and short batches included
        "mean_seconds_per_iteration": round(statistics.fmean(every), 4),
        "batch_wait_share": round(sum(fetch) / sum(full_batches), 3),
        "batch_size": parser.get_parsed_content("batch_size"),
        "samples_per_image": parser.get_parsed_content(SAMPLES_KEY) if SAMPLES_KEY in parser else None,
        "precision": "bfloat16" if amp and torch.device(parser.get_parsed_content("device")).type == "cpu"
        else "float16" if amp else "float32",
        "trainable_parameters": sum(p.numel() for p in network.parameters() if p.requires_grad),
        "iterations_timed": len(every),
        "full_batch_iterations": len(full_batches),
        "seconds": [round(value, 3) for value in every],
        "images_per_iteration": marks["images"],
        "profile": profile_rows,
    }


def _batch_images(batch) -> int:
    """How many 2D images (slices or crops) the network saw in one collated training batch."""
    if isinstance(batch, dict):
        return int(batch["image"].shape[0])
    if isinstance(batch, (list, tuple)):
        return sum(_batch_images(item) for item in batch)
    return int(batch.shape[0])


def write_report(rows: list[dict], output_dir: Path, header: dict) -> str:
    """``train_step.md`` / ``train_step.json`` (and ``profile_<method>.txt`` where profiled) in ``output_dir``;
    returns the markdown."""
    output_dir.mkdir(parents=True, exist_ok=True)
    baseline = next((row["seconds_per_iteration"] for row in rows if row["method"] == "unet"), None)
    lines = [
        f"# Training-step cost ({header['dataset']}, {header['date']})",
        "",
        f"{header['hardware']}, torch {torch.__version__}; "
        f"{header['iterations']} timed iterations after {header['warmup']} untimed; `{header['command']}`",
        "",
        "| method | seconds / full-batch iteration (median) | quartiles | × UNet | mean s / iteration (all) | "
        "waiting for the batch | batch × samples | precision | trainable |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = f"{row['seconds_per_iteration'] / baseline:.1f}×" if baseline else "–"
        samples = f"{row['batch_size']} × {row['samples_per_image'] or 1}"
        lines.append(
            f"| {row['method']} | {row['seconds_per_iteration']:.3f} | {row['quartiles'][0]:.3f}–"
            f"{row['quartiles'][1]:.3f} | {ratio} | {row['mean_seconds_per_iteration']:.3f} | "
            f"{100 * row['batch_wait_share']:.0f} % | {samples} | "
            f"{row['precision']} | {row['trainable_parameters']:,} |"
        )
        if row.get("profile"):
            (output_dir / f"profile_{row['method']}.txt").write_text(row["profile"] + "\n")
    markdown = "\n".join(lines) + "\n"
    (output_dir / "train_step.md").write_text(markdown)
    saved = [{k: v for k, v in row.items() if k != "profile"} for row in rows]
    (output_dir / "train_step.json").write_text(json.dumps({**header, "rows": saved}, indent=2) + "\n")
    return markdown


def main(argv: list[str] | None = None) -> int:
    from common.benchmark import accuracy

    parser = argparse.ArgumentParser(prog="python -m common.benchmark.train_step", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="msd_hippocampus", choices=sorted(accuracy.DATASETS))
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=list(accuracy.METHODS))
    parser.add_argument("--backbone", default="litemedsam")
    parser.add_argument("--iterations", type=int, default=20, help="timed iterations per method")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations first")
    parser.add_argument("--num_workers", type=int, default=None, help="default: the bundle's own")
    parser.add_argument("--profile", action="store_true", help="also write the top operators per method")
    parser.add_argument("--set", action="append", default=[], type=config_override, metavar="ID=VALUE")
    parser.add_argument("--data_root", default=None, help="as for common.benchmark.accuracy")
    parser.add_argument("--bundles", default=None, help="as for common.benchmark.accuracy")
    parser.add_argument("--output_dir", default=None, help="folder for train_step.md / .json (required)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        job = json.loads(args.worker)
        print(json.dumps(measure_method(job["method"], job["dataset"], job["settings"], Path(job["work_dir"]))))
        return 0
    if args.output_dir is None:
        parser.error("the following arguments are required: --output_dir")
    if args.iterations < 1 or args.warmup < 0:
        parser.error("--iterations must be at least 1 and --warmup at least 0")
    try:
        data_root = str(find_data_root(args.data_root))
        bundles = str(bundles_folder(args.bundles))
        accuracy.dataset_source(args.dataset, Path(data_root))
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    settings = {
        "data_root": data_root,
        "bundles": bundles,
        "backbone": args.backbone,
        "overrides": dict(args.set),
        "num_workers": args.num_workers,
        "warmup": args.warmup,
        "iterations": args.iterations,
        "profile": args.profile,
    }
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for method in args.methods:
            print(f"{method}: {args.warmup} + {args.iterations} iterations ...", file=sys.stderr, flush=True)
            job = {"method": method, "dataset": args.dataset, "settings": settings, "work_dir": work}
            rows.append(run_worker(job, "common.benchmark.train_step"))
            print(f"{method}: {rows[-1]['seconds_per_iteration']:.3f} s an iteration", file=sys.stderr, flush=True)
    header = {
        "dataset": args.dataset,
        "date": datetime.date.today().isoformat(),
        "hardware": accuracy.hardware(),
        "torch": torch.__version__,
        "iterations": args.iterations,
        "warmup": args.warmup,
        "command": "python -m common.benchmark.train_step " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    print(write_report(rows, Path(args.output_dir), header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
