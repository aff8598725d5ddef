"""S-SAM's Text Affine Layer: maps frozen label-name embeddings to prompt tokens of the SAM decoder."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TextAffineLayer"]

logger = logging.getLogger(__name__)


class TextAffineLayer(nn.Module):
    """``BatchNorm1d(ReLU(Linear(d → C)))`` (Paranjape et al., S-SAM, 2024), holding the label-name embeddings.

    The K frozen text embeddings are a persistent buffer, so an adapter checkpoint carries the prompts it was
    trained with: a restored network reproduces the trained one whatever text encoder is installed where it is
    loaded. When the loaded embeddings differ from the ones computed for the configured names, a warning says so
    (channel k then still means the k-th name used in training).

    Batch statistics are taken over the rows of one call. A single row has no batch variance: a training call with
    one row normalises with the running statistics instead of failing.

    Args:
        text_embeddings: ``K×d`` embeddings of the label names.
        out_features: prompt token width C (256 for SAM's decoder).

    Shapes:
        ``forward()`` → ``K×C``; ``forward(text)`` maps any ``N×d`` → ``N×C``.
    """

    def __init__(self, text_embeddings: torch.Tensor, out_features: int = 256) -> None:
        super().__init__()
        if text_embeddings.ndim != 2:
            raise ValueError(f"text_embeddings must be K×d, got shape {tuple(text_embeddings.shape)}")
        self.register_buffer("text_embeddings", text_embeddings.detach().clone().float())
        # the affine weights are this module's own parameters (not a child Linear): adapter checkpoints keep the
        # persistent buffers of modules that own trained parameters, and the embeddings must be among them
        linear = nn.Linear(text_embeddings.shape[1], out_features)  # for PyTorch's default initialisation
        self.weight = nn.Parameter(linear.weight.detach().clone())
        self.bias = nn.Parameter(linear.bias.detach().clone())
        self.norm = nn.BatchNorm1d(out_features)

    def forward(self, text: torch.Tensor | None = None) -> torch.Tensor:
        x = torch.relu(F.linear(self.text_embeddings if text is None else text, self.weight, self.bias))
        if self.training and x.shape[0] == 1:
            n = self.norm
            return F.batch_norm(x, n.running_mean, n.running_var, n.weight, n.bias, False, 0.0, n.eps)
        return self.norm(x)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        loaded = state_dict.get(prefix + "text_embeddings")
        if loaded is not None and loaded.shape == self.text_embeddings.shape:
            if not torch.allclose(loaded.to(self.text_embeddings), self.text_embeddings, atol=1e-4):
                logger.warning(
                    "the checkpoint's label-name embeddings differ from those computed for the configured label "
                    "names / text encoder; the checkpoint's are used (channel order = the names used in training)"
                )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
