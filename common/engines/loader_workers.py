"""The bundles' default number of data-loader worker processes.

On a GPU, loader workers prepare the next batch while the device computes, so a few help. On a CPU they take
cores from the computation itself: on 2 cores one worker process and PyTorch's two threads share the machine, and a
BALR-SAM training iteration on MSD hippocampus took 2.87 s (median; quartiles 1.4–6.1 s) against 1.32 s with the
batch prepared in the training process (``num_workers=0``), 2026-12-06, ``python -m common.benchmark.train_step``
on a 2-core AMD EPYC. The data is cached (``CacheDataset``) and the random transforms left per iteration are cheap,
so they cost the main process less than the contention does.
"""

from __future__ import annotations

import os

import torch

__all__ = ["available_cores", "choose_num_workers"]


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the system reports one, else ``os.cpu_count()``)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def choose_num_workers(device: torch.device | str, cores: int | None = None) -> int:
    """Default ``num_workers`` of the training and validation loaders for ``device``.

    CUDA: ``min(4, cores // 2)``, at least 1. CPU: 0 on 2 cores or fewer (measured above), else ``min(4, cores // 2)``.
    ``cores`` defaults to :func:`available_cores`.
    """
    cores = available_cores() if cores is None else cores
    workers = min(4, max(1, cores // 2))
    if torch.device(device).type == "cuda":
        return workers
    return 0 if cores <= 2 else workers
