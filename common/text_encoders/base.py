"""The one interface every label-name text encoder implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch

__all__ = ["TextEncoder"]


class TextEncoder(ABC):
    """A frozen text encoder that turns label names into one vector each.

    Networks call :meth:`embed` once, when they are built, and keep the result; the encoder itself is not part of
    the trained model and is never written to checkpoints.

    Attributes:
        dim: length d of each embedding.
        description: what was used (model and weights), for bundle metadata and logs.
    """

    dim: int
    description: str

    @abstractmethod
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed N texts: a float32 CPU tensor ``N×d``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, {self.description})"
