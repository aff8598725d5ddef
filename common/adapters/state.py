"""Adapter-only checkpoints: save and load just what was trained."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from common.backbones.checkpoint import CheckpointError, read_checkpoint

__all__ = [
    "AdapterStateView",
    "adapter_state_dict",
    "load_adapter_checkpoint",
    "load_adapter_state_dict",
    "save_adapter_checkpoint",
]


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable state of ``model``: every parameter with ``requires_grad`` and the persistent buffers of the
    modules that own such parameters (e.g. BatchNorm running statistics of a trained head).

    Keys are the model's own state-dict keys (no wrapper prefixes), tensors are detached CPU copies. Frozen base
    weights are not included: they come from the base checkpoint.
    """
    state: dict[str, torch.Tensor] = {}
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        own = [(n, p) for n, p in module.named_parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        for name, param in own:
            state[prefix + name] = param.detach().cpu().clone()
        for name, buf in module.named_buffers(recurse=False):
            if buf is not None and name not in module._non_persistent_buffers_set:
                state[prefix + name] = buf.detach().cpu().clone()
    return state


def load_adapter_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], strict: bool = True) -> None:
    """Apply an adapter-only state onto a freshly built model with the same adapters injected.

    Args:
        model: the model (base weights loaded, adapters injected, trainable groups configured).
        state: output of :func:`adapter_state_dict`.
        strict: also require every trainable tensor of ``model`` to be present in ``state``.

    Raises:
        CheckpointError: keys unknown to the model, shape mismatches, or (strict) trainable tensors missing.
    """
    own = model.state_dict()
    unknown = [k for k in state if k not in own]
    misshaped = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in state
        if k in own and state[k].shape != own[k].shape
    ]
    missing = [k for k in adapter_state_dict(model) if k not in state] if strict else []
    if unknown or misshaped or missing:
        raise CheckpointError(
            "adapter state does not fit the model: "
            + "; ".join(
                f"{label}: {', '.join(keys[:10])}{' ...' if len(keys) > 10 else ''}"
                for label, keys in (("unknown keys", unknown), ("mis-shaped", misshaped), ("missing", missing))
                if keys
            )
            + ". Was it trained with the same backbone, adapter targets and ranks?"
        )
    with torch.no_grad():
        for key, value in state.items():
            own[key].copy_(value)


def save_adapter_checkpoint(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write :func:`adapter_state_dict` to ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(adapter_state_dict(model), tmp)
    os.replace(tmp, path)
    return path


def load_adapter_checkpoint(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> None:
    """Read an adapter checkpoint safely (``weights_only``) and apply it with :func:`load_adapter_state_dict`."""
    load_adapter_state_dict(model, read_checkpoint(path), strict=strict)


class AdapterStateView:
    """Presents a network's trainable state as its ``state_dict`` for MONAI / ignite checkpoint handlers.

    ``CheckpointSaver(save_dict={"model": AdapterStateView(net)})`` then writes only the adapter-level tensors
    (megabytes, the network's own key names) instead of the frozen base weights, and ``CheckpointLoader`` with the
    same view applies such a file onto a freshly built network. A ``DistributedDataParallel`` wrapper is looked
    through, so single- and multi-GPU checkpoints are interchangeable.
    """

    def __init__(self, network: nn.Module) -> None:
        self.network = network

    @property
    def _module(self) -> nn.Module:
        return getattr(self.network, "module", self.network)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return adapter_state_dict(self._module)

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True) -> None:
        load_adapter_state_dict(self._module, state_dict, strict=strict)
