"""One ``amp`` switch for CPU and GPU: bfloat16 autocast on CPUs that compute it natively.

MONAI's trainer and evaluator autocast on CUDA only (``torch.autocast("cuda")``). On a CPU with native bfloat16
(``avx512_bf16`` or AMX in its flags) autocast to bfloat16 halves a LiteMedSAM forward pass (measured 0.49–0.75× the
float32 time at 64²–256², batches of 2 and 16, 2026-12-05, on a 2-core AMD EPYC with ``avx512_bf16``); on CPUs
without it, bfloat16 is emulated and slower. So on CPU the bundles' ``amp`` key defaults to :func:`choose_amp`,
which decides from the CPU's capability alone: the same command on the same machine always runs at the same
precision and writes the same files (a choice made by timing flipped from run to run on a busy machine). The
engines here apply it; weights, optimiser state and the loss stay float32, and a training state records it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable

import torch
from monai.engines import SupervisedEvaluator as _MonaiSupervisedEvaluator
from monai.engines import SupervisedTrainer as _MonaiSupervisedTrainer
from torch import nn

__all__ = [
    "PRECISION_ENV",
    "SupervisedEvaluator",
    "SupervisedTrainer",
    "autocast",
    "choose_amp",
    "cpu_flags",
    "cpu_has_native_bf16",
    "cpu_info",
]

logger = logging.getLogger(__name__)

#: Environment variable that forces the CPU precision: ``float32`` or ``bfloat16`` (unset: measure).
PRECISION_ENV = "MONAI_SAM_PEFT_CPU_PRECISION"

@functools.lru_cache(maxsize=1)
def cpu_info() -> dict[str, str]:
    """The fields of the first processor in ``/proc/cpuinfo`` (``"model name"``, ``"flags"``, …); empty where
    there is no such file (e.g. macOS)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if not line.strip():
                    break  # the end of the first processor's block
                name, _, value = line.partition(":")
                fields[name.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_flags() -> frozenset[str]:
    """The CPU feature flags (``/proc/cpuinfo``; empty where there is none)."""
    return frozenset(cpu_info().get("flags", "").split())


def cpu_has_native_bf16() -> bool:
    """Whether the CPU computes bfloat16 in hardware (AVX-512 BF16 or AMX); without it PyTorch emulates it."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


@functools.lru_cache(maxsize=1)
def _log_no_native_bf16() -> None:
    logger.info("this CPU has no native bfloat16 (no avx512_bf16 / amx_bf16 flag): amp stays float32 on CPU")


def _forced_precision() -> bool | None:
    value = os.environ.get(PRECISION_ENV, "").strip().lower()
    if not value:
        return None
    if value not in ("float32", "bfloat16"):
        raise ValueError(f"{PRECISION_ENV} must be 'float32' or 'bfloat16', got {value!r}")
    return value == "bfloat16"


def choose_amp(device: torch.device | str) -> bool:
    """The bundles' default ``amp``: True on CUDA; on CPU, True where the CPU computes bfloat16 natively.

    Deterministic: the CPU's flags decide (without native bfloat16 it is False, said once in the log), or
    ``MONAI_SAM_PEFT_CPU_PRECISION=float32|bfloat16`` where it is set. The choice is logged once per process.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    forced = _forced_precision()
    if forced is not None:
        _log_choice("bfloat16" if forced else "float32", f"set by {PRECISION_ENV}")
        return forced
    if not cpu_has_native_bf16():
        _log_no_native_bf16()
        return False
    _log_choice("bfloat16", f"this CPU computes bfloat16 natively; {PRECISION_ENV}=float32 chooses float32")
    return True


@functools.lru_cache(maxsize=None)
def _log_choice(precision: str, why: str) -> None:
    logger.info("CPU precision: %s autocast (%s)", precision, why)


def autocast(device: torch.device | str, enabled: bool) -> contextlib.AbstractContextManager:
    """The autocast context ``amp=enabled`` means on ``device``: CUDA's default (float16), bfloat16 on a CPU that
    has it natively, and nothing otherwise (float32)."""
    device = torch.device(device)
    if enabled and device.type == "cuda":
        return torch.autocast("cuda")
    if _cpu_bf16(device, enabled):
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class _Float32Loss(nn.Module):
    """Evaluates a loss in float32 whatever autocast the iteration runs under (a bfloat16 Dice or focal term loses
    the small differences training follows)."""

    def __init__(self, loss: Callable) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, *args, **kwargs):
        with torch.autocast("cpu", enabled=False):
            return self.loss(*_to_float(args), **_to_float(kwargs))


def _to_float(value):
    """Floating tensors in ``value`` (nested in tuples, lists and dicts, e.g. Conv-LoRA's class and mask logits) as
    float32; anything else as it is."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, dict):
        return {key: _to_float(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_to_float(item) for item in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    return value


def _cpu_bf16(device, amp: bool) -> bool:
    """Whether ``amp`` on ``device`` means bfloat16 autocast on the CPU (False on CUDA: MONAI's own path)."""
    if not amp or device is None or torch.device(device).type != "cpu":
        return False
    if not cpu_has_native_bf16():
        _log_no_native_bf16()
        return False
    return True


class SupervisedTrainer(_MonaiSupervisedTrainer):
    """MONAI's ``SupervisedTrainer`` whose ``amp`` also works on CPU (bfloat16 autocast, see :func:`autocast`).

    On CUDA it is MONAI's trainer unchanged (autocast + gradient scaler). On CPU with ``amp=True`` each iteration
    (forward, loss, backward) runs under bfloat16 autocast with the loss in float32; no gradient scaler is needed
    (bfloat16 has float32's exponent range). On a CPU without native bfloat16 ``amp`` is float32. Arguments: those
    of ``monai.engines.SupervisedTrainer``.
    """

    def __init__(self, *args, device: torch.device | str | None = None, amp: bool = False, **kwargs) -> None:
        on_cpu = device is not None and torch.device(device).type == "cpu"
        super().__init__(*args, device=device, amp=bool(amp) and not on_cpu, **kwargs)
        self.set_cpu_bf16(_cpu_bf16(device, amp))

    def set_cpu_bf16(self, enabled: bool) -> None:
        """Compute the iterations under bfloat16 autocast (True) or in float32 (a resumed run's recorded choice)."""
        self.cpu_bf16 = bool(enabled)
        if self.cpu_bf16 and not isinstance(self.loss_function, _Float32Loss):
            self.loss_function = _Float32Loss(self.loss_function)

    def _iteration(self, engine, batchdata):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cpu_bf16):
            return super()._iteration(engine, batchdata)


class SupervisedEvaluator(_MonaiSupervisedEvaluator):
    """MONAI's ``SupervisedEvaluator`` whose ``amp`` also works on CPU (bfloat16 autocast, see :func:`autocast`);
    on CUDA unchanged. Arguments: those of ``monai.engines.SupervisedEvaluator``."""

    def __init__(self, *args, device: torch.device | str | None = None, amp: bool = False, **kwargs) -> None:
        self.cpu_bf16 = _cpu_bf16(device, amp)
        on_cpu = device is not None and torch.device(device).type == "cpu"
        super().__init__(*args, device=device, amp=bool(amp) and not on_cpu, **kwargs)

    def set_cpu_bf16(self, enabled: bool) -> None:
        """Compute the iterations under bfloat16 autocast (True) or in float32 (a resumed run's recorded choice)."""
        self.cpu_bf16 = bool(enabled)

    def _iteration(self, engine, batchdata):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cpu_bf16):
            return super()._iteration(engine, batchdata)
