"""Safe, strict loading of backbone checkpoints.

Every checkpoint goes through :func:`read_checkpoint` (``torch.load(weights_only=True)``, optional sha256 check,
one clear error for a missing, truncated or unsafe file) and :func:`load_state_dict_strict` (positional embeddings
resized to the model's input size, then a strict load that names every missing, unexpected and mis-shaped key).
A model is never left silently random.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CheckpointError",
    "sha256sum",
    "read_checkpoint",
    "resize_position_embeddings",
    "load_state_dict_strict",
]

logger = logging.getLogger(__name__)

# Keys under which training frameworks nest the model weights (SAM2 releases use "model").
_NESTED_STATE_KEYS = ("model", "state_dict")
_MAX_KEYS_SHOWN = 20


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be used: missing, corrupt, unsafe, wrong checksum or not matching the model."""


def sha256sum(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def read_checkpoint(path: str | os.PathLike, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict from ``path`` with ``weights_only=True``.

    Args:
        path: checkpoint file (``.pt``/``.pth``).
        sha256: expected hex digest; when given the file is verified before it is unpickled.

    Returns:
        the flat state dict (a ``{"model": ...}`` or ``{"state_dict": ...}`` wrapper is removed).

    Raises:
        CheckpointError: missing file, checksum mismatch, truncated/corrupt file, or a pickle holding objects
            other than tensors and containers (refused by ``weights_only``).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if sha256 is not None:
        actual = sha256sum(path)
        if actual.lower() != sha256.lower():
            raise CheckpointError(
                f"checksum mismatch for {path}: sha256 is {actual}, expected {sha256}. "
                "The file is corrupt, incomplete or a different release; download it again."
            )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refused to load {path}: it contains Python objects other than tensors, which weights_only=True does "
            f"not unpickle (this protects against code execution from untrusted files). Details: {err}"
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read checkpoint {path}: the file is truncated or corrupt ({err})") from err
    for key in _NESTED_STATE_KEYS:
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors (found {type(state).__name__})")
    return dict(state)


def _resize_grid(weight: torch.Tensor, target: torch.Size) -> torch.Tensor:
    """Resize a ``1×H×W×C`` (SAM ViT) absolute positional embedding to ``target`` bicubically."""
    grid = weight.permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(target[1], target[2]), mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1).to(weight.dtype)


def _resize_relative(weight: torch.Tensor, target: torch.Size) -> torch.Tensor:
    """Resize an ``L×C`` relative positional table to ``target[0]`` rows (linear, as SAM's own ``get_rel_pos``)."""
    table = weight.t().unsqueeze(0).float()
    table = F.interpolate(table, size=target[0], mode="linear", align_corners=False)
    return table.squeeze(0).t().to(weight.dtype)


def resize_position_embeddings(state: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Adapt position embeddings in ``state`` to the input size ``model`` was built for.

    SAM ViT stores a ``1×64×64×C`` absolute embedding for 1024² inputs and relative tables of ``2·64−1`` rows
    in its global-attention blocks; a model built for another input size has other shapes. Those tensors are
    interpolated here; every other tensor is returned unchanged (shape mismatches there are real errors and are
    reported by :func:`load_state_dict_strict`). SAM2's Hiera interpolates its embeddings at run time and needs
    nothing here.
    """
    expected = model.state_dict()
    resized = dict(state)
    for key, value in state.items():
        if key not in expected or expected[key].shape == value.shape:
            continue
        target = expected[key].shape
        if (
            key.endswith("pos_embed")
            and value.ndim == 4
            and target[0] == value.shape[0]
            and target[3] == value.shape[3]
        ):
            resized[key] = _resize_grid(value, target)
        elif re.search(r"rel_pos_[hw]$", key) and value.ndim == 2 and target[1] == value.shape[1]:
            resized[key] = _resize_relative(value, target)
        else:
            continue
        logger.info("resized %s from %s to %s for the model's input size", key, tuple(value.shape), tuple(target))
    return resized


def _shown(keys: Iterable[str]) -> str:
    keys = list(keys)
    head = ", ".join(keys[:_MAX_KEYS_SHOWN])
    return head + (f", ... ({len(keys) - _MAX_KEYS_SHOWN} more)" if len(keys) > _MAX_KEYS_SHOWN else "")


def load_state_dict_strict(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str | os.PathLike = "<state dict>",
    allowed_missing: Iterable[str] = (),
) -> None:
    """Load ``state`` into ``model`` and fail on any missing, unexpected or mis-shaped key.

    Args:
        model: the model to load into.
        state: the weights (after :func:`resize_position_embeddings` if the input size differs).
        source: file name used in the error message.
        allowed_missing: regular expressions (full match) of model keys that may be absent from ``state``,
            e.g. adapter parameters added after the base model was released.

    Raises:
        CheckpointError: naming ``source`` and the offending keys.
    """
    expected = model.state_dict()
    patterns = [re.compile(p) for p in allowed_missing]
    missing = [k for k in expected if k not in state and not any(p.fullmatch(k) for p in patterns)]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k} (file {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
        for k in state
        if k in expected and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or misshaped:
        parts = [f"checkpoint {source} does not match the model {type(model).__name__}:"]
        if missing:
            parts.append(f"  missing keys ({len(missing)}): {_shown(missing)}")
        if unexpected:
            parts.append(f"  unexpected keys ({len(unexpected)}): {_shown(unexpected)}")
        if misshaped:
            parts.append(f"  mis-shaped keys ({len(misshaped)}): {_shown(misshaped)}")
        parts.append("  Is it the checkpoint of this backbone (and of this input size)?")
        raise CheckpointError("\n".join(parts))
    model.load_state_dict(state, strict=False)
