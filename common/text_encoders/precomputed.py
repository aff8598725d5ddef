"""Label-name embeddings computed elsewhere and stored in a file."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import torch

from .base import TextEncoder

__all__ = ["PrecomputedTextEncoder", "save_text_embeddings"]


class PrecomputedTextEncoder(TextEncoder):
    """Looks label names up in a file of embeddings: a ``.pt`` file holding ``{name: 1-D tensor}`` (written by
    :func:`save_text_embeddings`) or a ``.json`` file ``{name: [floats]}``.

    Use it where the text model cannot be installed next to the bundle (embed the names once on a machine that has
    it, ship the file).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no text-embedding file at {path}")
        if path.endswith(".json"):
            with open(path) as f:
                table = {k: torch.tensor(v, dtype=torch.float32) for k, v in json.load(f).items()}
        else:
            table = {k: torch.as_tensor(v).float() for k, v in torch.load(path, weights_only=True).items()}
        dims = {v.shape for v in table.values()}
        if not table or len(dims) != 1 or len(next(iter(dims))) != 1:
            raise ValueError(f"{path} must map names to 1-D embeddings of one length, got shapes {sorted(dims)}")
        self.table = table
        self.dim = next(iter(dims))[0]
        self.description = f"precomputed embeddings from {os.path.basename(path)}"

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        missing = [t for t in texts if t not in self.table]
        if missing:
            raise KeyError(f"no embedding for {missing} in the file; it has {sorted(self.table)}")
        return torch.stack([self.table[t] for t in texts])


def save_text_embeddings(encoder: TextEncoder, texts: Sequence[str], path: str | os.PathLike) -> None:
    """Embed ``texts`` with ``encoder`` and save ``{text: embedding}`` for :class:`PrecomputedTextEncoder`."""
    torch.save(dict(zip(texts, encoder.embed(texts))), os.fspath(path))
