"""Adapter configurations: what to adapt (target patterns) and with which hyper-parameters.

Kept apart from the layers (``lora.py``, ...) and from the injection (``inject.py``), as in peft's ``tuners``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from .layer import AdapterLayer

__all__ = ["AdapterConfig", "BottleneckConfig", "ConvLoraConfig", "LoraConfig", "SvdConfig"]


def _check_rank(adapter: str, rank: object) -> None:
    """A rank is a whole number ≥ 1; a config or command-line value such as ``"abc"`` or ``4.5`` is named as such
    instead of failing later inside a comparison or a tensor shape."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"{adapter} rank must be a whole number >= 1, got {rank!r}")


@dataclass
class AdapterConfig(ABC):
    """Base of every adapter configuration.

    Attributes:
        target_modules: regular expressions; a module is adapted when a pattern matches its full dotted name or a
            dotted suffix of it (``"attn.qkv"`` matches ``image_encoder.blocks.3.attn.qkv``), see
            :func:`common.adapters.inject.name_matches`.
        exclude_modules: patterns (same rule) of modules never adapted even if a target pattern matches.
    """

    target_modules: list[str] = field(default_factory=list)
    exclude_modules: list[str] = field(default_factory=list)

    #: module types this adapter can wrap
    supported_types: tuple[type[nn.Module], ...] = field(default=(nn.Linear,), init=False, repr=False)

    @abstractmethod
    def create_layer(self, base_layer: nn.Module) -> AdapterLayer:
        """Wrap a frozen ``base_layer`` in the adapter layer this configuration describes."""


@dataclass
class LoraConfig(AdapterConfig):
    """Low-rank adaptation (Hu et al., 2021): ``h = W₀x + (alpha/rank)·B·A·dropout(x)``.

    Attributes:
        rank: bottleneck width r.
        alpha: scale numerator; the update is scaled by ``alpha / rank``.
        dropout: dropout on the adapter input only.
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _check_rank("LoRA", self.rank)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")

    def create_layer(self, base_layer: nn.Module) -> AdapterLayer:
        from .lora import LoraLinear

        return LoraLinear(base_layer, rank=self.rank, alpha=self.alpha, dropout=self.dropout)


@dataclass
class ConvLoraConfig(AdapterConfig):
    """Conv-LoRA (Zhong et al., ICLR 2024): LoRA with a mixture of convolutional experts in the bottleneck.

    Attributes:
        rank, alpha, dropout: LoRA hyper-parameters (paper: rank 3, alpha 32).
        expert_scales: resize factor of each expert; E = len(expert_scales) (paper: 1..8).
        scale_by_gate: scale the chosen expert by its gate probability (False: reference behaviour).
        balance_weight: weight of each layer's load-balancing loss (paper: 0.01).
    """

    rank: int = 3
    alpha: float = 32.0
    dropout: float = 0.0
    expert_scales: tuple[float, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
    scale_by_gate: bool = False
    balance_weight: float = 0.01

    def __post_init__(self) -> None:
        _check_rank("Conv-LoRA", self.rank)
        if not self.expert_scales:
            raise ValueError("Conv-LoRA needs at least one expert scale")
        if not isinstance(self.scale_by_gate, bool):
            # a command-line override such as `--scale_by_gate false` arrives as the (truthy) string 'false'
            raise TypeError(
                f"scale_by_gate must be True or False, got {self.scale_by_gate!r} "
                "(on the command line write --scale_by_gate True / False, capitalised)"
            )

    def create_layer(self, base_layer: nn.Module) -> AdapterLayer:
        from .conv_lora import ConvLoraLinear

        return ConvLoraLinear(
            base_layer,
            rank=self.rank,
            alpha=self.alpha,
            dropout=self.dropout,
            expert_scales=tuple(self.expert_scales),
            scale_by_gate=self.scale_by_gate,
            balance_weight=self.balance_weight,
        )


@dataclass
class SvdConfig(AdapterConfig):
    """Singular-value tuning (S-SAM): a trainable scale and shift per singular value of each targeted weight.

    Attributes:
        regularization_weight: weight of ``‖1 − scale‖₁ + ‖shift‖₁`` (S-SAM: 0).
    """

    regularization_weight: float = 0.0
    supported_types: tuple[type[nn.Module], ...] = field(default=(nn.Linear, nn.Conv2d), init=False, repr=False)

    def create_layer(self, base_layer: nn.Module) -> AdapterLayer:
        from .svd import SvdLayer

        return SvdLayer(base_layer, regularization_weight=self.regularization_weight)


@dataclass
class BottleneckConfig(AdapterConfig):
    """Sequential bottleneck adapters (Houlsby et al., 2019) on the output of the targeted linear layers.

    Attributes:
        rank: bottleneck width r.
        dropout: dropout on the adapter branch input.
    """

    rank: int = 32
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _check_rank("bottleneck", self.rank)

    def create_layer(self, base_layer: nn.Module) -> AdapterLayer:
        from .bottleneck import BottleneckAdapterLinear

        return BottleneckAdapterLinear(base_layer, rank=self.rank, dropout=self.dropout)
