"""Shared package of the SAM / SAM2 parameter-efficient fine-tuning bundles.

Sub-packages:
    backbones: builders for the official SAM, SAM2.1 and LiteMedSAM models, checkpoint loading.
    adapters: one adapter mechanism (target patterns, injection, freezing, adapter-only state, merge).
    losses: segmentation losses the bundles share.
    networks: prompt-free segmentation networks usable by MONAI engines and inferers.
    data: datalist helpers and a synthetic sample-data generator.
"""

__version__ = "0.1.0"
