"""Segment a scan or a folder of scans with a bundle and its trained weights: one command for clinical use.

    python -m common.segment --bundle bundles/conv_lora_sam_segmentation --input scans/ --output results/

A thin layer over the bundle's ``configs/inference.json`` (the same preprocessing, inferer and postprocessing that
``python -m monai.bundle run`` and MONAI Label use). Per input it writes ``<name>_seg.nii.gz`` (``.png`` for 2D
images) with the input's exact geometry, ``<name>_montage.png``, ``<name>_volumes.json`` and, on request,
``<name>_prob.nii.gz``. Each case is written to a staging folder and moved into ``--output`` only when complete, so
a bad input leaves nothing behind: it gets one error line, the other cases go on, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from common.cli import config_override

__all__ = ["SegmentationError", "SegmentationStopped", "load_bundle_for_inference", "main", "segment_scans"]

logger = logging.getLogger("common.segment")


class SegmentationError(RuntimeError):
    """A problem with the bundle, its weights or the settings that stops the whole run (the message says which)."""


class SegmentationStopped(RuntimeError):
    """The run was interrupted (Ctrl-C, SIGTERM): the scans finished before are in the output folder, the one in
    progress left nothing. ``exit_status`` is the shell's for the signal (130 for Ctrl-C)."""

    def __init__(self, message: str, exit_status: int) -> None:
        super().__init__(message)
        self.exit_status = exit_status


def load_bundle_for_inference(
    bundle: str | Path,
    weights: str | Path | None = None,
    configs: Sequence[str] = (),
    overrides: dict | None = None,
):
    """Parse ``inference.json`` (plus ``configs``, later files win) of ``bundle`` and load the adapter weights.

    Args:
        bundle: the bundle folder.
        weights: adapter-only checkpoint (default ``<bundle>/models/model.pt``).
        configs: extra config files of the bundle's ``configs/`` folder (e.g. ``multiclass_inference.json``).
        overrides: config ids → values (``{"backbone": "sam_vit_test", "intensity": "ct:abdomen"}``).

    Returns:
        the ``monai.bundle.ConfigParser`` and the network (eval mode, on the config's device, weights loaded).

    Raises:
        SegmentationError: no such bundle or config file, missing weights, or weights that do not fit the network.
    """
    from monai.bundle import ConfigParser

    from common.adapters import load_adapter_state_dict
    from common.backbones.checkpoint import CheckpointError, read_checkpoint
    from common.backbones.official_checkpoints import PAPER_LARGE_FILES
    from common.cli import unknown_config_id
    from common.engines import untrained_settings

    bundle = Path(bundle)
    files = [bundle / "configs" / "inference.json", *(bundle / "configs" / name for name in configs)]
    for file in files:
        if not file.is_file():
            raise SegmentationError(f"{file}: no such bundle config (is --bundle the bundle's folder?)")
    weights = Path(weights) if weights is not None else bundle / "models" / "model.pt"
    if not weights.is_file():
        raise SegmentationError(
            f"{weights}: no trained weights. Train the bundle first (its train.json writes models/model.pt) or pass "
            "--weights with an adapter checkpoint trained for this bundle."
        )
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    for config_id in overrides or {}:
        problem = unknown_config_id(parser, config_id)
        if problem:  # a misspelt --set would otherwise add a key nothing reads, and the run go on without it
            raise SegmentationError(problem)
    parser.update({"bundle_root": str(bundle), **(overrides or {})})
    settings = {key: _parsed(parser, key) for key in ("backbone", "input_size", "intensity") if key in parser}
    problem = untrained_settings(bundle, weights, settings)
    allowed = "allow_untrained_settings" in parser and bool(_parsed(parser, "allow_untrained_settings"))
    if problem and not allowed:
        raise SegmentationError(problem)
    if problem:
        logger.warning("%s (allowed)", problem)
    try:
        network = parser.get_parsed_content("network")
    except Exception as error:
        cause = _cause(error, (CheckpointError,))
        if cause is None:  # a setting the network refuses (e.g. --set lora_rank=abc): its own message, one line
            raise SegmentationError(
                f"the bundle's network cannot be built with these settings: {_root_cause(error)}"
            ) from error
        raise SegmentationError(
            f"the bundle's network cannot be built: {cause}. The paper backbone's base weights: python -m "
            f"common.backbones --download {bundle} ({PAPER_LARGE_FILES}; other official backbones: "
            "common/backbones/official_checkpoints.py); --backbone picks another backbone"
        ) from error
    try:
        load_adapter_state_dict(getattr(network, "module", network), read_checkpoint(weights))
    except CheckpointError as error:
        raise SegmentationError(f"{weights}: {error}") from error
    return parser, network.eval()


def _parsed(parser, key: str):
    """``parser``'s ``key`` built, or one line saying which setting it refuses (``--set whole_brain=maybe``)."""
    try:
        return parser.get_parsed_content(key)
    except Exception as error:  # MONAI wraps the component's own ValueError in "Failed to instantiate ..."
        cause = _root_cause(error)
        raise SegmentationError(f"the bundle's {key} cannot be built with these settings: {cause}") from error


def _root_cause(error: BaseException) -> BaseException:
    """The innermost error of the chain MONAI's wrappers put around a component's own one."""
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def _cause(error: BaseException, wanted: tuple[type[BaseException], ...]) -> BaseException | None:
    """The first error of a ``wanted`` type in the chain that MONAI's wrappers ("applying transform ...", "Failed to
    instantiate component ...") put around it, or None."""
    while error is not None and not isinstance(error, wanted):
        error = error.__cause__
    return error


def _run_case(network, preprocessing, postprocessing, inferer, device: torch.device, scan: str) -> None:
    data = preprocessing({"image": scan})
    # precision: the inferer's amp (inference.json), which autocasts on CUDA and on CPUs with native bfloat16
    with torch.no_grad():
        prediction = inferer(data["image"][None].to(device), network)
    data["pred"] = prediction[0].float().cpu()
    postprocessing(data)


def segment_scans(
    bundle: str | Path,
    input_path: str | Path,
    output_dir: str | Path,
    weights: str | Path | None = None,
    configs: Sequence[str] = (),
    overrides: dict | None = None,
    progress: bool = True,
) -> dict[str, str]:
    """Segment every scan of ``input_path`` (see :func:`common.data.list_scans`) into ``output_dir``.

    Returns:
        ``{input: "ok" or the error message}`` per scan. Outputs of a failed scan are removed.

    Raises:
        SegmentationError: see :func:`load_bundle_for_inference`; ``input_path`` missing or without scans.
        SegmentationStopped: Ctrl-C or SIGTERM; the scans finished before stay in ``output_dir``.
    """
    from common.data import ScanInputError, list_scans

    try:
        scans = [item["image"] for item in list_scans(input_path)]
    except ScanInputError as error:
        raise SegmentationError(str(error)) from error
    output_dir = Path(output_dir)
    created = [d for d in (output_dir, *output_dir.parents) if not d.exists()]  # removed again if nothing is written
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=output_dir))
    results: dict[str, str] = {}
    try:
        parser, network = load_bundle_for_inference(
            bundle, weights, configs, {**(overrides or {}), "output_dir": str(staging), "progress": progress}
        )
        device = torch.device(parser.get_parsed_content("device"))
        preprocessing, postprocessing, inferer = (
            _parsed(parser, key) for key in ("preprocessing", "postprocessing", "inferer")
        )
        cases = scans
        if progress:
            from tqdm.auto import tqdm

            cases = tqdm(scans, desc="scans", unit="scan")
        for scan in cases:
            try:
                _run_case(network, preprocessing, postprocessing, inferer, device, scan)
            except Exception as error:  # one case's failure must not lose the others' results
                logger.debug("segmenting %s failed", scan, exc_info=True)
                cause = _cause(error, (ScanInputError,))
                results[scan] = str(cause) if cause is not None else f"{scan}: {error!r}"
            else:
                for produced in staging.iterdir():
                    shutil.move(str(produced), output_dir / produced.name)
                results[scan] = "ok"
            for leftover in staging.iterdir():  # a failed case's partial files
                leftover.unlink()
    except (KeyboardInterrupt, SystemExit) as stop:  # Ctrl-C, or SIGTERM through _terminate
        status = 130 if isinstance(stop, KeyboardInterrupt) else (stop.code if isinstance(stop.code, int) else 1)
        done = sum(message == "ok" for message in results.values())
        raise SegmentationStopped(
            f"{done} of {len(scans)} scan(s) segmented into {output_dir} before the interruption; the scan in "
            "progress left nothing", status,
        ) from None  # fmt: skip
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in created:  # innermost first: a run that wrote nothing leaves no folder behind
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    return results


def _terminate(signum: int, _frame) -> None:
    raise SystemExit(128 + signum)


def _option_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the options themselves (unknown backbone, malformed intensity, a device this machine does
    not have, an output path that cannot be a folder), as one line; None when nothing is."""
    from common.backbones import BACKBONES
    from common.data.intensity import parse_intensity

    if args.backbone is not None and args.backbone not in BACKBONES:
        return f"--backbone {args.backbone!r}: unknown; one of {', '.join(BACKBONES)}"
    if args.intensity is not None:
        try:
            parse_intensity(args.intensity)
        except ValueError as error:
            return f"--intensity: {error}"
    if args.device is not None:
        try:
            device = torch.device(args.device)
        except (RuntimeError, ValueError) as error:
            return f"--device {args.device!r}: {error}"
        if device.type == "cuda" and not torch.cuda.is_available():
            return f"--device {args.device}: this machine has no CUDA device (leave --device out to use the CPU)"
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        return f"--output {output}: is a file, not a folder"
    existing = next((p for p in (output, *output.parents) if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        return f"--output {output}: {existing} is not writable"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m common.segment",
        description="Segment 2D images and 3D scans (NIfTI, NRRD, MetaImage, DICOM series folders) with a bundle.",
    )
    parser.add_argument("--bundle", required=True, help="the bundle folder, e.g. bundles/conv_lora_sam_segmentation")
    parser.add_argument("--input", required=True, help="a scan file, a DICOM series folder, or a folder of scans")
    parser.add_argument("--output", required=True, help="folder for the results")
    parser.add_argument("--weights", help="adapter checkpoint (default: <bundle>/models/model.pt)")
    parser.add_argument(
        "--config", action="append", default=[], help="extra config of the bundle's configs/ (repeatable)"
    )
    parser.add_argument("--backbone", help="backbone the weights were trained on (default: the bundle's)")
    parser.add_argument("--intensity", help="volumes: 'mr', 'mr:1,99', 'ct:<preset>' or 'ct:<min>,<max>'")
    # Options are spelled with underscores, like `monai.bundle`'s and the benchmarks'; the dashed spellings of
    # earlier releases stay accepted so that users' scripts keep working.
    parser.add_argument(
        "--slice_axis", "--slice-axis", type=int, choices=(0, 1, 2), help="slicing axis of RAS volumes (2 = axial)"
    )
    parser.add_argument("--batch_size", "--batch-size", type=int, help="slices per forward pass")
    parser.add_argument(
        "--context_slices", "--context-slices", type=int, help="2.5D: neighbours on each side as channels"
    )
    parser.add_argument(
        "--window_size",
        "--window-size",
        type=int,
        help="segment pictures/slices larger than this at native resolution in windows of this size (for weights "
        "trained with native_patches.json: the backbone's input size)",
    )
    parser.add_argument(
        "--largest_component",
        "--largest-component",
        action="store_true",
        help="keep the largest component per class",
    )
    parser.add_argument("--probabilities", action="store_true", help="also write <name>_prob.nii.gz")
    parser.add_argument("--device", help="torch device (default: cuda:0 when available)")
    parser.add_argument(
        "--set", action="append", default=[], type=config_override, metavar="ID=VALUE", help="any config override"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    problem = _option_problem(args)
    if problem:
        parser.error(problem)  # one line and exit status 2, before anything is loaded or written

    overrides = {}
    for key, value in (
        ("backbone", args.backbone),
        ("intensity", args.intensity),
        ("slice_axis", args.slice_axis),
        ("slice_batch_size", args.batch_size),
        ("context_slices", args.context_slices),
        ("window_size", args.window_size),
        ("device", None if args.device is None else f"$torch.device('{args.device}')"),
    ):
        if value is not None:
            overrides[key] = value
    if args.largest_component:
        overrides["keep_largest_component"] = True
    if args.probabilities:
        overrides["save_probabilities"] = True
    overrides.update(dict(args.set))

    # SIGTERM (a scheduler, `kill`) ends the run through Python's exception path, so the staging folder of the
    # case in progress is removed as on an error, instead of staying behind as a hidden .partial-* folder
    previous_handler = signal.signal(signal.SIGTERM, _terminate)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # which path a scan takes (a crop, or a whole brain located by registration, and how well it fitted) is the
    # user's business: one or two lines per scan
    logging.getLogger("common.data.template_regions").setLevel(logging.INFO)
    # MONAI's notices about Orientationd defaults and 2D inputs are not the user's business here
    warnings.filterwarnings("ignore", message=r"(?s).*(Orientationd.__init__:labels|axcodes \()")
    try:
        results = segment_scans(
            args.bundle, args.input, args.output, args.weights, args.config, overrides, progress=not args.quiet
        )
    except (SegmentationError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except SegmentationStopped as stop:
        print(f"stopped: {stop}", file=sys.stderr)
        return stop.exit_status
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    failed = {scan: message for scan, message in results.items() if message != "ok"}
    for message in failed.values():
        print(f"error: {message}", file=sys.stderr)
    print(f"{len(results) - len(failed)} of {len(results)} scan(s) segmented into {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
