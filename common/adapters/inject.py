"""Injecting adapters into a model by module-name patterns, and walking the injected layers."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from .config import AdapterConfig
from .layer import AdapterLayer

__all__ = [
    "name_matches",
    "inject_adapters",
    "adapter_layers",
    "merge_adapters",
    "unmerge_adapters",
    "merge_and_unload",
]

logger = logging.getLogger(__name__)


def name_matches(patterns: Iterable[str], name: str) -> bool:
    """Whether any regular expression in ``patterns`` matches ``name`` or one of its dotted suffixes.

    ``"attn.qkv"`` matches ``"attn.qkv"`` and ``"image_encoder.blocks.0.attn.qkv"`` but not ``"attn.qkv_extra"``;
    ``"image_encoder\\..*attn.qkv"`` restricts the match to the image encoder.
    """
    return any(re.fullmatch(rf"(?:.*\.)?(?:{p})", name) for p in patterns)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def inject_adapters(model: nn.Module, config: AdapterConfig) -> list[str]:
    """Replace every module matching ``config.target_modules`` with the adapter layer ``config`` describes.

    Matching modules of an unsupported type (e.g. a ``Conv2d`` for LoRA) raise, so that a pattern never silently
    adapts less than it says. Already adapted layers (and modules inside them) are never wrapped again.

    Returns:
        the dotted names of the adapted modules, in model order.

    Raises:
        ValueError: no module matched, all matches are already adapted, or a match has an unsupported type.
    """
    if not config.target_modules:
        raise ValueError("the adapter configuration names no target_modules")
    targets, already_adapted = [], []
    for name, module in model.named_modules():
        if not name or not name_matches(config.target_modules, name) or name_matches(config.exclude_modules, name):
            continue
        if isinstance(module, AdapterLayer):
            already_adapted.append(name)
            continue
        if any(name.startswith(t + ".") for t in targets + already_adapted):
            continue
        if not isinstance(module, config.supported_types):
            supported = ", ".join(t.__name__ for t in config.supported_types)
            raise ValueError(
                f"target {name!r} is a {type(module).__name__}; {type(config).__name__} adapts {supported}"
            )
        targets.append(name)
    if not targets:
        if already_adapted:
            raise ValueError(
                f"every module matching {config.target_modules} is already adapted ({len(already_adapted)})"
            )
        raise ValueError(f"no module of {type(model).__name__} matches target_modules={config.target_modules}")
    for name in targets:
        _set_submodule(model, name, config.create_layer(model.get_submodule(name)))
    logger.info("injected %s into %d modules", type(config).__name__, len(targets))
    return targets


def adapter_layers(model: nn.Module) -> Iterator[tuple[str, AdapterLayer]]:
    """``(name, layer)`` for every adapter layer in ``model``."""
    for name, module in model.named_modules():
        if isinstance(module, AdapterLayer):
            yield name, module


def merge_adapters(model: nn.Module, strict: bool = True) -> int:
    """Fold every adapter into its base weight (see :meth:`AdapterLayer.merge`); returns how many were merged.

    Args:
        strict: raise on adapters that cannot be folded into a weight (Conv-LoRA's experts, bottleneck adapters);
            with False they stay as they are and run unmerged.
    """
    merged = 0
    for _, layer in adapter_layers(model):
        try:
            layer.merge()
        except NotImplementedError:
            if strict:
                raise
        else:
            merged += 1
    return merged


def unmerge_adapters(model: nn.Module) -> int:
    """Undo :func:`merge_adapters`; returns how many layers were restored."""
    layers = list(adapter_layers(model))
    for _, layer in layers:
        layer.unmerge()
    return len(layers)


def merge_and_unload(model: nn.Module, strict: bool = True) -> nn.Module:
    """Replace every adapter layer by a plain layer with the merged weight, in place; returns ``model``.

    Args:
        strict: raise on adapters that cannot be folded into a weight (Conv-LoRA's experts, bottleneck adapters);
            with False they stay in the model as adapter layers.
    """
    for name, layer in list(adapter_layers(model)):
        try:
            plain = layer.to_base_layer()
        except NotImplementedError:
            if strict:
                raise
            continue
        _set_submodule(model, name, plain)
    return model


def auxiliary_loss(model: nn.Module) -> torch.Tensor:
    """Sum of the adapter layers' auxiliary losses (Conv-LoRA's balance loss of the last forward, SVD's regulariser);
    zero when there are none."""
    losses = [loss for _, layer in adapter_layers(model) if (loss := layer.auxiliary_loss()) is not None]
    if not losses:
        return torch.zeros(())
    return torch.stack([loss.float() for loss in losses]).sum()
