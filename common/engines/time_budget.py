"""Stop training when a wall-clock budget is spent: runs compared "under the same budget" get the same minutes."""

from __future__ import annotations

import logging
import time

from ignite.engine import Engine, Events

__all__ = ["TimeBudget"]

logger = logging.getLogger(__name__)


class TimeBudget:
    """Terminate an ignite / MONAI engine after ``minutes`` of wall-clock time, checked after every iteration.

    The current iteration finishes and the engine's normal completion events run (so checkpoint savers and
    validation at completion still happen). Attach with ``TimeBudget(30).attach(trainer)`` or list it among a
    bundle's ``train#handlers``.

    Args:
        minutes: the budget; ``None`` or ≤ 0 disables it.
    """

    def __init__(self, minutes: float | None) -> None:
        self.seconds = None if minutes is None or minutes <= 0 else float(minutes) * 60.0
        self.started: float | None = None

    def attach(self, engine: Engine) -> None:
        if self.seconds is None:
            return
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._check)

    def _start(self, engine: Engine) -> None:
        self.started = time.monotonic()

    def _check(self, engine: Engine) -> None:
        if self.started is not None and time.monotonic() - self.started >= self.seconds:
            logger.info(
                "time budget of %.1f min spent after %d iterations: stopping", self.seconds / 60, engine.state.iteration
            )
            engine.terminate()
