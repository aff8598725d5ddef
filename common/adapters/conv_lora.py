"""Conv-LoRA layer (Zhong et al., ICLR 2024): LoRA whose bottleneck holds a mixture of convolutional experts."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layer import AdapterLayer

__all__ = ["ConvLoraLinear", "coefficient_of_variation_squared"]


def coefficient_of_variation_squared(values: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """``var / mean²`` of a 1-D tensor (0 for a single value): the imbalance measure of the balance loss."""
    if values.numel() <= 1:
        return values.new_zeros(())
    values = values.float()
    return values.var() / (values.mean() ** 2 + eps)


def _exporting() -> bool:
    """Whether the network is being traced or exported (TorchScript tracing, ``torch.export``, ONNX), where
    data-dependent indexing cannot be recorded."""
    return torch.jit.is_tracing() or torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export()


class ConvLoraLinear(AdapterLayer):
    """``y = W₀x + b + (alpha/rank) · B(z + E_k(z))`` with ``z = A(dropout(x))`` laid out on its token grid.

    The bottleneck ``z`` (rank r channels) is arranged on the 2D grid of the tokens (4D inputs ``N×H×W×C`` as SAM's
    and Hiera's blocks pass them, windowed or global, square or not; 3D inputs ``N×L×C`` on a square grid as
    TinyViT's windows). A noisy top-1 gate on the grid-averaged bottleneck (padding tokens, which are exactly zero,
    left out of the average) picks one of E experts per sample; expert i resizes ``z`` bicubically by
    ``expert_scales[i]``, applies a 3×3 convolution (r→r, zero bias) and GELU, and resizes back. Its output is added
    to ``z`` inside the bottleneck, before the up-projection B (zero-initialised, so the layer starts as the base).

    The gate learns through the load-balancing loss ``balance_weight · (cv²(importance) + cv²(load))``, stored in
    ``balance_loss`` after every training forward (the network sums these and the bundle's loss adds the sum). With
    ``scale_by_gate=False`` (the reference behaviour) the gate value does not multiply the expert output (with top-1
    a softmax over the kept logit is 1 anyway); with ``True`` the chosen expert is scaled by its probability under a
    softmax over all E logits, so the gate also learns from the task loss (Switch-Transformer style).

    Args:
        base_layer: the frozen ``nn.Linear``.
        rank, alpha, dropout: LoRA hyper-parameters (paper: 3, 32).
        expert_scales: resize factor of each expert (paper: 1..8; the length is E).
        scale_by_gate: scale the chosen expert's output by its gate probability (see above).
        noise_epsilon: floor of the learned noise scale.
        balance_weight: weight of this layer's balance loss (paper: 0.01).
    """

    def __init__(
        self,
        base_layer: nn.Linear,
        rank: int = 3,
        alpha: float = 32.0,
        dropout: float = 0.0,
        expert_scales: Sequence[float] = (1, 2, 3, 4, 5, 6, 7, 8),
        scale_by_gate: bool = False,
        noise_epsilon: float = 1e-2,
        balance_weight: float = 0.01,
    ) -> None:
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"ConvLoraLinear wraps nn.Linear, got {type(base_layer).__name__}")
        super().__init__(base_layer)
        if not expert_scales:
            raise ValueError("expert_scales must name at least one expert")
        factory = dict(device=self.weight.device, dtype=self.weight.dtype)
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        self.expert_scales = tuple(float(s) for s in expert_scales)
        self.scale_by_gate = scale_by_gate
        self.noise_epsilon = noise_epsilon
        self.balance_weight = balance_weight
        num_experts = len(self.expert_scales)
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.gate = nn.Parameter(torch.zeros(rank, num_experts, **factory))
        self.noise = nn.Parameter(torch.zeros(rank, num_experts, **factory))
        self.experts = nn.ModuleList(nn.Conv2d(rank, rank, 3, padding=1, **factory) for _ in self.expert_scales)
        for conv in self.experts:
            nn.init.zeros_(conv.bias)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.balance_loss: torch.Tensor | None = None
        self.last_expert_index: torch.Tensor | None = None

    @property
    def token_wise(self) -> bool:
        return False  # its experts convolve the bottleneck on the token grid

    @property
    def num_experts(self) -> int:
        return len(self.expert_scales)

    def auxiliary_loss(self) -> torch.Tensor | None:
        """The balance loss of the last forward (zero outside training)."""
        return self.balance_loss

    def merged_weight(self) -> torch.Tensor:
        raise NotImplementedError(
            "Conv-LoRA cannot be merged: its experts are non-linear convolutions on the token grid. Keep the layer, "
            "or merge only the plain LoRA part with delta_weight()."
        )

    def delta_weight(self) -> torch.Tensor:
        """The linear part alone, ``(alpha/rank)·B·A`` (what merging would fold in without the experts)."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def _grid(self, z: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Bottleneck ``N×...×r`` → ``N×r×H×W`` and the shape to restore."""
        if z.ndim == 4:
            return z.permute(0, 3, 1, 2), z.shape
        if z.ndim == 3:
            side = math.isqrt(z.shape[1])
            if side * side != z.shape[1]:
                raise ValueError(
                    f"Conv-LoRA got {z.shape[1]} tokens without a grid: pass N×H×W×C inputs for non-square layouts"
                )
            return z.transpose(1, 2).reshape(z.shape[0], self.rank, side, side), z.shape
        raise ValueError(f"Conv-LoRA expects N×H×W×C or N×L×C inputs, got shape {tuple(z.shape)}")

    def _route(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-1 expert per sample and the gate value to scale it by; records the balance loss."""
        clean = pooled @ self.gate
        if self.training:
            noise_std = F.softplus(pooled @ self.noise) + self.noise_epsilon
            logits = clean + torch.randn_like(clean) * noise_std
        else:
            noise_std, logits = None, clean
        index = logits.argmax(dim=1)
        probabilities = torch.softmax(logits, dim=1)
        # gate value of the chosen expert: a softmax over the kept top-1 logit is 1 (reference); scale_by_gate uses
        # its probability under all E logits instead
        chosen = probabilities.gather(1, index[:, None])[:, 0] if self.scale_by_gate else torch.ones_like(clean[:, 0])
        gates = torch.zeros_like(clean).scatter(1, index[:, None], chosen[:, None])
        if self.training and self.num_experts > 1:
            importance = gates.sum(0)  # gate mass per expert (counts in the reference behaviour)
            load = self._load(clean, logits, noise_std)
            self.balance_loss = self.balance_weight * (
                coefficient_of_variation_squared(importance) + coefficient_of_variation_squared(load)
            )
        else:
            self.balance_loss = clean.new_zeros(())
        return index, chosen

    @staticmethod
    def _load(clean: torch.Tensor, noisy: torch.Tensor, noise_std: torch.Tensor) -> torch.Tensor:
        """Smooth expert load (Shazeer et al., 2017, k = 1): the probability, under fresh noise, that each expert
        would still be the top choice of each sample, summed over samples."""
        top2 = noisy.topk(min(2, noisy.shape[1]), dim=1).values
        is_top = noisy >= top2[:, :1]
        # an expert that is on top must beat the runner-up; any other expert must beat the current top
        threshold = torch.where(is_top, top2[:, -1:], top2[:, :1])
        normal = torch.distributions.Normal(clean.new_zeros(()), clean.new_ones(()))
        return normal.cdf((clean - threshold) / noise_std).sum(0)

    def _expert(self, number: int, grid: torch.Tensor) -> torch.Tensor:
        """Expert ``number`` on ``n×r×H×W``: rescale the grid, convolve, GELU, back to ``H×W``."""
        scale, conv = self.expert_scales[number], self.experts[number]
        height, width = grid.shape[-2:]
        x = F.interpolate(grid, scale_factor=scale, mode="bicubic", align_corners=False) if scale != 1 else grid
        x = F.gelu(conv(x))
        if x.shape[-2:] != (height, width):
            x = F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False)
        return x

    def _experts(self, grid: torch.Tensor, index: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        if _exporting():
            # every expert on every sample, the chosen one kept by a one-hot weight: no data-dependent indexing, so
            # the network traces and exports (TorchScript, torch.export, ONNX). Same values as the sparse path (the
            # other experts are multiplied by exact zeros), at the cost of all experts: scale 8 alone resizes the
            # grid to 64 times its area, which made a whole-brain scan's two boxes take half again as long.
            weights = F.one_hot(index, self.num_experts).to(grid.dtype)
            weights = weights * gate[:, None] if self.scale_by_gate else weights
            return sum(self._expert(e, grid) * weights[:, e, None, None, None] for e in range(self.num_experts))
        # each expert runs on the samples routed to it only (in training the others get no gradient from it)
        out = torch.zeros_like(grid)
        for e in range(self.num_experts):
            rows = torch.nonzero(index == e, as_tuple=True)[0]
            if rows.numel():
                x = self._expert(e, grid[rows])
                out[rows] = x * gate[rows, None, None, None] if self.scale_by_gate else x
        return out

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.lora_dropout(x) @ self.lora_A.t()
        grid, shape = self._grid(z)
        # padding tokens of windowed attention are exact zeros: keep them out of the routing average
        valid = (x.detach() != 0).any(dim=-1).reshape(grid.shape[0], 1, *grid.shape[-2:]).to(grid.dtype)
        pooled = (grid * valid).sum(dim=(2, 3)) / valid.sum(dim=(2, 3)).clamp_min(1.0)
        index, gate = self._route(pooled)
        self.last_expert_index = index.detach()
        grid = grid + self._experts(grid, index, gate)
        z = grid.permute(0, 2, 3, 1) if len(shape) == 4 else grid.reshape(shape[0], self.rank, -1).transpose(1, 2)
        return self.base_forward(x) + (z @ self.lora_B.t()) * self.scaling

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, rank={self.rank}, alpha={self.alpha}, experts={self.num_experts}, "
            f"scale_by_gate={self.scale_by_gate}"
        )
