"""CLIP text tower (S-SAM's label-name encoder), from user-provided weights."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from .base import TextEncoder

__all__ = ["ClipTextEncoder"]


class ClipTextEncoder(TextEncoder):
    """The projected text features of a CLIP model (``text_embeds``; d = 512 for ViT-B/32, as in S-SAM).

    CLIP weights cannot be downloaded by this package; give a local copy:

    * a folder in Hugging Face format (``config.json``, weights and tokenizer files, e.g. a snapshot of
      ``openai/clip-vit-base-patch32``): loaded with ``transformers.CLIPTextModelWithProjection``;
    * a single checkpoint file of an OpenCLIP model (e.g. OpenAI's ``ViT-B-32.pt``): loaded with ``open_clip``
      (``pip install open-clip-torch``) as the architecture ``model_name``.

    Args:
        weights: the folder or file above.
        model_name: OpenCLIP architecture name (used for checkpoint files only).
    """

    def __init__(self, weights: str | os.PathLike, model_name: str = "ViT-B-32") -> None:
        weights = os.fspath(weights)
        if os.path.isdir(weights):
            from transformers import AutoTokenizer, CLIPTextModelWithProjection

            self.tokenizer = AutoTokenizer.from_pretrained(weights, local_files_only=True)
            self.model = CLIPTextModelWithProjection.from_pretrained(weights, local_files_only=True).eval()
            self.dim = int(self.model.config.projection_dim)
            self.backend = "transformers"
        elif os.path.isfile(weights):
            try:
                import open_clip
            except ImportError as err:
                raise ImportError(
                    f"{weights} is a checkpoint file: reading it needs open_clip (pip install open-clip-torch), "
                    "or give a Hugging Face CLIP folder instead"
                ) from err
            self.model = open_clip.create_model(model_name, pretrained=weights).eval()
            self.tokenizer = open_clip.get_tokenizer(model_name)
            self.dim = int(self.model.text_projection.shape[-1])
            self.backend = "open_clip"
        else:
            raise FileNotFoundError(
                f"no CLIP weights at {weights}: give a Hugging Face CLIP folder or an OpenCLIP checkpoint file"
            )
        self.description = f"CLIP text tower ({self.backend}) from {weights}"

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        if self.backend == "transformers":
            tokens = self.tokenizer(list(texts), padding=True, return_tensors="pt")
            return self.model(**tokens).text_embeds.float().cpu()
        return self.model.encode_text(self.tokenizer(list(texts))).float().cpu()
