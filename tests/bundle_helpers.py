"""Helpers shared by the bundle tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from monai.bundle import ConfigWorkflow


def bundle_workflow(configs: Path, files: Sequence[str], workflow_type: str, **override) -> ConfigWorkflow:
    """A ``ConfigWorkflow`` over ``files`` of a bundle's ``configs`` folder, with its metadata and logging config."""
    return ConfigWorkflow(
        config_file=[str(configs / f) for f in files],
        meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"),
        workflow_type=workflow_type,
        **override,
    )


def run_workflow(workflow: ConfigWorkflow) -> ConfigWorkflow:
    """Initialise (the bundle's required properties must all be present), run and finalise a workflow."""
    workflow.initialize()
    assert workflow.check_properties() == []
    workflow.run()
    workflow.finalize()
    return workflow


def write_hippocampus_datalist(msd_hippocampus: Path, folder: Path, num_val: int = 1, num_test: int = 1) -> Path:
    """The case-level split of the real MSD hippocampus volumes the bundles document, cut to ``num_val`` validation
    and ``num_test`` test volumes (LiteMedSAM segments ~36 slices a volume on CPU), written to ``folder``."""
    from common.data import build_datalist, write_datalist

    datalist = build_datalist(
        msd_hippocampus,
        "images",
        "labels",
        val_fraction=0.008,
        test_fraction=0.2,
        seed=0,
        relative_to=folder,
        skip_unlabelled=True,
    )
    assert len(datalist["training"]) + len(datalist["validation"]) + len(datalist["testing"]) == 260
    datalist["validation"], datalist["testing"] = datalist["validation"][:num_val], datalist["testing"][:num_test]
    return write_datalist(datalist, folder)


STANDARD_FILES = (
    "metadata.json",
    "train.json",
    "evaluate.json",
    "inference.json",
    "multi_gpu_train.json",
    "logging.conf",
)
SCHEMA = Path(__file__).resolve().parents[2] / "shared" / "monai" / "meta_schema_20240725.json"


def check_bundle_files(bundle: Path, extra_configs: Sequence[str], backbone: str) -> None:
    """The model-zoo file set plus ``extra_configs`` and no ``scripts/``, metadata valid against MONAI's schema (when
    ``../shared`` has it) with its version in the changelog and this package among the required ones, and
    an empty ``large_files.yml`` (the default configuration downloads nothing) and ``paper_large_files.yml`` naming
    the official checkpoint of ``backbone`` with its recorded sha256."""
    import json

    import yaml
    from monai.bundle import verify_metadata

    from common.backbones import OFFICIAL_CHECKPOINTS, PAPER_LARGE_FILES

    for name in (*STANDARD_FILES, *extra_configs):
        assert (bundle / "configs" / name).is_file(), name
    for name in ("LICENSE", "large_files.yml", "paper_large_files.yml", "docs/README.md", "models/README.md"):
        assert (bundle / name).is_file(), name
    assert not (bundle / "scripts").exists()  # configuration only: the code lives in the installed package
    meta_file = bundle / "configs" / "metadata.json"
    if SCHEMA.is_file():
        verify_metadata(meta_file=str(meta_file), filepath=str(SCHEMA))
    meta = json.loads(meta_file.read_text())
    assert meta["version"] in meta["changelog"]
    assert "monai-sam-peft" in meta["required_packages_version"]
    # the default configuration downloads nothing; the paper backbone's checkpoint is listed apart, for its overlays
    assert yaml.safe_load((bundle / "large_files.yml").read_text())["large_files"] == []
    entries = {e["path"]: e for e in yaml.safe_load((bundle / PAPER_LARGE_FILES).read_text())["large_files"]}
    official = OFFICIAL_CHECKPOINTS[backbone]
    entry = entries[f"models/{official.filename}"]
    assert (entry["url"], entry["hash_val"], entry["hash_type"]) == (official.url, official.sha256, "sha256")


REPO_ROOT = Path(__file__).resolve().parents[1]
#: the tiny random-weight backbone of each bundle's family, for CPU tests
TEST_BACKBONES = {
    "sam2lora_fundus_segmentation": "sam2.1_hiera_test",
    "conv_lora_sam_segmentation": "sam_vit_test",
    "s_sam_text_prompted_segmentation": "sam_vit_test",
    "balr_sam_segmentation": "sam_vit_test",
}


def bundle_with_test_weights(name: str, parent: Path, settings: dict | None = None) -> Path:
    """A copy of bundle ``name`` under ``parent`` whose configs use its test backbone (plus ``settings``, written
    into ``inference.json`` and ``train.json`` as a user would set them), with the adapter weights of that network
    in ``models/model.pt`` (test backbones are seeded, so the weights fit every later build)."""
    import json
    import shutil

    from monai.bundle import ConfigParser

    from common.adapters import save_adapter_checkpoint

    bundle = parent / name
    shutil.copytree(REPO_ROOT / "bundles" / name, bundle)
    for config in ("inference.json", "train.json"):
        path = bundle / "configs" / config
        values = {"backbone": TEST_BACKBONES[name], **(settings or {})}
        path.write_text(json.dumps({**json.loads(path.read_text()), **values}, indent=4))
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.update({"bundle_root": str(bundle)})
    save_adapter_checkpoint(parser.get_parsed_content("network"), bundle / "models" / "model.pt")
    return bundle


#: synthetic data in each bundle's default layout: 2D pictures (SAM2LoRA's fundus), 3D volumes with two structures for
#: the others (their default train.json is the shipped hippocampus adapter's configuration: it samples slices)
_VOLUMES = {"spatial_dims": 3, "num_classes": 2, "shape": (40, 48, 8)}
_HIPPOCAMPUS_DEFAULTS = ("s_sam_text_prompted_segmentation", "balr_sam_segmentation", "conv_lora_sam_segmentation")
_DEFAULT_LAYOUT = {name: _VOLUMES for name in _HIPPOCAMPUS_DEFAULTS}


def bundle_and_synthetic_data(name: str, parent: Path, num_val: int = 1) -> tuple[Path, Path]:
    """A plain copy of bundle ``name`` and a small generated dataset in its default layout (4 training cases),
    both under ``parent``."""
    import shutil

    from common.datasets import make_synthetic_dataset

    bundle = parent / name
    shutil.copytree(REPO_ROOT / "bundles" / name, bundle)
    data = parent / "data"
    layout = {"spatial_dims": 2, "num_classes": 1, **_DEFAULT_LAYOUT.get(name, {})}
    make_synthetic_dataset(data, **layout, num_train=4, num_val=num_val, num_test=1)
    return bundle, data


def short_training(bundle: Path, data: Path, name: str, iterations: int, **overrides):
    """The ``ConfigParser`` of ``bundle``'s ``train.json`` on its test backbone and ``data``, set for one epoch of
    ``iterations`` iterations without loader workers (``overrides`` win), initialised; run
    ``parser.get_parsed_content("train#trainer").run()`` to train."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.json"))
    parser.update(
        {
            "bundle_root": str(bundle),
            "backbone": TEST_BACKBONES[name],
            "dataset_dir": str(data),
            "num_workers": 0,
            "max_epochs": 1,
            "train#trainer#epoch_length": iterations,
            **overrides,
        }
    )
    parser.get_parsed_content("initialize")
    return parser
