"""Singular-value tuning (S-SAM, Paranjape et al., 2024) for ``nn.Linear`` and ``nn.Conv2d``."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .layer import AdapterLayer

__all__ = ["SvdLayer"]


class SvdLayer(AdapterLayer):
    """Effective weight ``U · diag(ReLU(scale ⊙ σ + shift)) · Vᵀ`` from the frozen weight ``W = U·diag(σ)·Vᵀ``.

    One trainable ``scale`` (init 1) and ``shift`` (init 0) per singular value, so the layer starts exactly as the
    base layer; ReLU keeps singular values non-negative; the bias is untouched. Convolution kernels are factorised as
    ``out × (in·kh·kw)`` matrices.

    The SVD is computed once, when the layer wraps the base layer (and again whenever its ``weight`` is loaded from a
    state dict), never lazily inside a forward. ``U``, ``σ``, ``V`` are non-persistent buffers: they move with the
    module but are not written to checkpoints (an adapter checkpoint holds only ``scale`` and ``shift``). In eval mode
    the effective weight is cached until ``scale`` or ``shift`` change. ``merge()`` folds it into ``weight`` exactly.

    Args:
        base_layer: the frozen ``nn.Linear`` or ``nn.Conv2d``.
        regularization_weight: weight of ``‖1 − scale‖₁ + ‖shift‖₁`` returned by :meth:`auxiliary_loss` (S-SAM: 0).
    """

    def __init__(self, base_layer: nn.Module, regularization_weight: float = 0.0) -> None:
        super().__init__(base_layer)
        rank = min(self.weight.shape[0], self.weight[0].numel())
        factory = dict(device=self.weight.device, dtype=self.weight.dtype)
        self.scale = nn.Parameter(torch.ones(rank, **factory))
        self.shift = nn.Parameter(torch.zeros(rank, **factory))
        self.regularization_weight = regularization_weight
        self.register_buffer("svd_u", torch.empty(0, **factory), persistent=False)
        self.register_buffer("svd_s", torch.empty(0, **factory), persistent=False)
        self.register_buffer("svd_vh", torch.empty(0, **factory), persistent=False)
        self._cache: tuple[tuple[int, int], torch.Tensor] | None = None
        self.refactorize()
        self.register_load_state_dict_post_hook(lambda module, _keys: module.refactorize())

    @torch.no_grad()
    def refactorize(self) -> None:
        """Recompute ``U, σ, Vᵀ`` from the current (unmerged) base weight; double precision for an exact start."""
        weight = self._unmerged_weight if self.merged else self.weight
        matrix = weight.detach().reshape(weight.shape[0], -1).double()
        if matrix.device.type == "cpu":
            # numpy's LAPACK on CPU: torch's (MKL) gesdd was measured erratically slow on our AMD CI cores, up to
            # seconds for a 160×640 matrix that usually takes milliseconds; the factors are the same
            u, s, vh = (torch.from_numpy(a) for a in np.linalg.svd(matrix.numpy(), full_matrices=False))
        else:
            u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        self.svd_u = u.to(device=self.weight.device, dtype=self.weight.dtype)
        self.svd_s = s.to(device=self.weight.device, dtype=self.weight.dtype)
        self.svd_vh = vh.to(device=self.weight.device, dtype=self.weight.dtype)
        self._cache = None

    def effective_weight(self) -> torch.Tensor:
        """``U · diag(ReLU(scale ⊙ σ + shift)) · Vᵀ`` in the shape of ``weight`` (cached in eval mode)."""
        key = (self.scale._version, self.shift._version)
        if not self.training and self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        sigma = torch.relu(self.scale * self.svd_s + self.shift)
        weight = ((self.svd_u * sigma) @ self.svd_vh).reshape(self.weight.shape)
        if not self.training and not torch.is_grad_enabled():
            self._cache = (key, weight.detach())
            return self._cache[1]
        return weight

    def train(self, mode: bool = True) -> SvdLayer:
        self._cache = None
        return super().train(mode)

    def merged_weight(self) -> torch.Tensor:
        return self.effective_weight().to(self.weight.dtype)

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_forward(x, self.effective_weight())

    def auxiliary_loss(self) -> torch.Tensor | None:
        if not self.regularization_weight:
            return None
        return self.regularization_weight * ((1 - self.scale).abs().sum() + self.shift.abs().sum())

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, singular_values={self.svd_s.numel()}"
