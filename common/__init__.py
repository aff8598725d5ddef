"""Shared package of the SAM / SAM2 parameter-efficient fine-tuning bundles.

Sub-packages:
    backbones: builders for the official SAM, SAM2.1 and LiteMedSAM models, checkpoint loading.
    adapters: one adapter mechanism (target patterns, injection, freezing, adapter-only state, merge).
    losses: segmentation losses the bundles share.
    networks: prompt-free segmentation networks usable by MONAI engines and inferers.
    data: datalist helpers, scan reading and the transforms the bundles' configs use.
    datasets: dataset-preparation commands (published layouts -> datalist.json) and synthetic sample data.
    engines: trainer, evaluator and inferer additions (precision, checkpoints, slice batching).
    metrics: segmentation metrics (MONAI handlers and per-case metrics).
"""

import importlib
from types import ModuleType

__version__ = "0.1.0"

_SUBMODULES = (
    "adapters", "backbones", "benchmark", "cli", "data", "datasets", "engines", "export_merged", "losses", "metrics",
    "monai_label", "networks", "package_bundle", "quickstart", "samples", "segment", "text_encoders", "zoo_check",
)


def __getattr__(name: str) -> ModuleType:
    # Sub-packages load on first use, so that a bundle config needs only ``$import common`` to write
    # ``common.data.X`` (MONAI evaluates config expressions with the imported names only), and a console script
    # that needs one sub-package does not import the others.
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
