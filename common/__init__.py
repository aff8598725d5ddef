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

__version__ = "0.1.0"
