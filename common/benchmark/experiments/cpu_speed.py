"""CPU speed of training and segmenting with the bundles on LiteMedSAM: today's path against the fast path.

``python -m common.benchmark.experiments.cpu_speed`` measures, in one run and on one machine, side by side:

- training samples per second of each method's MSD hippocampus configuration and of SAM2LoRA's fundus
  (CHASE_DB1) configuration, each built from its bundle's own ``train.json`` + dataset configs: the path before
  the CPU work (float32, LiteMedSAM at 256², uncached datasets, four data-loader workers) against the fast path
  (the bundles' defaults now: ``amp`` as :func:`common.engines.choose_amp` decides, cached deterministic
  preprocessing, workers sized to the cores) at 256² and, for the hippocampus, at 128²;
- seconds to segment one MSD hippocampus volume with ``common.segment`` end to end (process-internal: loading
  the bundle, reading, segmenting and writing), before and after;
- achieved GFLOP/s of a training step (FLOPs counted by ``torch.utils.flop_counter``) against the CPU's float32
  peak (cores × clock × float32 FLOP per cycle of its vector units, the arithmetic written beside it);
- optionally (``--accuracy_iterations``) the same seeded short hippocampus training in float32 and in bfloat16
  and the validation Dice each reaches at every validation (``--accuracy_val_every``); ``--accuracy_only`` measures
  only that pair and keeps the rest of an earlier report, and the pair it replaces, as they were;
  ``--accuracy_control_threads`` adds the float32 run on another thread count, the spread with no precision change.

It writes ``<output>.md`` and ``<output>.json`` (default ``docs/cpu_speed``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from common.benchmark.accuracy import (
    DATASETS,
    METHODS,
    _read_configs,
    dataset_configs,
    prepare_dataset,
)
from common.benchmark.efficiency import cpu_model
from common.cli import bundles_folder, data_root
from common.metrics import label_dice
from common.engines.precision import PRECISION_ENV, cpu_flags, cpu_has_native_bf16, cpu_info

__all__ = ["PATHS", "cpu_peak_gflops", "main", "measure_training", "segment_volume_seconds"]

logger = logging.getLogger("common.benchmark.experiments.cpu_speed")

#: the two paths compared: what the bundles did before the CPU work (plus LiteMedSAM's convolution weights in the
#: default memory layout, see :func:`released_memory_layout`), and what they do by default now
PATHS = {
    "today": {"amp": False, "cache_rate": 0.0, "num_workers": 4},
    "fast": {},  # the bundles' own defaults
}


@contextlib.contextmanager
def released_memory_layout(enabled: bool = True):
    """LiteMedSAM built with its convolution weights in the default (NCHW) layout, as before the CPU work, while the
    context lasts (the builder now makes them channels-last)."""
    import common.backbones as backbones

    build = backbones.build_litemedsam

    def build_nchw(input_size: int = 256):
        return build(input_size).to(memory_format=torch.contiguous_format)

    if enabled:
        backbones.build_litemedsam = build_nchw
    try:
        yield
    finally:
        backbones.build_litemedsam = build

#: ``common.segment`` before (float32 at 256², as inference.json did) and after (the bundle's default amp)
SEGMENT_PATHS = {
    "today": {"amp": False, "input_size": 256},
    "fast_256": {"input_size": 256},
    "fast_128": {"input_size": 128},
}
SEGMENT_PATHS_TITLES = {
    "today": "today (float32, 256²)",
    "fast_256": "fast (256², bundle default amp)",
    "fast_128": "fast (128², bundle default amp)",
}
PRECISIONS = ("float32", "bfloat16")
METHOD_NAMES = {"sam2lora": "SAM2LoRA", "balr_sam": "BALR-SAM", "s_sam": "S-SAM", "conv_lora": "Conv-LoRA"}

#: (row name, method, dataset, input sizes, overrides for every path of the row)
TRAINING_ROWS = [
    ("SAM2LoRA, hippocampus", "sam2lora", "msd_hippocampus", (256, 128), {}),
    ("BALR-SAM, hippocampus", "balr_sam", "msd_hippocampus", (256, 128), {}),
    # S-SAM's recipe batch (8 volumes × 4 slices = 32 slices) needs more than 24 GiB at 256² in float32 (the first
    # run of this benchmark was killed for memory there): 2 volumes × 4 slices, as the other methods' batches
    ("S-SAM, hippocampus (8 slices per step)", "s_sam", "msd_hippocampus", (256, 128), {"batch_size": 2}),
    ("Conv-LoRA, hippocampus", "conv_lora", "msd_hippocampus", (256, 128), {}),
    ("SAM2LoRA, fundus (CHASE_DB1)", "sam2lora", "chase_db1", (256,), {}),
]


def _trainer(method: str, dataset: str, data_dir: Path, work: Path, overrides: dict):
    spec = METHODS[method]
    settings = {
        "bundle_root": str(work),
        "dataset_dir": str(data_dir),
        "backbone": "litemedsam",
        "device": "$torch.device('cpu')",
        "output_dir": str(work / "logs"),
        "val_interval": 10**6,
        "label_names": DATASETS[dataset].label_names,
        **overrides,
    }
    parser = _read_configs(bundles_folder() / spec.bundle, dataset_configs(method, dataset)[0], settings)
    parser.get_parsed_content("initialize")
    return parser


def measure_training(
    method: str, dataset: str, data_dir: Path, overrides: dict, iterations: int, warmup: int = 1
) -> dict:
    """Samples (2D pictures or slices) per second over ``iterations`` training iterations after ``warmup``."""
    from ignite.engine import Events

    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        parser = _trainer(method, dataset, data_dir, Path(work), overrides)
        trainer = parser.get_parsed_content("train#trainer")
        setup_seconds = time.perf_counter() - started
        marks: list[tuple[float, int]] = []

        def mark(engine):
            batch = engine.state.batch  # decollated into one dict per sample after the iteration
            marks.append((time.perf_counter(), len(batch) if isinstance(batch, list) else len(batch["image"])))

        trainer.add_event_handler(Events.ITERATION_COMPLETED, mark)
        trainer.add_event_handler(
            Events.ITERATION_COMPLETED(once=warmup + iterations), lambda engine: engine.terminate()
        )
        trainer.state.max_epochs = 10**6  # the iteration limit above ends the run
        trainer.run()
        timed = marks[warmup - 1 :] if warmup else [(marks[0][0], 0), *marks]
        seconds = timed[-1][0] - timed[0][0]
        samples = sum(n for _, n in timed[1:])
        return {
            "samples_per_second": samples / seconds,
            "seconds_per_iteration": seconds / (len(timed) - 1),
            "samples_per_iteration": samples / (len(timed) - 1),
            "setup_seconds": setup_seconds,
            "amp": bool(parser.get_parsed_content("amp")),
            "num_workers": int(parser.get_parsed_content("num_workers")),
            "cache_rate": float(parser.get_parsed_content("cache_rate")),
        }


def training_step_flops(method: str, dataset: str, data_dir: Path, overrides: dict) -> tuple[float, int]:
    """FLOPs of one training iteration (forward, loss and backward, counted by ``torch.utils.flop_counter``) and
    the samples in it."""
    from torch.utils.flop_counter import FlopCounterMode

    with tempfile.TemporaryDirectory() as work:
        parser = _trainer(method, dataset, data_dir, Path(work), {**overrides, "amp": False})
        network = parser.get_parsed_content("network")
        loss = parser.get_parsed_content("loss")
        batch = next(iter(parser.get_parsed_content("train#dataloader")))
        image, label = torch.as_tensor(batch["image"]), torch.as_tensor(batch["label"])
        network.train()
        with FlopCounterMode(display=False) as counter:
            loss(network(image), label).backward()
        return float(counter.get_total_flops()), int(image.shape[0])


def cpu_peak_gflops() -> dict:
    """The CPU's float32 peak and how it is computed: cores × clock × FLOP per cycle.

    FLOP per cycle per core for float32: 2 (FMA) × vector lanes × FMA pipes. AVX-512 on Intel server cores: 16
    lanes × 2 pipes → 64; AMD Zen 4 runs AVX-512 on 256-bit pipes: 8 lanes × 2 → 32; AVX2 + FMA: 8 × 2 → 32.
    The clock is the highest frequency sysfs reports, else the clock ``/proc/cpuinfo`` shows (in a virtual machine
    often the base clock: a CPU that boosts above it makes the peak too low and the share of it too high). Cores:
    the threads PyTorch uses (one per core).
    """
    flags = cpu_flags()
    model = cpu_model()
    amd = "AMD" in model.upper()
    if "avx512f" in flags and not amd:
        lanes, pipes, unit = 16, 2, "AVX-512 (Intel: 2 FMA pipes of 16 float32)"
    elif "avx512f" in flags:
        lanes, pipes, unit = 8, 2, "AVX-512 on AMD Zen 4 (2 FMA pipes of 256 bits = 8 float32)"
    elif "fma" in flags:
        lanes, pipes, unit = 8, 2, "AVX2 + FMA (2 FMA pipes of 8 float32)"
    else:
        lanes, pipes, unit = 4, 1, "SSE (no FMA)"
    per_cycle = 2 * lanes * pipes
    ghz = _cpu_ghz()
    cores = torch.get_num_threads()
    return {
        "cores": cores,
        "ghz": ghz,
        "flop_per_cycle_float32": per_cycle,
        "vector_unit": unit,
        "peak_gflops_float32": cores * ghz * per_cycle if ghz else None,
        "arithmetic": f"{cores} cores × {ghz:.2f} GHz × {per_cycle} FLOP/cycle ({unit}; 2 per FMA)",
    }


def _cpu_ghz() -> float:
    """The CPU's highest clock that sysfs reports, else the current one in ``/proc/cpuinfo`` (0 if neither)."""
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq") as frequency:
            return int(frequency.read()) / 1e6
    except (OSError, ValueError):
        pass
    try:
        return float(cpu_info().get("cpu MHz", 0)) / 1000
    except ValueError:
        return 0.0


def segment_volume_seconds(volume: Path, overrides: dict, repeats: int = 2) -> dict:
    """Seconds ``common.segment`` takes for one volume, end to end (bundle load, read, segment, write), with an
    adapter saved from the untrained network (speed does not depend on the weights): the best of ``repeats``
    runs, and the first one (cold)."""
    from common.adapters import save_adapter_checkpoint
    from common.segment import segment_scans

    bundle = bundles_folder() / METHODS["sam2lora"].bundle
    configs = ["hippocampus_inference.json"]
    times = []
    with tempfile.TemporaryDirectory() as work:
        weights = Path(work) / "model.pt"
        parser = _read_configs(bundle, ["inference.json", *configs], {**overrides, "backbone": "litemedsam"})
        save_adapter_checkpoint(parser.get_parsed_content("network_def"), weights)
        for repeat in range(repeats):
            started = time.perf_counter()
            results = segment_scans(
                bundle, volume, Path(work) / f"out{repeat}", weights=weights, configs=configs,
                overrides={**overrides, "backbone": "litemedsam"}, progress=False,
            )  # fmt: skip
            times.append(time.perf_counter() - started)
            if set(results.values()) != {"ok"}:
                raise RuntimeError(f"segmenting {volume} failed: {results}")
    return {"seconds": min(times), "first_seconds": times[0]}


def box_prompt_dice(network, hippocampus_dir: Path, cases: int = 30) -> list[float]:
    """Dice of ``network`` (a ``SamSegmentationNet``) with one tight ground-truth box per picture, on the
    mid-axial slice of the first ``cases`` labelled MSD hippocampus volumes (both structures as one foreground;
    intensities scaled to their 0.5-99.5 percentiles)."""
    import nibabel
    import numpy as np

    dices = []
    for label_path in sorted((hippocampus_dir / "labels").glob("hippocampus_*.nii.gz"))[:cases]:
        image = np.asarray(nibabel.load(hippocampus_dir / "images" / label_path.name).dataobj, dtype=np.float32)
        label = np.asarray(nibabel.load(label_path).dataobj)
        z = label.shape[2] // 2
        foreground = label[:, :, z] > 0
        low, high = np.percentile(image, [0.5, 99.5])
        picture = torch.from_numpy(np.clip((image[:, :, z] - low) / (high - low), 0, 1))[None, None]
        rows, cols = np.nonzero(foreground)
        box = torch.tensor([[cols.min(), rows.min(), cols.max(), rows.max()]], dtype=torch.float32)
        with torch.no_grad():
            logits, _ = network.forward_with_iou(picture, boxes=box)
        prediction = logits[0, 0].numpy() > 0
        dices.append(label_dice(prediction.astype(np.int64), foreground.astype(np.int64), 1)[0])
    return dices


def zero_shot_box_dice(hippocampus_dir: Path, sizes: tuple[int, ...], cases: int = 30) -> dict:
    """:func:`box_prompt_dice` of the released LiteMedSAM weights built for each input size:
    ``{size: {"mean": …, "per_case": […]}}``."""
    from common.networks import SamSegmentationNet

    results = {}
    for size in sizes:
        dices = box_prompt_dice(SamSegmentationNet("litemedsam", input_size=size).eval(), hippocampus_dir, cases)
        results[size] = {"mean": sum(dices) / len(dices), "per_case": dices}
    return results


def _ratio(value: float, reference: float) -> str:
    return f"{value / reference:.1f}×"


def _accuracy_pair(data_dir: Path, method: str, iterations: int, size: int, max_val_cases: int,
                   val_every: int | None = None, seed: int = 0, control_threads: int = 0) -> dict:
    """Validation Dice of the same seeded short hippocampus training of ``method`` in float32 and in bfloat16,
    validated every ``val_every`` iterations (default: once, at the end); ``curve`` holds each (iteration, Dice).
    ``seed`` replaces the bundle's ``set_determinism(seed=0)``: pairs of other seeds show how far two runs of the
    same precision drift apart. ``control_threads`` > 0 adds a third run, ``float32_control``: float32 again on that
    many torch threads, where only the order in which float32 sums are added up differs from the float32 run; how far
    it ends from that run is the spread a change of arithmetic causes with no change of precision at all."""
    import shutil

    from common.benchmark.accuracy import train

    runs = [("float32", False, None), ("bfloat16", True, None)]
    if control_threads:
        runs.append(("float32_control", False, control_threads))
    threads = torch.get_num_threads()
    results = {}
    for name, amp, run_threads in runs:
        settings = argparse.Namespace(
            iterations=iterations, val_every=val_every or iterations, num_workers=1, batch_size=None,
            max_val_cases=max_val_cases, minutes=None, backbone="litemedsam", device="cpu", whole_pictures=False,
            resume=False, overrides={"amp": amp, "input_size": size,
                                     "initialize": [f"$monai.utils.set_determinism(seed={seed})"]},
        )  # fmt: skip
        torch.set_num_threads(run_threads or threads)
        try:
            with tempfile.TemporaryDirectory() as work:
                shutil.copytree(bundles_folder() / METHODS[method].bundle, Path(work) / "bundle",
                                ignore=shutil.ignore_patterns("*.pt", "*.pth", "eval"))  # fmt: skip
                run = train(method, "msd_hippocampus", Path(work), data_dir, settings)
        finally:
            torch.set_num_threads(threads)
        curve = run["learning_curve"]["metrics"][run["key_metric"]]
        results[name] = {"val_mean_dice": curve[-1][1], "train_seconds": run["train_seconds"], "curve": curve,
                         "threads": run_threads or threads}  # fmt: skip
    results["difference"] = abs(results["float32"]["val_mean_dice"] - results["bfloat16"]["val_mean_dice"])
    if control_threads:
        control = results["float32_control"]["val_mean_dice"]
        results["control_difference"] = abs(results["float32"]["val_mean_dice"] - control)
    results.update(method=method, iterations=iterations, input_size=size, validation_cases=max_val_cases, seed=seed)
    return results


def _pair_lines(acc: dict) -> list[str]:
    """The Markdown of one float32/bfloat16 pair (and its float32 control run, if any): final Dice and seconds, then
    the curves side by side if any."""
    control = "float32_control" in acc
    runs = [*PRECISIONS, *(["float32_control"] if control else [])]
    threads = {k: f"{acc[k].get('threads', '?')} thread{'' if acc[k].get('threads') == 1 else 's'}" for k in runs}
    titles = {k: f"{k} on {threads[k]}" if control else k for k in PRECISIONS}
    if control:
        titles["float32_control"] = f"float32 on {threads['float32_control']} (control)"
    lines = [
        *([f"Measured {acc['date']} on {acc['hardware']} by `{acc['command']}`.", ""] if acc.get("command") else []),
        f"{METHOD_NAMES[acc.get('method', 'sam2lora')]} on the hippocampus, {acc['iterations']} iterations seeded "
        f"{acc.get('seed', 0)} at {acc['input_size']}², validated on the first {acc['validation_cases']} validation "
        "volumes (3D mean Dice of both structures):", "",
        f"| {'run' if control else 'precision'} | validation Dice | training seconds |", "|---|---|---|",
        *(f"| {titles[k]} | {acc[k]['val_mean_dice']:.3f} | {acc[k]['train_seconds']:.0f} |" for k in runs),
        "", f"Difference: {acc['difference']:.3f} (0.02 allowed).",
    ]  # fmt: skip
    if control:
        lines += ["", f"Control: the same seeded float32 run on {threads['float32_control']} instead of "
                  f"{threads['float32']} (the same data and seed; only the order of float32 additions "
                  f"differs) ends {acc['control_difference']:.3f} from it: the spread of this run that no change of "
                  "precision causes."]  # fmt: skip
    curves = [acc[k].get("curve") or [] for k in runs]
    if min(len(c) for c in curves) > 1:
        header = " | ".join(titles[k] for k in runs)
        rows = [f"| {points[0][0]} | " + " | ".join(f"{p[1]:.3f}" for p in points)
                + f" | {abs(points[0][1] - points[1][1]):.3f} |" for points in zip(*curves)]  # fmt: skip
        gap = "float32 − bfloat16" if control else "difference"
        lines += ["", f"Every validation of the {'runs' if control else 'two runs'}:", "",
                  f"| iteration | {header} | {gap} |",
                  "|---" * (len(runs) + 2) + "|", *rows]  # fmt: skip
    gain = acc["bfloat16"]["val_mean_dice"] - acc["float32"]["val_mean_dice"]
    if acc["difference"] > 0.02 and gain > 0:
        lines += ["", f"The gap is in bfloat16's favour (+{gain:.3f}): two short seeded runs whose arithmetic "
                  "differs drift apart on the way down the loss, so this is run-to-run spread, not precision "
                  "lost to bfloat16."]  # fmt: skip
    if max(acc[k]["val_mean_dice"] for k in PRECISIONS) < 0.05:
        lines += ["", "Both runs are still on the initial plateau (nothing segmented yet): this pair shows no "
                  "difference because neither has learned; it needs a longer run to say anything."]  # fmt: skip
    return lines


def _pairs_summary_lines(pairs: list[dict]) -> list[str]:
    """One table of every float32/bfloat16 pair (newest first; a rerun that ended on the same Dice shares its row),
    then, for each configuration run with more than one seed, the means and each precision's spread across them."""
    rows: dict[tuple, dict] = {}  # (method, iterations, size, cases, seed, float32 Dice, bfloat16 Dice) -> row
    for acc in pairs:
        dice = tuple(round(acc[k]["val_mean_dice"], 3) for k in PRECISIONS)
        key = (acc.get("method", "sam2lora"), acc["iterations"], acc["input_size"], acc["validation_cases"],
               acc.get("seed", 0), *dice)  # fmt: skip
        row = rows.setdefault(key, {"runs": 0, "control": None})
        row["runs"] += 1
        if acc.get("control_difference") is not None:
            row["control"] = acc["control_difference"]
    lines = ["| method | iterations | input | seed | float32 | bfloat16 | bfloat16 − float32 | float32 control's "
             "distance | runs |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for (method, iterations, size, _, seed, f32, bf16), row in rows.items():
        control = "–" if row["control"] is None else f"{row['control']:.3f}"
        runs = f"{row['runs']} (same Dice)" if row["runs"] > 1 else "1"
        lines.append(f"| {METHOD_NAMES[method]} | {iterations} | {size}² | {seed} | {f32:.3f} | {bf16:.3f} | "
                     f"{bf16 - f32:+.3f} | {control} | {runs} |")  # fmt: skip
    configs: dict[tuple, list[tuple]] = {}
    for method, iterations, size, cases, seed, f32, bf16 in rows:
        configs.setdefault((method, iterations, size, cases), []).append((seed, f32, bf16))
    for (method, iterations, size, _), runs in configs.items():
        if len({seed for seed, *_ in runs}) < 2:
            continue
        seeds, f32, bf16 = zip(*runs)
        lines += ["", f"{METHOD_NAMES[method]}, {iterations} iterations at {size}², over the runs seeded "
                  f"{', '.join(map(str, seeds))}: mean {sum(f32) / len(f32):.3f} in float32 and "
                  f"{sum(bf16) / len(bf16):.3f} in bfloat16; across them float32 spreads {max(f32) - min(f32):.3f} "
                  f"and bfloat16 {max(bf16) - min(bf16):.3f}."]  # fmt: skip
    return lines


def write_report(result: dict, output: Path) -> str:
    """``output``.md (tables) and ``output``.json (every number); returns the Markdown."""
    peak = result["cpu"]
    lines = [
        "# CPU speed: training and segmenting on LiteMedSAM, before and after the CPU fast path",
        "",
        f"Measured {result['date']} on {result['hardware']} by `{result['command']}`"
        + (
            f"; the training rows and the zero-shot Dice by earlier runs of `{result['continued_from']['command']}` "
            "on the same machine the same day, continued with `--continue_from` after they stopped on errors fixed "
            "since (`continued_from` in the JSON says which row came from which run); every other number in this run."
            if result.get("continued_from")
            else "; every row in the same run."
        ),
        f"Native bfloat16: {'yes' if result['native_bf16'] else 'no'}; "
        f"float32 peak {peak['peak_gflops_float32']:.0f} GFLOP/s = {peak['arithmetic']}.",
        "",
        "**today**: float32, 256², uncached datasets, 4 data-loader workers, NCHW convolution weights (the bundles "
        "before this change). "
        "**fast**: the bundles' defaults now: `amp` chosen by measuring the network (bfloat16 autocast where it is "
        "faster on this CPU), cached deterministic preprocessing (`cache_rate` 1), data-loader workers "
        "`min(4, cores/2)`; the input size is the `input_size` key.",
        "",
        "## Training (samples = 2D pictures or slices per second)",
        "",
        "| configuration | today 256² | fast 256² | speed-up | fast 128² | speed-up | fast precision (256 / 128) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["training"]:
        today, fast = row["today_256"], row["fast_256"]
        small = row.get("fast_128")
        lines.append(
            f"| {row['name']} | {today['samples_per_second']:.2f} | {fast['samples_per_second']:.2f} | "
            f"{_ratio(fast['samples_per_second'], today['samples_per_second'])} | "
            + (f"{small['samples_per_second']:.2f} | {_ratio(small['samples_per_second'], today['samples_per_second'])}"
               if small else "– | –")
            + " | " + " / ".join("bfloat16" if r["amp"] else "float32" for r in (fast, small) if r) + " |"
        )  # fmt: skip
    lines += ["", "## Segmenting one MSD hippocampus volume with `common.segment`", ""]
    seg = result["segment"]
    lines += [
        f"Volume `{seg['volume']}` ({seg['shape']}), SAM2LoRA hippocampus bundle, end to end in the process "
        "(bundle load, read, segment, write; best of two runs, the first in brackets):",
        "",
        "| path | seconds |",
        "|---|---|",
        *(
            f"| {title} | {seg[key]['seconds']:.2f} ({seg[key]['first_seconds']:.2f}) |"
            for key, title in SEGMENT_PATHS_TITLES.items()
        ),
    ]
    if result.get("zero_shot"):
        shot = result["zero_shot"]
        lines += [
            "", "## What a smaller LiteMedSAM input costs: zero-shot Dice with a tight box", "",
            f"Released weights, no training; mid-axial slice of the first {len(next(iter(shot.values()))['per_case'])} "
            "MSD hippocampus volumes, one tight ground-truth box around both structures:", "",
            "| input size | mean Dice | lowest |", "|---|---|---|",
            *(f"| {size}² | {v['mean']:.3f} | {min(v['per_case']):.3f} |" for size, v in shot.items()),
        ]  # fmt: skip
    lines += ["", "## Achieved FLOP rate of a training step", ""]
    lines += ["| step | GFLOP | seconds | GFLOP/s | % of float32 peak |", "|---|---|---|---|---|"]
    for row in result["flops"]:
        lines.append(
            f"| {row['name']} | {row['gflop']:.0f} | {row['seconds']:.2f} | {row['gflops']:.1f} | "
            f"{100 * row['gflops'] / peak['peak_gflops_float32']:.0f} % |"
        )
    if result.get("accuracy"):
        pairs = [result["accuracy"], *result.get("earlier_accuracy", [])]
        lines += ["", "## Accuracy: float32 against bfloat16", ""]
        if len(pairs) > 1:
            lines += ["Every pair measured (validation Dice at the end of each run; details of each below):", "",
                      *_pairs_summary_lines(pairs), "", "### The newest pair", ""]  # fmt: skip
        lines += _pair_lines(result["accuracy"])
        for earlier in result.get("earlier_accuracy", []):
            lines += ["", "### An earlier pair", "", *_pair_lines(earlier)]
    text = "\n".join(lines) + "\n"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".md").write_text(text)
    output.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    return text


def _argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m common.benchmark.experiments.cpu_speed", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--data_root",
        default=None,
        help="folder holding chase_db1/ and msd_hippocampus/ (default: $MONAI_SAM_PEFT_DATA, else ../shared/data)",
    )
    parser.add_argument("--iterations", type=int, default=3, help="timed training iterations per row (after 1 warm-up)")
    parser.add_argument("--rows", nargs="+", default=None, help="only these training rows (by method:dataset)")
    parser.add_argument("--accuracy_iterations", type=int, default=0, help="also run the float32/bfloat16 pair")
    parser.add_argument("--accuracy_val_cases", type=int, default=8)
    parser.add_argument(
        "--accuracy_input_size",
        type=int,
        default=64,
        help="LiteMedSAM input of the pair (default 64: the size the shipped hippocampus adapters were trained at)",
    )
    parser.add_argument(
        "--accuracy_val_every", type=int, default=None, help="validate the pair every N iterations (default: once)"
    )
    parser.add_argument("--accuracy_seed", type=int, default=0, help="seed of the pair (the bundles' own is 0)")
    parser.add_argument(
        "--accuracy_control_threads",
        type=int,
        default=0,
        help="also run the pair's float32 training on this many torch threads (a control: same seed and data, only "
        "the order of float32 additions differs), to show how far a seeded run drifts with no precision change",
    )
    parser.add_argument(
        "--accuracy_method",
        default="balr_sam",
        choices=[m for m, spec in METHODS.items() if not spec.baseline],
        help="method of the pair (default balr_sam: its softmax head learns from the first iterations, so a short "
        "pair already segments; prompt-free sigmoid heads start on a plateau)",
    )
    parser.add_argument(
        "--accuracy_only",
        action="store_true",
        help="with --continue_from: keep every measurement of that run and only run the float32/bfloat16 pair",
    )
    parser.add_argument("--work_dir", default=None, help="where prepared datalists go (default: a temporary folder)")
    parser.add_argument(
        "--continue_from",
        default=None,
        help="the .partial.json of a stopped run: keep its zero-shot and training rows, measure the rest (the report "
        "says which rows came from which run)",
    )
    parser.add_argument(
        "--output", default="docs/cpu_speed", help="report path without suffix (default docs/cpu_speed)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _argument_parser()
    settings = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s", stream=sys.stdout)
    if os.environ.get(PRECISION_ENV):
        parser.error(f"unset {PRECISION_ENV}: the fast path is the bundles' own choice")
    if settings.accuracy_only and not (settings.continue_from and settings.accuracy_iterations):
        parser.error("--accuracy_only needs --continue_from (the run to keep) and --accuracy_iterations")
    work = Path(settings.work_dir or tempfile.mkdtemp(prefix="cpu_speed-"))
    data = {name: prepare_dataset(name, data_root(settings.data_root), work / name) for name in DATASETS}
    earlier = json.loads(Path(settings.continue_from).read_text()) if settings.continue_from else None
    result = _new_result(argv, settings, earlier)
    if settings.accuracy_only:
        return _accuracy_only(result, earlier, data["msd_hippocampus"], settings)
    _flush(result, settings)
    _measure_training_rows(result, data, settings)
    _measure_flops(result, data["msd_hippocampus"])
    _measure_segmentation(result, data["msd_hippocampus"])
    print(write_report(result, Path(settings.output)))  # written now too: the accuracy pair takes long
    if settings.accuracy_iterations:
        result["accuracy"] = _accuracy_pair(
            data["msd_hippocampus"], settings.accuracy_method, settings.accuracy_iterations,
            settings.accuracy_input_size, settings.accuracy_val_cases, settings.accuracy_val_every,
            settings.accuracy_seed, settings.accuracy_control_threads,
        )
    print(write_report(result, Path(settings.output)))
    Path(settings.output).with_suffix(".partial.json").unlink(missing_ok=True)
    return 0


def _new_result(argv: list[str] | None, settings: argparse.Namespace, earlier: dict | None) -> dict:
    """The report's header (date, hardware, command, CPU peak) and the zero-shot rows, or those of ``earlier``, the
    run this one continues."""
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "hardware": f"{cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "command": "python -m common.benchmark.experiments.cpu_speed "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "native_bf16": cpu_has_native_bf16(),
        "cpu": cpu_peak_gflops(),
        "training": [],
        "flops": [],
    }
    if earlier:
        result["zero_shot"] = earlier["zero_shot"]
        result["training"] = earlier["training"]
        result["continued_from"] = {
            "command": earlier["command"],
            "rows": [row["name"] for row in earlier["training"]],
            "earlier": earlier.get("continued_from"),
        }
    else:
        result["zero_shot"] = zero_shot_box_dice(data_root(settings.data_root) / "msd_hippocampus", (256, 192, 128))
    return result


def _measure_training_rows(result: dict, data: dict[str, Path], settings: argparse.Namespace) -> None:
    """Seconds per training iteration of each row not measured yet, on today's and the fast path; flushed after
    every row."""
    for name, method, dataset, sizes, row_overrides in TRAINING_ROWS:
        if settings.rows and f"{method}:{dataset}" not in settings.rows:
            continue
        if any(row["name"] == name for row in result["training"]):
            continue  # measured by the run this one continues
        row = {"name": name, "method": method, "dataset": dataset}
        for path, size in [("today", 256), *(("fast", s) for s in sizes)]:
            overrides = {**PATHS[path], **row_overrides, "input_size": size}
            logger.info("training speed: %s, %s path, %d²", name, path, size)
            with released_memory_layout(path == "today"):
                row[f"{path}_{size}"] = measure_training(method, dataset, data[dataset], overrides, settings.iterations)
            logger.info("%s", row[f"{path}_{size}"])
        result["training"].append(row)
        _flush(result, settings)


def _measure_flops(result: dict, hippocampus: Path) -> None:
    """Achieved GFLOP/s of SAM2LoRA's hippocampus training step at each size its rows were timed at."""
    for size in (256, 128):
        if not any(f"fast_{size}" in row and row["dataset"] == "msd_hippocampus" for row in result["training"]):
            continue
        flops, samples = training_step_flops("sam2lora", "msd_hippocampus", hippocampus, {"input_size": size})
        row = next(r for r in result["training"] if r["method"] == "sam2lora" and r["dataset"] == "msd_hippocampus")
        for path in ("today", "fast") if size == 256 else ("fast",):
            timing = row[f"{path}_{size}"]
            seconds = timing["seconds_per_iteration"] * samples / timing["samples_per_iteration"]
            precision = "bfloat16" if timing["amp"] else "float32"
            result["flops"].append({
                "name": f"SAM2LoRA hippocampus, {path} {size}², {samples} slices ({precision})",
                "gflop": flops / 1e9, "seconds": seconds, "gflops": flops / 1e9 / seconds,
            })  # fmt: skip


def _measure_segmentation(result: dict, hippocampus: Path) -> None:
    """Seconds to segment the first test volume on each segmentation path."""
    import nibabel

    volume = sorted(json.loads((hippocampus / "datalist.json").read_text())["testing"], key=str)[0]
    volume_path = (hippocampus / volume["image"]).resolve()
    result["segment"] = {"volume": volume_path.name, "shape": "×".join(map(str, nibabel.load(volume_path).shape))}
    for key, overrides in SEGMENT_PATHS.items():
        with released_memory_layout(key == "today"):
            result["segment"][key] = segment_volume_seconds(volume_path, overrides)
        logger.info("segment %s: %s", key, result["segment"][key])


def _accuracy_only(result: dict, earlier: dict, hippocampus: Path, settings: argparse.Namespace) -> int:
    """Keep every measurement of the run continued from, as it was reported, and add the float32/bfloat16 pair
    measured now (with its own date, hardware and command)."""
    report = {k: v for k, v in earlier.items() if k != "accuracy"}
    if earlier.get("accuracy"):  # kept, not lost: the report lists it under the new pair
        report["earlier_accuracy"] = [earlier["accuracy"], *earlier.get("earlier_accuracy", [])]
    report["accuracy"] = _accuracy_pair(
        hippocampus, settings.accuracy_method, settings.accuracy_iterations, settings.accuracy_input_size,
        settings.accuracy_val_cases, settings.accuracy_val_every, settings.accuracy_seed,
        settings.accuracy_control_threads,
    )
    report["accuracy"].update(date=result["date"], hardware=result["hardware"], command=result["command"])
    print(write_report(report, Path(settings.output)))
    return 0


def _flush(result: dict, settings: argparse.Namespace) -> None:
    """Partial results on disk after every row: a long run that is stopped keeps what it measured."""
    path = Path(settings.output).with_suffix(".partial.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
