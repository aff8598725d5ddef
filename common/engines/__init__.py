"""Additions to MONAI's engines that the bundles need (MONAI's own engines and handlers are used as they are)."""

from .checkpointing import AtomicCheckpointSaver, PrecisionRecord, TrainingCheckpoint, latest_training_state
from .gradient_clipping import GradientClipping
from .inference_files import (
    refuse_untrained_settings,
    require_inference_files,
    require_inputs_and_output,
    untrained_settings,
)
from .loader_workers import available_cores, choose_num_workers
from .precision import SupervisedEvaluator, SupervisedTrainer, autocast, choose_amp, cpu_has_native_bf16
from .prompt_propagation import mask_box, propagate_from_prompts
from .slice_inferer import SliceBatchInferer
from .time_budget import TimeBudget

__all__ = [
    "AtomicCheckpointSaver",
    "GradientClipping",
    "PrecisionRecord",
    "SliceBatchInferer",
    "SupervisedEvaluator",
    "SupervisedTrainer",
    "TimeBudget",
    "TrainingCheckpoint",
    "autocast",
    "available_cores",
    "choose_amp",
    "choose_num_workers",
    "cpu_has_native_bf16",
    "latest_training_state",
    "mask_box",
    "propagate_from_prompts",
    "refuse_untrained_settings",
    "require_inference_files",
    "require_inputs_and_output",
    "untrained_settings",
]
