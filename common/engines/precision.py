"""One ``amp`` switch for CPU and GPU: bfloat16 autocast on CPUs that compute it natively, where it pays.

MONAI's trainer and evaluator autocast on CUDA only (``torch.autocast("cuda")``). On a CPU with native bfloat16
(``avx512_bf16`` or AMX in its flags) autocast to bfloat16 can halve a LiteMedSAM training step; on CPUs without it,
bfloat16 is emulated and slower, and on some that have it small inputs run faster in float32. So on CPU the bundles'
``amp`` key defaults to :func:`choose_amp`, which measures the bundle's own network both ways once per CPU, network
and input size, and the engines here apply the choice. Weights, optimiser state and the loss stay float32.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
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

# a choice is kept for the process: every engine of a run (training, validation, inference) then agrees
_CHOICES: dict[tuple, bool] = {}


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


def _forward_seconds(network: nn.Module, batch: torch.Tensor, bf16: bool, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats + 1):  # the first pass warms up kernels and caches and is not counted
        started = time.perf_counter()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            network(batch)
        best = min(best, time.perf_counter() - started)
    return best


def choose_amp(
    device: torch.device | str, network: nn.Module | None = None, input_size: int | None = None, repeats: int = 2
) -> bool:
    """The bundles' default ``amp``: True on CUDA; on CPU, True where bfloat16 autocast makes ``network`` faster.

    On a CPU without native bfloat16 the answer is False (said once in the log). With native bfloat16 the
    network's forward pass is timed on a batch of two ``input_size``² grey pictures (default: the network's
    ``input_size``) in float32 and under bfloat16 autocast, and bfloat16 is chosen if it is at least 5 % faster.
    The timing runs in eval mode without gradients and consumes no random numbers; the choice is logged and kept
    for the process. ``MONAI_SAM_PEFT_CPU_PRECISION=float32|bfloat16`` skips the measurement.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    if not cpu_has_native_bf16():
        _log_no_native_bf16()
        return False
    forced = _forced_precision()
    if forced is not None:
        return forced
    if network is None:
        return True
    # a DistributedDataParallel wrapper would synchronise buffers in every timed pass: time the module itself
    network = getattr(network, "module", network)
    size = int(input_size or getattr(network, "input_size", 0) or 256)
    key = (type(network).__qualname__, getattr(getattr(network, "spec", None), "name", None), size)
    if key not in _CHOICES:
        batch = torch.rand(2, 1, size, size, generator=torch.Generator().manual_seed(0))
        was_training = network.training
        network.eval()
        try:
            float32 = _forward_seconds(network, batch, False, repeats)
            bfloat16 = _forward_seconds(network, batch, True, repeats)
        finally:
            network.train(was_training)
        _CHOICES[key] = bfloat16 < 0.95 * float32
        logger.info(
            "CPU precision for %s at %d²: forward %.3f s in float32, %.3f s under bfloat16 autocast -> %s "
            "(set %s to choose)",
            key[1] or key[0], size, float32, bfloat16, "bfloat16" if _CHOICES[key] else "float32", PRECISION_ENV,
        )  # fmt: skip
    return _CHOICES[key]


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
        self.cpu_bf16 = _cpu_bf16(device, amp)
        on_cpu = device is not None and torch.device(device).type == "cpu"
        super().__init__(*args, device=device, amp=bool(amp) and not on_cpu, **kwargs)
        if self.cpu_bf16:
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

    def _iteration(self, engine, batchdata):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cpu_bf16):
            return super()._iteration(engine, batchdata)
