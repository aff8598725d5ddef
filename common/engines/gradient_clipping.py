"""Gradient-norm clipping for MONAI's ``SupervisedTrainer``, which has no clipping option of its own."""

from __future__ import annotations

import torch
from monai.engines.utils import IterationEvents
from torch import nn

__all__ = ["GradientClipping"]


class GradientClipping:
    """Clip the global gradient norm of the trainable parameters right before each optimiser step.

    Attached to ``IterationEvents.BACKWARD_COMPLETED``. With gradient accumulation it acts only on iterations that
    end with a step (the accumulated gradient is what gets clipped); with AMP it unscales the gradients first, as
    ``torch.amp.GradScaler`` requires.

    Args:
        max_norm: maximum L2 norm of all gradients together (SAM2LoRA: 1.0).

    Usage in a bundle config: ``{"_target_": "common.engines.GradientClipping", "max_norm": 1.0}`` in
    ``train#handlers``.
    """

    def __init__(self, max_norm: float = 1.0) -> None:
        if max_norm <= 0:
            raise ValueError(f"max_norm must be positive, got {max_norm}")
        self.max_norm = max_norm
        self.last_norm: float | None = None

    def attach(self, engine) -> None:
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    @staticmethod
    def _steps_now(engine) -> bool:
        acc = getattr(engine, "accumulation_steps", 1) or 1
        if acc <= 1:
            return True
        epoch_length = engine.state.epoch_length
        local_iter = (engine.state.iteration - 1) % epoch_length if epoch_length else engine.state.iteration - 1
        return (local_iter + 1) % acc == 0 or (epoch_length is not None and local_iter + 1 == epoch_length)

    def __call__(self, engine) -> None:
        if not self._steps_now(engine):
            return
        if getattr(engine, "amp", False) and getattr(engine, "scaler", None) is not None:
            engine.scaler.unscale_(engine.optimizer)
        params = [p for group in engine.optimizer.param_groups for p in group["params"] if p.grad is not None]
        norm = nn.utils.clip_grad_norm_(params, self.max_norm) if params else torch.tensor(0.0)
        self.last_norm = float(norm)
