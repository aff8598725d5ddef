"""Training checkpoints that survive a crash: atomic writes, the full training state, and resuming from it.

A bundle's ``train.json`` saves ``models/training_state_*.pt`` (adapter weights, optimiser, LR scheduler, AMP
scaler, trainer counters and the best validation score so far) every ``checkpoint_interval`` epochs, and with
``resume`` set it continues from the newest one. Every file, including the best model ``model.pt``, is written to a
temporary file and renamed into place, so a crash never leaves a truncated checkpoint under the real name.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointLoader, CheckpointSaver

__all__ = [
    "AtomicCheckpointSaver",
    "BestMetricRecord",
    "PrecisionRecord",
    "TrainingCheckpoint",
    "latest_training_state",
]

logger = logging.getLogger(__name__)

TRAINING_STATE_PREFIX = "training_state"


class _AtomicDiskSaver(DiskSaver):
    """Ignite's atomic ``DiskSaver`` (temporary file, then ``os.replace``) with MONAI's fixed-file-name option."""

    def __init__(self, dirname: str, filename: str | None = None) -> None:
        super().__init__(dirname=dirname, require_empty=False, atomic=True)
        self.filename = filename

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        super().__call__(checkpoint, self.filename or filename, metadata)

    def remove(self, filename: str) -> None:
        # a fixed name is about to be replaced atomically: deleting it first would open a window without any file
        if self.filename is None:
            super().remove(filename)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` (same arguments) writing every file atomically.

    MONAI's saver writes in place (``atomic=False``), so a crash while saving leaves a corrupt ``model.pt``; here
    each file is serialised to a temporary file in the same folder and renamed over the old one.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                checkpoint.save_handler = _AtomicDiskSaver(self.save_dir, checkpoint.save_handler.filename)


class BestMetricRecord:
    """The evaluator's best key metric as a state-dict-able object, so that a resumed run compares new validation
    scores with the best one before the interruption (and the best-model saver does not overwrite ``model.pt``
    with a worse model).

    Args:
        evaluator: the MONAI evaluator (its ``state.best_metric`` / ``best_metric_epoch``).
        best_model_saver: the ``CheckpointSaver`` that keeps the best model under a fixed file name.
    """

    def __init__(self, evaluator: Engine, best_model_saver: CheckpointSaver | None = None) -> None:
        self.evaluator = evaluator
        self.best_model_saver = best_model_saver

    def state_dict(self) -> dict:
        state = self.evaluator.state
        return {"best_metric": float(state.best_metric), "best_metric_epoch": int(state.best_metric_epoch)}

    def load_state_dict(self, state_dict: Mapping) -> None:
        self.evaluator.state.best_metric = float(state_dict["best_metric"])
        self.evaluator.state.best_metric_epoch = int(state_dict["best_metric_epoch"])
        saver = self.best_model_saver
        checkpoint = getattr(saver, "_key_metric_checkpoint", None)
        if checkpoint is not None and state_dict["best_metric_epoch"] > 0:
            filename = checkpoint.save_handler.filename or "model.pt"
            # the record ignite's Checkpoint keeps of what it saved (its state_dict format)
            checkpoint.load_state_dict({"_saved": [(float(state_dict["best_metric"]), filename)]})


class PrecisionRecord:
    """The CPU precision a training run computes in (bfloat16 autocast or float32), as a state-dict-able object, so
    that a resumed run keeps it: a run that switched precision half-way would mix two numerics in one model.

    On resume the recorded precision is applied to the trainer and to the validation evaluator, and a difference
    from this process's own choice is logged; an explicit ``MONAI_SAM_PEFT_CPU_PRECISION`` wins over the record
    (with a warning that the run changes precision). CUDA runs record nothing to keep (MONAI's own autocast).

    Args:
        trainer: the ``common.engines.SupervisedTrainer`` (its ``cpu_bf16``).
        evaluator: the validation ``common.engines.SupervisedEvaluator``, if any.
    """

    def __init__(self, trainer: Engine, evaluator: Engine | None = None) -> None:
        self.trainer = trainer
        self.evaluator = evaluator

    def state_dict(self) -> dict:
        return {"cpu_bfloat16": bool(getattr(self.trainer, "cpu_bf16", False))}

    def load_state_dict(self, state_dict: Mapping) -> None:
        from .precision import PRECISION_ENV, _forced_precision, cpu_has_native_bf16

        recorded = bool(state_dict["cpu_bfloat16"])
        current = bool(getattr(self.trainer, "cpu_bf16", False))
        if recorded == current or torch.device(self.trainer.state.device or "cpu").type != "cpu":
            return
        names = {True: "bfloat16", False: "float32"}
        if _forced_precision() is not None:
            logger.warning(
                "the training state was computed in %s; %s makes the resumed run %s", names[recorded],
                PRECISION_ENV, names[current],
            )  # fmt: skip
            return
        for engine in (self.trainer, self.evaluator):
            if engine is not None and hasattr(engine, "set_cpu_bf16"):
                engine.set_cpu_bf16(recorded)
        logger.info(
            "resumed in %s, the precision the training state was computed in (this process would choose %s%s)",
            names[recorded], names[current], "" if cpu_has_native_bf16() or not recorded else
            "; this CPU emulates bfloat16, which is slower",
        )  # fmt: skip


def latest_training_state(folder: str | Path, prefix: str = TRAINING_STATE_PREFIX) -> Path | None:
    """The newest ``<prefix>_*=<number>.pt`` in ``folder`` (by its epoch number), or None."""
    found = []
    for path in Path(folder).glob(f"{prefix}_*.pt"):
        match = re.search(r"=(\d+)\.pt$", path.name)
        if match:
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


class TrainingCheckpoint:
    """Save the whole training state every ``interval_epochs`` epochs and, with ``resume``, continue from the newest
    one when the trainer starts. List it first among a bundle's ``train#handlers``.

    The state: adapter-only weights (``AdapterStateView``), optimiser, LR scheduler, the AMP gradient scaler when
    AMP is on, the CPU precision (``PrecisionRecord``), the trainer's epoch and iteration counters, and the best
    validation score (so that the best-model
    saver keeps comparing against the best before the interruption). Only the newest file is kept; files are
    written atomically (and in distributed runs by rank 0 only). A resumed run continues after the last saved
    epoch; the random streams (shuffling, augmentation) are not restored, so it ends close to, not equal to, an
    uninterrupted run.

    Args:
        save_dir: folder of ``training_state_checkpoint_epoch=<n>.pt`` (the bundle's ``models/``).
        network, optimizer, lr_scheduler: what the trainer trains with.
        evaluator: the validation evaluator (its best key metric is part of the state).
        best_model_saver: the evaluator's best-model ``CheckpointSaver``.
        interval_epochs: epochs between saves (0 disables saving).
        resume: load the newest state at start (if there is one).
    """

    def __init__(
        self,
        save_dir: str | Path,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        lr_scheduler: Any = None,
        evaluator: Engine | None = None,
        best_model_saver: CheckpointSaver | None = None,
        interval_epochs: int = 1,
        resume: bool = False,
    ) -> None:
        self.save_dir = Path(save_dir)
        self.objects: dict[str, Any] = {"optimizer": optimizer}
        if lr_scheduler is not None:
            self.objects["lr_scheduler"] = lr_scheduler
        if evaluator is not None:
            self.objects["best_metric"] = BestMetricRecord(evaluator, best_model_saver)
        self.evaluator = evaluator
        self.network = network
        self.best_model_saver = best_model_saver
        self.interval_epochs = int(interval_epochs)
        self.resume = resume
        self._resumed_from: Path | None = None

    def state(self, trainer: Engine) -> dict[str, Any]:
        """The objects saved and loaded, by name."""
        from common.adapters import AdapterStateView

        state = {
            "model": AdapterStateView(self.network),
            "trainer": trainer,
            "precision": PrecisionRecord(trainer, self.evaluator),
            **self.objects,
        }
        if getattr(trainer, "scaler", None) is not None:
            state["scaler"] = trainer.scaler
        return state

    def attach(self, engine: Engine) -> None:
        if self.resume:
            engine.add_event_handler(Events.STARTED, self._resume)
        # before the other handlers' (MONAI's StatsHandler logs the whole traceback): Ctrl-C is one line
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._stopped)
        if self.best_model_saver is not None:
            engine.add_event_handler(Events.STARTED, self._keep_earlier_model)  # after _resume: it knows the run
            engine.add_event_handler(Events.COMPLETED, self._save_last_if_never_validated)
        if self.interval_epochs > 0:
            # attached when the run starts, i.e. after every other handler: the state is then saved once the epoch's
            # LR-scheduler step and validation are done (saved before them, a resumed run would miss them)
            engine.add_event_handler(Events.STARTED, self._attach_saver)

    def _attach_saver(self, engine: Engine) -> None:
        engine.remove_event_handler(self._attach_saver, Events.STARTED)
        AtomicCheckpointSaver(
            save_dir=str(self.save_dir),
            save_dict=self.state(engine),
            file_prefix=TRAINING_STATE_PREFIX,
            save_interval=self.interval_epochs,
            epoch_level=True,
            n_saved=1,
        ).attach(engine)

    def _stopped(self, engine: Engine, error: BaseException) -> None:
        """Ctrl-C (or SIGTERM turned into ``SystemExit``) ends training with one line saying what is kept and how
        to continue, and the shell's exit status; any other error goes on to the other handlers as before."""
        if not isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise error
        newest = latest_training_state(self.save_dir)
        kept = f"the newest training state is {newest}" if newest is not None else "no training state was saved yet"
        print(
            f"training stopped at epoch {engine.state.epoch}, iteration {engine.state.iteration}: {kept}; run the "
            "same command with --resume True to continue",
            file=sys.stderr,
        )
        code = error.code if isinstance(error, SystemExit) and isinstance(error.code, int) else 130
        raise SystemExit(code) from None

    def _best_model_path(self) -> Path | None:
        saver = self.best_model_saver
        checkpoint = getattr(saver, "_key_metric_checkpoint", None)  # MONAI keeps the fixed file name only there
        name = getattr(getattr(checkpoint, "save_handler", None), "filename", None)
        return Path(getattr(saver, "save_dir", self.save_dir)) / name if name else None

    def _keep_earlier_model(self, engine: Engine) -> None:
        """A new run (not a resumed one) must not replace the adapter already in ``models/`` (a bundle's shipped
        ``model.pt``, or an earlier run's best) without a word: it is renamed to ``model_before_training.pt``
        (``_2``, ``_3``… if taken) before the run can write its own, and both names are logged."""
        path = self._best_model_path()
        if path is None or self._resumed_from is not None or not path.exists() or idist.get_rank() > 0:
            return
        kept = path.with_name(f"{path.stem}_before_training{path.suffix}")
        number = 2
        while kept.exists():
            kept = path.with_name(f"{path.stem}_before_training_{number}{path.suffix}")
            number += 1
        path.rename(kept)
        logger.warning(
            "%s (the adapter there before this training run) is kept as %s; this run writes its best model "
            "(float32, adapter-only) to %s",
            path, kept.name, path.name,
        )  # fmt: skip

    def _save_last_if_never_validated(self, engine: Engine) -> None:
        """A run that ends before its first validation (fewer epochs than ``val_interval``, or no validation data)
        would leave no best model, or an older run's (or the shipped) file that these weights do not match: write
        the last weights there instead, and say so. A resumed run keeps the best model of before its interruption."""
        checkpoint = getattr(self.best_model_saver, "_key_metric_checkpoint", None)
        path = self._best_model_path()
        if path is None or idist.get_rank() > 0:
            return
        if checkpoint is not None and checkpoint.last_checkpoint is not None:
            return  # validation saved a best model in this run
        if self._resumed_from is not None and path.exists():
            return
        from common.adapters import save_adapter_checkpoint

        save_adapter_checkpoint(self.network, path)
        logger.warning(
            "training ended before any validation chose a best model: %s holds the last weights (epoch %d); validate "
            "more often (val_interval) or give validation data to keep the best one",
            path,
            engine.state.epoch,
        )

    def _resume(self, engine: Engine) -> None:
        path = latest_training_state(self.save_dir)
        if path is None:
            logger.info("resume: no training state in %s, starting from the beginning", self.save_dir)
            return
        state = self.state(engine)
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if "precision" not in saved:  # written before the precision was recorded: the process's choice stands
            del state["precision"]
        # MONAI's loader reads with weights_only=True and keeps the trainer's own max_epochs
        CheckpointLoader(load_path=str(path), load_dict=state, map_location="cpu")(engine)
        self._resumed_from = path
        logger.info(
            "resumed from %s: epoch %d, iteration %d done", path.name, engine.state.epoch, engine.state.iteration
        )
