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

__all__ = ["AdapterConfig", "LoraConfig"]


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
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")

    def create_layer(self, base_layer: nn.Module) -> AdapterLayer:
        from .lora import LoraLinear

        return LoraLinear(base_layer, rank=self.rank, alpha=self.alpha, dropout=self.dropout)
