"""Efficiency of the four methods side by side: parameters, adapter file size, training-step cost against full
fine-tuning, inference latency unmerged and merged against the frozen base model, on the same machine in one run.

    python -m common.benchmark --backbones sam_vit_b sam2.1_hiera_t litemedsam --input_size 256 --batch_size 2 \
        --output_dir docs/benchmarks/cpu

Each network is the bundle's own (``network_def`` of its ``train.json``, default hyperparameters) built on the
asked backbone with random weights at the asked input size, each in a fresh process. Peak memory of a training step
is the peak of what the step allocates above the weights and optimiser state that exist before it (activations,
gradients, temporaries): on CUDA from ``torch.cuda.max_memory_allocated``, on CPU by counting tensor storages
(:class:`common.benchmark.live_memory.LiveTensorMemory`). A training step is forward, BCE-with-logits
loss against random masks, backward and an AdamW step over the trainable parameters; full fine-tuning is the
prompt-free SAM network of the same backbone with every parameter trainable; the frozen base is that network in
eval mode. Times are medians of ``--repeats`` after one warm-up. FLOPs of a training step come from
``torch.utils.flop_counter``; model-FLOPs utilisation is reported on GPUs with a known peak.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

from common.cli import bundles_folder, config_override

__all__ = ["METHODS", "PAPER_CLAIMS", "main", "measure"]

#: method name → bundle folder
METHODS = {
    "sam2lora": "sam2lora_fundus_segmentation",
    "conv_lora": "conv_lora_sam_segmentation",
    "s_sam": "s_sam_text_prompted_segmentation",
    "balr_sam": "balr_sam_segmentation",
}
#: the overlay with each paper's network setting, read after ``train.json`` (whose defaults are the shipped
#: hippocampus adapters' for BALR-SAM, S-SAM and Conv-LoRA): the paper's backbone and schedule, or its recipe for
#: 2D pictures (the sigmoid heads BALR-SAM and Conv-LoRA use there)
PAPER_SETTING = {
    "sam2lora": "paper.json",
    "conv_lora": "pictures_2d.json",
    "s_sam": "paper.json",
    "balr_sam": "pictures_2d.json",
}
#: what each paper claims, printed beside our numbers
PAPER_CLAIMS = {
    "sam2lora": "< 5 % trainable; −80 % training overhead",
    "conv_lora": "≈ +4.7 % parameters over LoRA",
    "s_sam": "0.4 % trainable",
    "balr_sam": "1.8 % trainable; −75 % decoder memory",
}
#: dense bf16 peak TFLOP/s per GPU model, for model-FLOPs utilisation
GPU_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    from common.engines.precision import cpu_info

    return cpu_info().get("model name") or platform.processor() or platform.machine()


def build(
    kind: str, backbone: str, input_size: int | None, overrides: dict | None = None, bundles: str | None = None
) -> torch.nn.Module:
    """``base`` / ``full``: the prompt-free SAM network; a method name: its bundle's network, random weights, with
    ``overrides`` of its ``train.json`` values (e.g. a precomputed text encoder for S-SAM)."""
    from monai.bundle import ConfigParser

    from common.backbones import get_backbone_spec
    from common.networks import SamSegmentationNet

    size = input_size if get_backbone_spec(backbone).resizable else None
    if kind in ("base", "full"):
        network = SamSegmentationNet(backbone, checkpoint=None, input_size=size)
        for param in network.parameters():
            param.requires_grad_(kind == "full")
        return network
    bundle = bundles_folder(bundles) / METHODS[kind]
    configs = bundle / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "train.json"), str(configs / PAPER_SETTING[kind])])
    parser.update({"backbone": backbone, "backbone_checkpoint": None, "bundle_root": str(bundle)})
    parser.update(overrides or {})
    parser["network_def"]["input_size"] = size if size is not None else get_backbone_spec(backbone).input_size
    return parser.get_parsed_content("network_def")


def _median_seconds(function, repeats: int, device: torch.device) -> float:
    function()  # warm-up (allocator, lazy initialisation)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(
    kind: str,
    backbone: str,
    input_size: int,
    batch_size: int,
    repeats: int,
    device: str,
    overrides: dict | None = None,
    bundles: str | None = None,
) -> dict:
    """One row's numbers for ``kind`` (``base``, ``full`` or a method) — call in a fresh process (peak memory)."""
    from torch.utils.flop_counter import FlopCounterMode

    from common.adapters import (
        adapter_layers,
        merge_adapters,
        parameter_report,
        save_adapter_checkpoint,
        unmerge_adapters,
    )

    from .live_memory import LiveTensorMemory

    torch.manual_seed(0)
    device_t = torch.device(device)
    dtype = torch.bfloat16 if device_t.type == "cuda" else torch.float32
    network = build(kind, backbone, input_size, overrides, bundles).to(device_t)
    size = network.input_size
    image = torch.rand(batch_size, 3, size, size, device=device_t)
    result: dict = {"kind": kind, "backbone": backbone, "input_size": size, "batch_size": batch_size}
    report = parameter_report(network)
    result.update(total_parameters=report.total, trainable_parameters=report.trainable)

    def forward():
        with torch.autocast(device_t.type, dtype=dtype, enabled=device_t.type == "cuda"):
            return network(image)

    # inference first, in every process alike: the allocator's state after training steps changes CPU timings
    network.eval()
    with torch.no_grad():
        result["inference_seconds"] = _median_seconds(forward, repeats, device_t)
        if kind not in ("base", "full"):
            merged = merge_adapters(network, strict=False)
            total = sum(1 for _ in adapter_layers(network))
            result["merged_layers"], result["unmergeable_layers"] = merged, total - merged
            result["merged_inference_seconds"] = _median_seconds(forward, repeats, device_t)
            unmerge_adapters(network)  # training goes on with the adapters as modules
    if kind == "base":
        return result
    if kind != "full":
        with tempfile.TemporaryDirectory() as folder:
            result["adapter_file_bytes"] = save_adapter_checkpoint(network, Path(folder) / "model.pt").stat().st_size
    network.train()
    with torch.no_grad():
        target = (torch.rand_like(forward().float()) > 0.5).float()
    optimizer = torch.optim.AdamW([p for p in network.parameters() if p.requires_grad], lr=1e-5)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(forward().float(), target)
        loss.backward()
        optimizer.step()

    step()  # optimiser state exists from here on, as in training
    if device_t.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        result["train_step_peak_bytes"] = torch.cuda.max_memory_allocated() - before
    else:
        with LiveTensorMemory() as memory:
            step()
        result["train_step_peak_bytes"] = memory.peak_bytes
    result["train_step_seconds"] = _median_seconds(step, repeats, device_t)
    with FlopCounterMode(display=False) as counter:
        step()
    result["train_step_flops"] = counter.get_total_flops()
    return result


def run_worker(job: dict, module: str = "common.benchmark.efficiency") -> dict:
    """``python -m <module> --worker <job>`` in a fresh Python process (one measurement free of the previous ones'
    allocations and threads); its last stdout line is the JSON result."""
    command = [sys.executable, "-m", module, "--worker", json.dumps(job)]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"benchmark worker {job} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _ratio(value: float | None, reference: float | None) -> str:
    return "–" if not value or not reference else f"{value / reference:.2f}×"


def _megabytes(value: float | None) -> str:
    return "–" if value is None else f"{value / 2**20:.1f}"


def table_rows(rows: list[dict], peak_tflops: float | None) -> tuple[list[str], list[list[str]]]:
    """Markdown header and rows: each method against ``full`` (training) and ``base`` (inference) of its backbone."""
    header = [
        "backbone", "method", "parameters", "trainable (share)", "adapter file MB", "train step s (vs full FT)",
        "train step peak MB (vs full FT)", "TFLOP/s", "inference s unmerged (vs base)", "merged (vs base)",
        "unmergeable layers", "paper claim",
    ]  # fmt: skip
    if peak_tflops:
        header.insert(8, "MFU")
    out = []
    for backbone in dict.fromkeys(r["backbone"] for r in rows):
        own = {r["kind"]: r for r in rows if r["backbone"] == backbone}
        full, base = own.get("full", {}), own.get("base", {})
        for kind in ["full", *METHODS]:
            row = own.get(kind)
            if row is None:
                continue
            tflops = row["train_step_flops"] / row["train_step_seconds"] / 1e12
            cells = [
                f"{backbone} ({row['input_size']}², batch {row['batch_size']})",
                "full fine-tuning" if kind == "full" else kind,
                f"{row['total_parameters']:,}",
                f"{row['trainable_parameters']:,} "
                f"({100 * row['trainable_parameters'] / row['total_parameters']:.2f} %)",
                _megabytes(row.get("adapter_file_bytes")),
                f"{row['train_step_seconds']:.3f} "
                f"({_ratio(row['train_step_seconds'], full.get('train_step_seconds'))})",
                f"{_megabytes(row['train_step_peak_bytes'])} "
                f"({_ratio(row['train_step_peak_bytes'], full.get('train_step_peak_bytes'))})",
                f"{tflops:.3f}",
                f"{row['inference_seconds']:.3f} ({_ratio(row['inference_seconds'], base.get('inference_seconds'))})",
                "–" if kind == "full" else _ratio(row["merged_inference_seconds"], base.get("inference_seconds")),
                "–" if kind == "full" else str(row["unmergeable_layers"]),
                PAPER_CLAIMS.get(kind, ""),
            ]
            if peak_tflops:
                cells.insert(8, f"{100 * tflops / peak_tflops:.1f} %")
            out.append(cells)
    return header, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.benchmark", description=__doc__.split("\n")[0])
    parser.add_argument("--backbones", nargs="+", default=["sam_vit_b", "sam2.1_hiera_t", "litemedsam"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--input_size", type=int, default=256, help="input size of resizable backbones")
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="timed repetitions after one warm-up")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads in the workers")
    parser.add_argument("--output_dir", help="where efficiency.md and efficiency.json go (required)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        type=config_override,
        metavar="ID=VALUE",
        help="a train.json value for every method's network, e.g. text_encoder=precomputed",
    )
    parser.add_argument(
        "--bundles",
        default=None,
        help="folder holding the bundles (default: $MONAI_SAM_PEFT_BUNDLES, else bundles/ in the working folder)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        job = json.loads(args.worker)
        threads = job.pop("threads", None)
        if threads:
            torch.set_num_threads(threads)
        print(json.dumps(measure(**job)))
        return 0
    if not args.output_dir:
        parser.error("--output_dir is required")
    overrides = dict(args.set)
    try:
        bundles = str(bundles_folder(args.bundles).resolve())
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    started = time.time()
    rows = []
    for backbone in args.backbones:
        for kind in ["base", "full", *args.methods]:
            job = dict(kind=kind, backbone=backbone, input_size=args.input_size, batch_size=args.batch_size,
                       repeats=args.repeats, device=args.device, bundles=bundles)  # fmt: skip
            if args.threads:
                job["threads"] = args.threads
            if overrides:
                job["overrides"] = overrides
            rows.append(run_worker(job))
            print(f"{backbone:>16} {kind:>10}: done ({time.time() - started:.0f} s)", flush=True)
    gpu = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None
    peak = next((v for k, v in GPU_PEAK_TFLOPS.items() if gpu and k in gpu), None)
    header, body = table_rows(rows, peak)
    hardware = gpu or f"{cpu_model()}, {os.cpu_count()} cores"
    command = "python -m common.benchmark " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        f"Efficiency benchmark, {date.today().isoformat()}, {hardware}, torch {torch.__version__}, "
        f"{'bf16 autocast' if gpu else 'float32'}; {time.time() - started:.0f} s.",
        "",
        f"`{command}`",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(cells) + " |" for cells in body),
    ]
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "efficiency.md").write_text("\n".join(lines) + "\n")
    settings = {**vars(args), "hardware": hardware, "torch": torch.__version__, "seconds": time.time() - started}
    settings.pop("worker")
    (output / "efficiency.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=2) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
