"""Accuracy runs: train a method bundle (or a MONAI UNet baseline) on a real dataset under a budget, then evaluate
it on the held-out test cases, the same way for every method.

    python -m common.benchmark.accuracy --dataset chase_db1 --backbone litemedsam --iterations 2000 \\
        --methods sam2lora balr_sam s_sam conv_lora unet --output_dir results/chase_db1

Per method the run folder holds ``metrics.json`` (per case and mean, budget, wall time, hardware, command),
``learning_curve.png``, TensorBoard logs (``logs/``), ``overlays/`` (predictions filled, ground truth outlined),
``predictions/`` (label maps, probabilities, montages) and the trained adapter (``bundle/models/model.pt``); the
output folder gets ``summary.md`` / ``summary.json`` over the methods.

Training is the bundle's own ``train.json`` (with the dataset's overlay configs, as a user would run it) with the
budget, backbone and folders overridden; the best validation checkpoint is evaluated through the bundle's own
``inference.json`` (whole pictures / whole slices, labels written in the input's geometry), and the metrics are
computed from the written files by one function for all methods: Dice, AUC, sensitivity and specificity inside
the field of view for CHASE_DB1 vessels; per-class 3D Dice and HD95 (mm) for the hippocampus. ``--cross_camera
hrf_av`` also segments another camera's test pictures with each run's weights through ``common.segment`` and
scores them the same way (the robustness table of ``summary.md``). The baseline is a
MONAI ``UNet`` trained from scratch through SAM2LoRA's configs (same transforms, input size, loss without the IoU
term, budget), wrapped in :class:`common.networks.ResizedInputNet` so that inference feeds it like the SAM networks.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from common.backbones import BACKBONES
from common.metrics import vessel_metrics, volume_metrics
from common.benchmark.cross_camera import CAMERAS
from common.benchmark.pictures import save_learning_curve, truth_overlay
from common.cli import bundles_folder, config_override
from common.cli import data_root as find_data_root

if TYPE_CHECKING:
    from monai.bundle import ConfigParser

__all__ = ["BASELINE_TRAINING", "DATASETS", "METHODS", "dataset_configs", "run_accuracy", "main"]

logger = logging.getLogger("common.benchmark.accuracy")


HIPPOCAMPUS_LABELS = {"1": "anterior hippocampus", "2": "posterior hippocampus"}
VESSEL_LABELS = {"1": "retinal vessel"}
#: CHASE_DB1's field of view is 919 pixels across (the SAM2LoRA bundle's ``fov_diameter``); the pooled set is
#: trained at the same scale
CHASE_DB1_FOV_DIAMETER = 919


@dataclass(frozen=True)
class DatasetSpec:
    """A benchmark dataset: its folder under the data root, its kind (``vessel2d`` or ``volume``) and labels;
    ``native_resolution``: pictures larger than the backbone input are trained on native-resolution crops (every
    bundle's ``native_patches.json``) and segmented in native-resolution windows (``window_size``); ``pooled``:
    fundus layouts (:data:`common.datasets.fundus.FUNDUS_DATASETS`, each in the folder of its name) whose published
    splits are pooled, the test metrics also reported per layout; ``fov_diameter``: the field-of-view diameter
    (pixels) of the training pictures, to which ``--cross_camera`` resamples another camera's pictures."""

    folder: str
    kind: str
    label_names: dict
    image_channels: int
    description: str
    native_resolution: bool = False
    pooled: tuple[str, ...] = ()
    fov_diameter: float | None = None

    @property
    def folders(self) -> tuple[str, ...]:
        """The folders under the data root this dataset reads: ``pooled`` fundus layouts, or its one ``folder``."""
        return self.pooled or (self.folder,)


DATASETS = {
    "chase_db1": DatasetSpec(
        "chase_db1",
        "vessel2d",
        VESSEL_LABELS,
        3,
        "CHASE_DB1 vessels: children 1-10 (images 1-20) train with 2 of them held out for validation, children 11-14 "
        "(images 21-28) test; first observer; metrics inside the field of view",
        native_resolution=True,
        fov_diameter=CHASE_DB1_FOV_DIAMETER,
    ),
    "chase_db1_hrf_av": DatasetSpec(
        "chase_db1",
        "vessel2d",
        VESSEL_LABELS,
        3,
        "CHASE_DB1 (Nidek, 30° field) and HRF (Canon, 45° field) vessels pooled: CHASE_DB1 as in chase_db1, HRF's "
        "published 24 / 21 split with 2 of its 24 training pictures held out for validation (seeded); metrics inside "
        "the field of view, also per camera",
        native_resolution=True,
        pooled=("chase_db1", "hrf_av"),
        fov_diameter=CHASE_DB1_FOV_DIAMETER,
    ),
    "msd_hippocampus": DatasetSpec(
        "msd_hippocampus",
        "volume",
        HIPPOCAMPUS_LABELS,
        1,
        "MSD Task04 hippocampus: 260 labelled volumes (hippocampus_118 has no label and is left out), "
        "split by case with a seeded shuffle (seed 0): 20% test, 10% validation, 70% training; "
        "3D Dice and HD95 (mm) per structure",
    ),
}


@dataclass(frozen=True)
class MethodSpec:
    """One method of the comparison: its bundle (whose ``metadata.json`` declares, under ``dataset_configs``, the
    config files that train and serve each dataset) and whether it is the from-scratch baseline, which runs through
    that bundle's configs with MONAI's ``UNet`` as its network."""

    bundle: str
    baseline: bool = False


METHODS = {
    "sam2lora": MethodSpec("sam2lora_fundus_segmentation"),
    "balr_sam": MethodSpec("balr_sam_segmentation"),
    "s_sam": MethodSpec("s_sam_text_prompted_segmentation"),
    "conv_lora": MethodSpec("conv_lora_sam_segmentation"),
    "unet": MethodSpec("sam2lora_fundus_segmentation", baseline=True),
}


def declared_configs(bundle_dir: Path, dataset: str) -> tuple[list[str], list[str]]:
    """The training and the inference config files (in ``configs/``, in the order they are read) that the bundle in
    ``bundle_dir`` declares for ``dataset`` in its ``metadata.json`` (``dataset_configs``)."""
    declared = json.loads((bundle_dir / "configs" / "metadata.json").read_text())
    entry = declared.get("dataset_configs", {}).get(dataset)
    if entry is None:
        raise ValueError(f"{bundle_dir.name}/configs/metadata.json declares no dataset_configs for {dataset!r}")
    return list(entry["train"]), list(entry["inference"])


def dataset_configs(method: str, dataset: str, bundles: str | Path | None = None) -> tuple[list[str], list[str]]:
    """:func:`declared_configs` of ``method``'s bundle in the bundles folder (``bundles``, else
    :func:`common.cli.bundles_folder`'s default)."""
    return declared_configs(bundles_folder(bundles) / METHODS[method].bundle, dataset)


#: inference overrides of every method's test passes: one pass per slice, without the test-time mirroring a bundle may
#: ship (``test_time_mirror_axes``), so that the table compares training methods; ``--set`` can still ask for it
ONE_PASS = {"test_time_mirror_axes": []}

#: training overrides of the from-scratch baseline: no IoU head to train, and its own learning rate
BASELINE_TRAINING = {"loss#iou_weight": 0.0, "loss#iou_source": None, "learning_rate": 1e-3}


def baseline_network(image_channels: int) -> dict:
    """Config of the from-scratch baseline: MONAI's ``UNet`` (5 levels, 2 residual units) at the bundle's
    ``input_size`` (the backbone's unless set, as for the SAM methods), one output per label group as SAM2LoRA's
    head."""
    return {
        "_target_": "common.networks.ResizedInputNet",
        "input_size": "@input_size",
        "output_rule": "$common.data.sigmoid_rule(@label_groups)",
        "network": {
            "_target_": "monai.networks.nets.UNet",
            "spatial_dims": 2,
            "in_channels": image_channels,
            "out_channels": "$len(@label_groups)",
            "channels": [32, 64, 128, 256, 512],
            "strides": [2, 2, 2, 2],
            "num_res_units": 2,
        },
    }


def dataset_source(name: str, data_root: Path) -> Path:
    """The dataset's (first) folder under ``data_root``; FileNotFoundError (one line, naming ``--data_root``) if it
    or another folder the dataset pools is absent."""
    for folder in DATASETS[name].folders:
        if not (data_root / folder).is_dir():
            raise FileNotFoundError(
                f"dataset {name!r} not found at {data_root / folder}: give --data_root (the folder holding {folder}/)"
            )
    return data_root / DATASETS[name].folders[0]


def prepare_dataset(name: str, data_root: Path, output_dir: Path) -> Path:
    """Write the dataset's ``datalist.json`` (and CHASE_DB1's label / FOV PNGs) under ``output_dir``; returns the
    folder (the bundles' ``dataset_dir``). Already prepared folders are reused."""
    spec = DATASETS[name]
    source = dataset_source(name, data_root)
    target = output_dir / "data"
    if (target / "datalist.json").exists():
        return target
    if spec.kind == "vessel2d":
        from common.datasets.fundus import prepare_fundus_datalist

        prepare_fundus_datalist({folder: data_root / folder for folder in spec.folders}, target, task="vessel")
    else:
        from common.data.datalist import build_datalist, write_datalist

        datalist = build_datalist(
            source, "images", "labels", val_fraction=0.1, test_fraction=0.2, seed=0, labels=spec.label_names,
            relative_to=target, skip_unlabelled=True,
        )  # fmt: skip
        write_datalist(datalist, target)
    return target


SUBSET_SEED_STRIDE = 25
"""Seeds' draws start this many places apart in one shuffle, so that subsets of up to 25 cases of different seeds
share no case (independent shuffles per seed can start with the same case: NumPy's seeds 0 and 1 do for 182)."""


def labelled_subset(data_dir: Path, count: int, seed: int, output_dir: Path) -> Path:
    """A dataset folder whose training split is ``count`` cases drawn from ``data_dir``'s training split, validation
    and test unchanged; the paths are absolute, so the folder can sit anywhere. The draw: one shuffle of the training
    split (``numpy.random.default_rng(0)``), read from place ``SUBSET_SEED_STRIDE * seed`` on (wrapping round). It
    depends only on the training split, ``count`` and ``seed``: the same volumes for the same seed, the subsets of one
    seed nested (the first 5 contain the first 2), and those of different seeds disjoint up to 25 cases (seeds 0-6
    with 182 cases). Returns the folder (``output_dir/data_labelled<count>_seed<seed>``).

    Raises:
        ValueError: ``count`` is below 1 or above the number of training cases.
    """
    from common.data.datalist import write_datalist

    def absolute(case: dict) -> dict:  # every file a case names (image, label, field-of-view mask ...)
        return {
            k: str((data_dir / v).resolve()) if isinstance(v, str) and (data_dir / v).is_file() else v
            for k, v in case.items()
        }

    datalist = json.loads((data_dir / "datalist.json").read_text())
    splits = {
        name: [absolute(case) for case in datalist[name]]
        for name in ("training", "validation", "testing")
        if name in datalist
    }
    training = splits["training"]
    if not 1 <= count <= len(training):
        raise ValueError(f"--labelled_cases {count}: the training split has {len(training)} cases")
    order = np.roll(np.random.default_rng(0).permutation(len(training)), -SUBSET_SEED_STRIDE * seed)
    splits["training"] = [training[i] for i in order[:count]]
    target = output_dir / f"data_labelled{count}_seed{seed}"
    write_datalist({**{k: v for k, v in datalist.items() if k not in splits}, **splits}, target)
    return target


def _read_configs(bundle_dir: Path, files: list[str], overrides: dict):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(bundle_dir / "configs" / f) for f in files])
    parser.update(overrides)
    return parser


def _run_overrides(method: str, dataset: str, run_dir: Path, data_dir: Path, settings: argparse.Namespace) -> dict:
    """Config values that training and inference of one run share: folders, backbone, device, dataset labels and,
    for the baseline, its network."""
    spec = METHODS[method]
    overrides = {"bundle_root": str(run_dir / "bundle"), "dataset_dir": str(data_dir), "backbone": settings.backbone}
    if settings.device:
        overrides["device"] = f"$torch.device({settings.device!r})"
    overrides["label_names"] = DATASETS[dataset].label_names
    if spec.baseline:
        overrides["network_def"] = baseline_network(DATASETS[dataset].image_channels)
    overrides.update(settings.overrides)
    return overrides


def _native(dataset: str, settings: argparse.Namespace) -> bool:
    """Whether this run trains on native-resolution crops and segments in native windows."""
    return DATASETS[dataset].native_resolution and not settings.whole_pictures


def _input_overlay(bundle_dir: Path, dataset: str, settings: argparse.Namespace) -> list[str]:
    """The overlay that sets how large pictures reach the network: ``native_patches.json`` (native-resolution crops),
    or for ``--whole_pictures`` the bundle's ``whole_pictures.json`` where its default trains on crops (SAM2LoRA)."""
    if _native(dataset, settings):
        return ["native_patches.json"]
    whole = bundle_dir / "configs" / "whole_pictures.json"
    return [whole.name] if DATASETS[dataset].native_resolution and whole.is_file() else []


def training_parser(
    method: str, dataset: str, bundle_dir: Path, overrides: dict, settings: argparse.Namespace
) -> ConfigParser:
    """The training configs of ``method``'s bundle copy in ``bundle_dir`` for ``dataset``, as every benchmark reads
    them: the configs its ``metadata.json`` declares, the input overlay (:func:`_input_overlay`), ``overrides``,
    ``settings.num_workers`` where given, and for the baseline :data:`BASELINE_TRAINING`."""
    overrides = dict(overrides)
    if settings.num_workers is not None:
        overrides["num_workers"] = settings.num_workers
    if METHODS[method].baseline:
        overrides.update(BASELINE_TRAINING)
    return _read_configs(bundle_dir, training_configs(bundle_dir, dataset, settings), overrides)


def training_configs(bundle_dir: Path, dataset: str, settings: argparse.Namespace) -> list[str]:
    """The config files a benchmark trains with, in the order they are read: those the bundle declares for
    ``dataset`` (:func:`declared_configs`), then the input overlay (:func:`_input_overlay`)."""
    return [*declared_configs(bundle_dir, dataset)[0], *_input_overlay(bundle_dir, dataset, settings)]


def _budget(iterations: int, val_every: int) -> dict:
    epoch_length = max(1, min(val_every, iterations))
    return {"epoch_length": epoch_length, "max_epochs": math.ceil(iterations / epoch_length)}


def _training_overrides(
    method: str, dataset: str, run_dir: Path, data_dir: Path, settings: argparse.Namespace, budget: dict
) -> dict:
    """The overrides of one benchmark training run: its folders, data and backbone (:func:`_run_overrides`), the
    iteration budget as epochs of ``budget["epoch_length"]`` with a validation after each, ``--resume``,
    ``--batch_size`` and ``--max_val_cases``."""
    overrides = {
        **_run_overrides(method, dataset, run_dir, data_dir, settings),
        "output_dir": str(run_dir / "logs"),
        "max_epochs": budget["max_epochs"],
        "epoch_length": budget["epoch_length"],
        "train#trainer#epoch_length": budget["epoch_length"],
        "val_interval": 1,
        "resume": bool(settings.resume),
    }
    if settings.batch_size:
        overrides["batch_size"] = settings.batch_size
    if settings.max_val_cases:
        overrides["validate#dataset#data"] = (
            f"$common.data.load_datalist(@dataset_dir, 'validation')[:{settings.max_val_cases}]"
        )
    return overrides


class _LearningCurve:
    """A run's learning curve (the loss at every iteration, the metrics at every validation), written to
    ``curve_file`` after every epoch together with the training seconds so far, so that a resumed run (``resume``)
    continues the curve and the clock it finds there."""

    def __init__(self, curve_file: Path, trainer, evaluator, resume: bool) -> None:
        from ignite.engine import Events
        from monai.handlers import MetricLogger

        self.file = curve_file
        self.evaluator = evaluator
        self.earlier = json.loads(curve_file.read_text()) if resume and curve_file.exists() else {}
        self.logger = MetricLogger(evaluator=evaluator)
        self.logger.attach(trainer)
        trainer.add_event_handler(Events.STARTED, self._start_clock)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self.save)
        self.started = time.perf_counter()

    def _start_clock(self, _engine) -> None:
        self.started = time.perf_counter()

    @property
    def seconds(self) -> float:
        """Training seconds, the earlier runs' included."""
        return float(self.earlier.get("train_seconds", 0.0)) + time.perf_counter() - self.started

    def _points(self, key: str, points: list) -> list:
        if key in self.evaluator.state.metrics:
            return [(int(i), float(v)) for i, v in points]
        # MetricLogger records the trainer's own epoch metrics (train_mean_dice) at every iteration, the same value
        # until the next epoch's: keep the point where each new value appears
        return [(int(i), float(v)) for n, (i, v) in enumerate(points) if n == 0 or float(v) != float(points[n - 1][1])]

    def as_dict(self) -> dict:
        """``{"loss": [(iteration, value), ...], "metrics": {name: [(iteration, value), ...]}}``."""
        earlier_metrics = self.earlier.get("metrics", {})
        return {
            "loss": self.earlier.get("loss", []) + [(int(i), float(v)) for i, v in self.logger.loss],
            "metrics": {
                k: earlier_metrics.get(k, []) + self._points(k, points)
                for k, points in {**dict.fromkeys(earlier_metrics, []), **self.logger.metrics}.items()
            },
        }

    def save(self, _engine=None) -> None:
        self.file.write_text(json.dumps({**self.as_dict(), "train_seconds": round(self.seconds, 1)}) + "\n")


def _run_budgeted(trainer, evaluator, settings: argparse.Namespace, budget: dict, curve: _LearningCurve) -> None:
    """Run ``trainer`` until ``settings.iterations`` or ``settings.minutes``, whichever comes first, and validate
    the last weights where the budget stopped it between validations."""
    from ignite.engine import Events

    from common.engines import TimeBudget

    TimeBudget(settings.minutes).attach(trainer)
    if settings.iterations % budget["epoch_length"]:
        # the last epoch is partial: stop at exactly the asked number of iterations (only then: a terminated epoch
        # fires no EPOCH_COMPLETED, so it would end without its training state for --resume)
        trainer.add_event_handler(
            Events.ITERATION_COMPLETED(once=settings.iterations), lambda engine: engine.terminate()
        )
    trainer.run()
    validated = curve.as_dict()["metrics"].get(evaluator.state.key_metric_name, [])  # with earlier validations
    if not validated or validated[-1][0] != trainer.state.iteration:
        # a budget stopped the trainer before its epoch-end validation: validate the last weights too (the
        # best-model saver keeps them only if they are better)
        evaluator.run(trainer.state.epoch)


def train(method: str, dataset: str, run_dir: Path, data_dir: Path, settings: argparse.Namespace) -> dict:
    """Train ``method`` on ``dataset`` under the budget; returns what the run did (iterations, epochs, time, the
    learning curve). The best validation checkpoint ends in ``run_dir/bundle/models/model.pt``."""
    from common.adapters import save_adapter_checkpoint

    bundle_dir = run_dir / "bundle"
    budget = _budget(settings.iterations, settings.val_every or max(1, settings.iterations // 5))
    overrides = _training_overrides(method, dataset, run_dir, data_dir, settings, budget)
    parser = training_parser(method, dataset, bundle_dir, overrides, settings)
    parser.get_parsed_content("initialize")
    trainer = parser.get_parsed_content("train#trainer")
    evaluator = parser.get_parsed_content("validate#evaluator")
    network = parser.get_parsed_content("network")
    curve = _LearningCurve(run_dir / "learning_curve.json", trainer, evaluator, bool(settings.resume))
    _run_budgeted(trainer, evaluator, settings, budget, curve)
    seconds = curve.seconds
    checkpoint = bundle_dir / "models" / "model.pt"
    if not checkpoint.exists():
        logger.warning("no validation checkpoint was written (NaN metric?): evaluating the final weights")
        save_adapter_checkpoint(network, checkpoint)
    return {
        "configs": training_configs(bundle_dir, dataset, settings),
        "iterations": int(trainer.state.iteration),
        "epochs": int(trainer.state.epoch),
        "epoch_length": budget["epoch_length"],
        "stopped_by_time_budget": trainer.state.iteration < settings.iterations,
        "train_seconds": round(seconds, 1),
        "key_metric": evaluator.state.key_metric_name,
        "trainable_parameters": int(sum(p.numel() for p in network.parameters() if p.requires_grad)),
        "total_parameters": int(sum(p.numel() for p in network.parameters())),
        "resumed": bool(curve.earlier),
        "learning_curve": curve.as_dict(),
    }


def predict(method: str, dataset: str, run_dir: Path, data_dir: Path, settings: argparse.Namespace) -> float:
    """Segment the test cases with the bundle's ``inference.json`` and the trained weights (label maps and
    probabilities under ``run_dir/predictions``); returns the seconds it took."""
    bundle_dir = run_dir / "bundle"
    limit = f"[:{settings.max_test_cases}]" if settings.max_test_cases else ""
    overrides = {
        **ONE_PASS,
        **_run_overrides(method, dataset, run_dir, data_dir, settings),
        "datalist": f"$common.data.load_datalist(@dataset_dir, 'testing'){limit}",
        "output_dir": str(run_dir / "predictions"),
        "save_probabilities": True,
    }
    if settings.num_workers is not None:
        overrides["dataloader#num_workers"] = settings.num_workers
    if _native(dataset, settings):
        overrides["window_size"] = "$@network.input_size"  # the crop size native_patches.json trained on
    elif DATASETS[dataset].native_resolution:
        overrides["window_size"] = None  # whole pictures, resized by the network as in training
    parser = _read_configs(bundle_dir, declared_configs(bundle_dir, dataset)[1], overrides)
    started = time.perf_counter()
    parser.get_parsed_content("initialize")
    parser.get_parsed_content("evaluator").run()
    return time.perf_counter() - started


def cross_camera_test(
    method: str, dataset: str, run_dir: Path, data_dir: Path, settings: argparse.Namespace
) -> dict:
    """Segment the test pictures of another camera (``settings.cross_camera``) as a user would: through
    ``common.segment`` with the run's bundle copy, the dataset's inference configs and the trained weights, each
    picture's field of view resampled to the training pictures' diameter (:attr:`DatasetSpec.fov_diameter`, the
    same for every method) and its labels thresholded at the picture's own size; scored inside that camera's FOV
    masks (:func:`common.benchmark.cross_camera.score_bundle`). Returns ``{"dataset", "camera", "mean",
    "per_case"}``."""
    from common.benchmark.cross_camera import camera_cases, mean_of_cases, score_bundle
    from common.cli import unknown_config_id

    camera = settings.cross_camera
    bundle_dir = run_dir / "bundle"
    inference = declared_configs(bundle_dir, dataset)[1]
    wanted = {
        **ONE_PASS,
        **_run_overrides(method, dataset, run_dir, data_dir, settings),
        "fov_diameter": DATASETS[dataset].fov_diameter,
        "labels_at_input_size": True,
    }
    if _native(dataset, settings):
        wanted["window_size"] = "$@network.input_size"  # the crop size native_patches.json trained on
    declared = _read_configs(bundle_dir, inference, {})
    # --set values for training only (learning_rate, ...) are not inference settings: common.segment would refuse them
    overrides = {key: value for key, value in wanted.items() if unknown_config_id(declared, key) is None}
    cases = camera_cases(camera, Path(settings.data_root), "test")[: settings.max_test_cases]
    logger.info("%s: segmenting %d %s test pictures (another camera)", method, len(cases), camera)
    rows = score_bundle(
        bundle_dir, cases, run_dir / f"cross_camera_{camera}", overrides=overrides,
        configs=tuple(name for name in inference if name != "inference.json"),  # common.segment reads it first
    )
    return {"dataset": camera, "camera": CAMERAS[camera][2], "mean": mean_of_cases(rows), "per_case": rows}


def _read_picture(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as picture:
        return np.asarray(picture)


def _overlay_image(path: str, data: DatasetSpec) -> np.ndarray:
    """The case's image at 0-1 for its overlay picture: 8-bit pictures /255, MR volumes as inference scales them."""
    if data.kind == "vessel2d":
        return _read_picture(Path(path)) / 255.0
    import nibabel as nib

    from common.data import ScaleScanIntensityd

    scan = torch.as_tensor(np.asarray(nib.load(path).dataobj, dtype=np.float32))[None]
    return ScaleScanIntensityd("image", intensity="mr")({"image": scan})["image"][0].numpy()


def evaluate(dataset: str, run_dir: Path, data_dir: Path, settings: argparse.Namespace) -> dict:
    """Metrics of every predicted test case against its ground truth, and overlay pictures of the first few."""
    import nibabel as nib
    from PIL import Image

    from common.data import load_datalist

    data = DATASETS[dataset]
    cases = load_datalist(data_dir, "testing")
    cases = cases[: settings.max_test_cases] if settings.max_test_cases else cases
    predictions, overlays = run_dir / "predictions", run_dir / "overlays"
    overlays.mkdir(exist_ok=True)
    per_case = {}
    for index, case in enumerate(cases):
        stem = Path(case["image"]).name.split(".")[0]
        if data.kind == "vessel2d":
            truth = _read_picture(Path(case["label"]))
            pred = _read_picture(predictions / f"{stem}_seg.png")
            prob = _read_picture(predictions / f"{stem}_prob.tif")
            fov = _read_picture(Path(case["fov"])) if case.get("fov") else None
            per_case[stem] = vessel_metrics(pred, prob, truth, fov)
        else:
            truth_file = nib.load(case["label"])
            truth = np.asarray(truth_file.dataobj).round().astype(int)
            pred = np.asarray(nib.load(predictions / f"{stem}_seg.nii.gz").dataobj).astype(int)
            per_case[stem] = volume_metrics(pred, truth, len(data.label_names), truth_file.header.get_zooms()[:3])
        if index < settings.overlays:
            picture = truth_overlay(_overlay_image(case["image"], data), pred, truth, len(data.label_names))
            Image.fromarray(picture).save(overlays / f"{stem}.png")
    result = {"per_case": per_case, "mean": summarise(per_case, data)}
    if len(data.folders) > 1:  # pooled cameras: each one's own means too
        source = {Path(case["image"]).name.split(".")[0]: case.get("dataset") for case in cases}
        result["mean_by_dataset"] = {
            name: summarise({k: m for k, m in per_case.items() if source[k] == name}, data)
            for name in data.folders
            if any(source[k] == name for k in per_case)
        }
    return result


def summarise(per_case: dict, data: DatasetSpec) -> dict:
    """Means over the test cases (NaN-free; infinite HD95 — a structure missed or invented — counted apart)."""
    if data.kind == "vessel2d":
        return {
            k: float(np.nanmean([m[k] for m in per_case.values()]))
            for k in ("dice", "auc", "sensitivity", "specificity")
        }
    dice = np.array([m["dice"] for m in per_case.values()], dtype=float)
    hd95 = np.array([m["hd95"] for m in per_case.values()], dtype=float)
    finite = np.where(np.isfinite(hd95), hd95, np.nan)
    names = list(data.label_names.values())
    return {
        "mean_dice": float(np.nanmean(dice)),
        "dice": dict(zip(names, np.nanmean(dice, axis=0).tolist())),
        "mean_hd95_mm": float(np.nanmean(finite)),
        "hd95_mm": dict(zip(names, np.nanmean(finite, axis=0).tolist())),
        "cases_with_infinite_hd95": int(np.isinf(hd95).any(axis=1).sum()),
    }


def hardware() -> str:
    from common.benchmark.efficiency import cpu_model

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{cpu_model()}, {torch.get_num_threads()} threads"


def run_accuracy(method: str, dataset: str, output_dir: Path, settings: argparse.Namespace) -> dict:
    """Train, predict, evaluate and draw one method on one dataset; returns (and writes) its ``metrics.json``."""
    spec = METHODS[method]
    run_dir = output_dir / run_name(method, settings)
    resuming = settings.resume and (run_dir / "bundle" / "configs").is_dir()
    if run_dir.exists() and not resuming:
        shutil.rmtree(run_dir)
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    log_file = logging.FileHandler(run_dir / "run.log")
    log_file.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    logging.getLogger().addHandler(log_file)
    try:
        data_dir = prepare_dataset(dataset, Path(settings.data_root), output_dir)
        if settings.labelled_cases:
            data_dir = labelled_subset(data_dir, settings.labelled_cases, settings.subset_seed, output_dir)
        if not resuming:
            shutil.copytree(
                bundles_folder(settings.bundles) / spec.bundle,
                run_dir / "bundle",
                ignore=shutil.ignore_patterns("*.pt", "*.pth", "eval"),
            )
        logger.info("%s on %s with %s: training (%s)", method, dataset, settings.backbone, run_dir)
        training = train(method, dataset, run_dir, data_dir, settings)
        logger.info(
            "%s: %d iterations in %.0f s; predicting the test cases",
            method,
            training["iterations"],
            training["train_seconds"],
        )
        predict_seconds = predict(method, dataset, run_dir, data_dir, settings)
        evaluation = evaluate(dataset, run_dir, data_dir, settings)
        cross_camera = None
        if settings.cross_camera:
            cross_camera = cross_camera_test(method, dataset, run_dir, data_dir, settings)
    except Exception as error:
        logger.exception("%s on %s failed: %s", method, dataset, error)  # into run.log as well
        raise
    finally:
        logging.getLogger().removeHandler(log_file)
        log_file.close()
    curve = training.pop("learning_curve")
    trained_on = json.loads((data_dir / "datalist.json").read_text())["training"]
    save_learning_curve(
        run_dir / "learning_curve.png",
        curve["loss"],
        {training["key_metric"]: curve["metrics"].get(training["key_metric"], [])},
        title=f"{method} ({'from scratch' if spec.baseline else settings.backbone}) on {dataset}",
    )
    result = {
        "method": method,
        "bundle": spec.bundle,
        "dataset": dataset,
        "split": DATASETS[dataset].description,
        "input": (
            "native-resolution crops of the backbone input in training, native-resolution windows in inference"
            if _native(dataset, settings)
            else "whole pictures and slices, resized to the backbone input by the network"
        ),
        "backbone": "none (MONAI UNet from scratch)" if spec.baseline else settings.backbone,
        "budget": {"iterations": settings.iterations, "minutes": settings.minutes},
        "labelled_cases": {
            "count": len(trained_on),
            "seed": settings.subset_seed if settings.labelled_cases else None,
            "cases": sorted(Path(case["image"]).name for case in trained_on),
        },
        "training": training,
        "predict_seconds": round(predict_seconds, 1),
        "test_cases": len(evaluation["per_case"]),
        "mean": evaluation["mean"],
        **({"mean_by_dataset": evaluation["mean_by_dataset"]} if "mean_by_dataset" in evaluation else {}),
        "per_case": evaluation["per_case"],
        **({"cross_camera": cross_camera} if cross_camera else {}),
        "learning_curve": curve,
        "hardware": hardware(),
        "date": datetime.date.today().isoformat(),
        "command": "python -m common.benchmark.accuracy " + " ".join(sys.argv[1:]),
    }
    (run_dir / "metrics.json").write_text(json.dumps(result, indent=2, allow_nan=True) + "\n")
    return result


def run_name(method: str, settings: argparse.Namespace) -> str:
    """The run folder's name: ``<method>_<backbone>``, with ``_labelled<N>_seed<S>`` for a labelled subset."""
    subset = f"_labelled{settings.labelled_cases}_seed{settings.subset_seed}" if settings.labelled_cases else ""
    return f"{method}_{settings.backbone}{subset}"


def _number(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.2f}"  # e.g. every structure missed: no finite HD95 to average


def write_summary(output_dir: Path) -> str:
    """``summary.md`` / ``summary.json`` over every run in ``output_dir`` (``<method>_<backbone>/metrics.json``),
    so that methods run by separate commands end in one table."""
    order = {name: i for i, name in enumerate(METHODS)}
    results = [json.loads(p.read_text()) for p in sorted(output_dir.glob("*/metrics.json"))]
    results.sort(
        key=lambda r: (
            order.get(r["method"], len(order)),
            r["backbone"],
            r.get("labelled_cases", {}).get("count", 0),
            r.get("labelled_cases", {}).get("seed") or 0,
        )
    )
    vessel = bool(results) and "auc" in results[0]["mean"]
    header = (
        "| method | backbone | trainable | iterations | train s | Dice | AUC | sensitivity | specificity |"
        if vessel
        else "| method | backbone | trainable | iterations | train s | mean Dice | Dice per class | HD95 mm "
        "| cases with HD95 ∞ |"
    )
    rows = []
    for r in results:
        mean = r["mean"]
        if vessel:
            scores = f"{mean['dice']:.4f} | {mean['auc']:.4f} | {mean['sensitivity']:.4f} | {mean['specificity']:.4f}"
        else:
            per_class = " / ".join(f"{v:.3f}" for v in mean["dice"].values())
            scores = (
                f"{mean['mean_dice']:.4f} | {per_class} | {_number(mean['mean_hd95_mm'])} | "
                f"{mean['cases_with_infinite_hd95']}"
            )
        subset = r.get("labelled_cases", {})
        labelled = f" ({subset['count']} labelled, seed {subset['seed']})" if subset.get("seed") is not None else ""
        name = r["method"] + labelled
        rows.append(
            f"| {name} | {r['backbone']} | {r['training']['trainable_parameters']:,} | "
            f"{r['training']['iterations']} | {r['training']['train_seconds']:.0f} | {scores} |"
        )
        for name, part in r.get("mean_by_dataset", {}).items():  # pooled cameras: one row each
            rows.append(
                f"| {r['method']}, {name} test pictures only | | | | | {part['dice']:.4f} | {part['auc']:.4f} | "
                f"{part['sensitivity']:.4f} | {part['specificity']:.4f} |"
            )
    first = results[0] if results else {}
    crossed = _cross_camera_rows(results)
    facts = sorted({f"{r['hardware']}, {r['date']}: `{r['command']}`" for r in results})
    text = "\n".join(
        [
            f"# Accuracy on {first.get('dataset', '?')}",
            "",
            f"{first.get('split', '')}. Test cases: {first.get('test_cases', 0)}. Input: "
            + "; ".join(sorted({r.get("input", "?") for r in results}))
            + ".",
            "",
            header,
            "|" + "---|" * (header.count("|") - 1),
            *rows,
            *crossed,
            "",
            "Runs:",
            "",
            *(f"- {fact}" for fact in facts),
            "",
        ]
    )
    (output_dir / "summary.md").write_text(text)
    (output_dir / "summary.json").write_text(
        json.dumps([{k: v for k, v in r.items() if k not in ("per_case", "learning_curve")} for r in results], indent=2)
        + "\n"
    )
    return text


def _cross_camera_rows(results: list[dict]) -> list[str]:
    """Markdown lines of the runs' ``--cross_camera`` tests beside their in-domain test: the same methods on
    pictures of another camera, and what they lose (empty when no run has one)."""
    rows = []
    for r in results:
        if "cross_camera" not in r:
            continue
        home, away = r["mean"], r["cross_camera"]["mean"]
        rows.append(
            f"| {r['method']} | {r['cross_camera']['dataset']} | {home['dice']:.4f} / {home['auc']:.4f} | "
            f"{away['dice']:.4f} / {away['auc']:.4f} | {away['sensitivity']:.4f} | {away['specificity']:.4f} | "
            f"{away['dice'] - home['dice']:+.4f} | {away['auc'] - home['auc']:+.4f} |"
        )
    if not rows:
        return []
    return [
        "",
        "Another camera's test pictures, segmented through `common.segment` with each run's weights (field of view "
        "resampled to the training pictures' diameter, labels thresholded at each picture's size), metrics inside "
        "the field of view:",
        "",
        "| method | other camera | in-domain Dice / AUC | other camera Dice / AUC | sensitivity | specificity | "
        "Dice change | AUC change |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ]


def _argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m common.benchmark.accuracy", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument(
        "--backbone",
        default="litemedsam",
        choices=list(BACKBONES),
        help="backbone of the method bundles (default litemedsam, real weights)",
    )
    parser.add_argument("--iterations", type=int, default=1000, help="training iterations (batches) at most")
    parser.add_argument("--minutes", type=float, default=None, help="wall-clock training budget per method")
    parser.add_argument(
        "--val_every", type=int, default=None, help="iterations between validations (default 1/5 of the budget)"
    )
    parser.add_argument("--batch_size", type=int, default=None, help="override the bundles' batch size")
    parser.add_argument(
        "--num_workers", type=int, default=None, help="loader worker processes (default: each bundle config's own)"
    )
    parser.add_argument("--max_val_cases", type=int, default=None, help="validate on the first N validation cases only")
    parser.add_argument(
        "--max_test_cases", type=int, default=None, help="test on the first N test cases only (smoke runs)"
    )
    parser.add_argument("--overlays", type=int, default=4, help="overlay pictures of the first N test cases")
    parser.add_argument("--device", default=None, help="torch device (default: the bundles' choice, cuda:0 if present)")
    parser.add_argument(
        "--data_root",
        default=None,
        help="folder holding chase_db1/, hrf_av/ and msd_hippocampus/ (default: $MONAI_SAM_PEFT_DATA, else "
        "../shared/data from the working folder)",
    )
    parser.add_argument(
        "--bundles",
        default=None,
        help="folder holding the bundles (default: $MONAI_SAM_PEFT_BUNDLES, else bundles/ in the working folder)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        type=config_override,
        metavar="ID=VALUE",
        help="config value for every method's training and inference, e.g. text_encoder=precomputed",
    )
    parser.add_argument(
        "--whole_pictures",
        action="store_true",
        help="CHASE_DB1: train and segment whole pictures shrunk to the backbone input (the papers' way; SAM2LoRA "
        "through its whole_pictures.json) instead of native-resolution crops and windows",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in the output folder from its newest training state (same arguments); "
        "without it an existing run folder is replaced",
    )
    parser.add_argument(
        "--labelled_cases",
        type=int,
        default=None,
        help="train on this many of the training split's cases only (a seeded draw, --subset_seed); validation and "
        "test stay whole",
    )
    parser.add_argument("--subset_seed", type=int, default=0, help="seed of the --labelled_cases draw (default 0)")
    parser.add_argument(
        "--cross_camera",
        default=None,
        choices=sorted(CAMERAS),
        help="fundus datasets: after the in-domain test, also segment this camera's test pictures through "
        "common.segment (field of view resampled to the training pictures') and score them",
    )
    parser.add_argument("--output_dir", required=True)
    parser.add_argument(
        "--summary_only",
        action="store_true",
        help="only rebuild summary.md/json from the runs already in the output folder (e.g. after methods ran in "
        "parallel commands)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _argument_parser()
    settings = parser.parse_args(argv)
    if settings.iterations < 1:
        parser.error("--iterations must be at least 1")
    if settings.labelled_cases is not None and settings.labelled_cases < 1:
        parser.error("--labelled_cases must be at least 1")
    if settings.cross_camera and DATASETS[settings.dataset].fov_diameter is None:
        fundus = ", ".join(name for name, spec in DATASETS.items() if spec.fov_diameter)
        parser.error(f"--cross_camera tests fundus pictures: --dataset must be one of {fundus}")
    settings.overrides = dict(settings.set)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s", stream=sys.stdout)
    output_dir = Path(settings.output_dir) / settings.dataset
    if settings.summary_only:
        if not list(output_dir.glob("*/metrics.json")):
            print(f"error: no finished runs in {output_dir}", file=sys.stderr)
            return 1
        print(write_summary(output_dir))
        return 0
    try:  # every method would fail on a missing dataset or bundles folder: say it once, before anything is written
        settings.data_root = str(find_data_root(settings.data_root))
        settings.bundles = str(bundles_folder(settings.bundles))
        dataset_source(settings.dataset, Path(settings.data_root))
        other_camera = settings.cross_camera and Path(settings.data_root) / CAMERAS[settings.cross_camera][0]
        if other_camera and not other_camera.is_dir():
            raise FileNotFoundError(f"--cross_camera: {other_camera} not found: give --data_root")
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    output_dir.mkdir(parents=True, exist_ok=True)
    results, failed = [], []
    for method in settings.methods:
        try:
            results.append(run_accuracy(method, settings.dataset, output_dir, settings))
        except Exception as error:  # one failing method must not lose the others' results
            # said on stderr too: a bundle's logging.conf (read by its configs) may have silenced this module's logger
            print(f"error: {method}: {type(error).__name__}: {error}", file=sys.stderr)
            failed.append(method)
    if results:
        print(write_summary(output_dir))
    if failed:
        print(f"failed: {', '.join(failed)} (see {output_dir}/<method>_{settings.backbone}/run.log)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
