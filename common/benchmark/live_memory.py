"""Peak memory of new tensors while a piece of code runs, on any device (CPU included, where torch keeps no
allocator statistics and the process's resident size hides freed-but-kept memory)."""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["LiveTensorMemory"]


class LiveTensorMemory(TorchDispatchMode):
    """Count the bytes of tensor storages that operators allocate inside the ``with`` block, free them when the
    storage dies, and keep the peak: activations, gradients and temporaries of a training step, above the weights
    and optimiser state that existed before.

    Outputs that share an input's storage (views, in-place updates) are not new memory; a storage is counted once.

    Example::

        with LiveTensorMemory() as memory:
            step()
        memory.peak_bytes
    """

    def __init__(self) -> None:
        super().__init__()
        self.current_bytes = 0
        self.peak_bytes = 0
        self._live: set[int] = set()

    def _free(self, key: int, size: int) -> None:
        if key in self._live:
            self._live.discard(key)
            self.current_bytes -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key == 0 or key in inputs or key in self._live:
                continue
            size = storage.nbytes()
            self._live.add(key)
            self.current_bytes += size
            self.peak_bytes = max(self.peak_bytes, self.current_bytes)
            weakref.finalize(storage, self._free, key, size)
        return out
