"""Run a 2D network over a 3D volume slice by slice, in batches, optionally with neighbouring slices as channels, and
optionally over native-resolution windows of pictures and slices larger than the network's input."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import combinations

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer, sliding_window_inference

from .precision import autocast

__all__ = ["SliceBatchInferer"]


class SliceBatchInferer(Inferer):
    """Segment volumes with a 2D network, ``batch_size`` slices per forward pass; 2D images go straight through.

    MONAI's ``SliceInferer`` runs a sliding window per slice; ours feeds whole slices (the networks resize to their
    backbone's input themselves) and adds the 2.5D mode: with ``context_slices=k`` each slice is given with its
    ``k`` neighbours on each side as extra channels (edge slices repeat the edge), e.g. ``k=1`` turns a grey
    volume into three-channel (previous, current, next) slices for the backbone's RGB input.

    With ``window_size=S``, a picture or slice whose longer side exceeds ``S`` is not shrunk to the backbone's
    input but segmented at its own resolution in ``S×S`` windows (MONAI's ``sliding_window_inference``, Gaussian
    blending, zero padding at the border), as networks trained on native-resolution crops of that size need
    (shrunk to 256², a 999×960 fundus photograph keeps no vessel under four pixels wide at a pixel or more).
    Pictures and slices smaller than a window are zero-padded to it, not enlarged, as those networks' training pads
    them (``SpatialPadd``): the network sees every picture at its own resolution (BALR-SAM's hippocampus adapter,
    trained on 35×51 slices padded to 64×64, segments at 0.70 Dice when the slices are enlarged instead).

    Args:
        spatial_axis: the axis of the ``H×W×D`` spatial dimensions to slice along (0, 1 or 2; 2 = axial after
            ``Orientationd("RAS")``).
        batch_size: slices per forward pass.
        context_slices: neighbours on each side stacked as channels (0 = plain 2D slices).
        progress: show a progress bar over the slice batches (a single picture: over its windows).
        window_size: side of the native-resolution windows, smaller slices padded to it (``None``: whole slices,
            resized by the network).
        window_overlap: overlap of neighbouring windows, a fraction of ``window_size`` in ``[0, 1)``.
        mirror_axes: test-time mirroring, as nnU-Net does it: each slice is also segmented mirrored along every
            combination of these slice axes (0: the slice's first spatial axis, 1: its second) and the logits,
            mirrored back, are averaged; ``(1,)`` costs two passes, ``(0, 1)`` four. ``()``: one pass.
        amp: run the network under the autocast ``amp`` means on the input's device (CUDA: float16; a CPU with
            native bfloat16: bfloat16; otherwise float32, see :func:`common.engines.autocast`); logits come back
            in float32 either way. This is where every inference route (``inference.json``, ``common.segment``,
            MONAI Label) gets its precision.

    Input ``B×C×H×W×D`` (or ``B×C×H×W``, passed to the network as is); output ``B×K×H×W×D`` (or ``B×K×H×W``).
    """

    def __init__(
        self,
        spatial_axis: int = 2,
        batch_size: int = 16,
        context_slices: int = 0,
        progress: bool = False,
        window_size: int | None = None,
        window_overlap: float = 0.25,
        mirror_axes: Sequence[int] = (),
        amp: bool = False,
    ) -> None:
        super().__init__()
        if spatial_axis not in (0, 1, 2):
            raise ValueError(f"spatial_axis must be 0, 1 or 2 (of the H×W×D spatial axes), got {spatial_axis}")
        if batch_size < 1 or context_slices < 0:
            raise ValueError(f"need batch_size ≥ 1 and context_slices ≥ 0, got {batch_size}, {context_slices}")
        self.spatial_axis = spatial_axis
        self.batch_size = int(batch_size)
        self.context_slices = int(context_slices)
        self.progress = progress
        if window_size is not None and window_size < 1:
            raise ValueError(f"window_size must be positive or None, got {window_size}")
        if not 0 <= window_overlap < 1:
            raise ValueError(f"window_overlap must be in [0, 1), got {window_overlap}")
        self.window_size = None if window_size is None else int(window_size)
        self.window_overlap = float(window_overlap)
        if any(axis not in (0, 1) for axis in mirror_axes) or len(set(mirror_axes)) != len(mirror_axes):
            raise ValueError(f"mirror_axes must be distinct slice axes 0 and/or 1, got {list(mirror_axes)}")
        # n×C×h×w tensors: slice axis a is tensor dimension 2 + a; the empty combination is the slice itself
        self.mirrorings = [
            tuple(2 + axis for axis in chosen)
            for count in range(len(mirror_axes) + 1)
            for chosen in combinations(sorted(mirror_axes), count)
        ]
        self.amp = bool(amp)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
        if inputs.ndim == 4:
            return self._with_metadata(self._segment_slices(inputs, network, *args, **kwargs), inputs)
        if inputs.ndim != 5:
            raise ValueError(f"expected B×C×H×W (2D) or B×C×H×W×D (3D) input, got shape {tuple(inputs.shape)}")
        axis = 2 + self.spatial_axis
        # B×C×H×W×D → B×N×C×h×w with N slices along the chosen axis
        volume = torch.movedim(inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs, axis, 1)
        batch, count = volume.shape[:2]
        offsets = torch.arange(-self.context_slices, self.context_slices + 1)
        starts = range(0, count, self.batch_size)
        if self.progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="slices", unit="batch", leave=False)
        outputs = []
        for start in starts:
            index = torch.arange(start, min(start + self.batch_size, count))
            # each slice with its neighbours (edge replicated): n×(2k+1) indices → B×n×(2k+1)·C×h×w
            neighbours = (index[:, None] + offsets[None]).clamp(0, count - 1)
            slices = volume[:, neighbours.flatten()].reshape(batch, len(index), -1, *volume.shape[-2:])
            logits = self._segment_slices(slices.flatten(0, 1), network, *args, **kwargs)
            outputs.append(logits.reshape(batch, len(index), *logits.shape[1:]))
        # B×N×K×h×w → B×K×H×W×D
        return self._with_metadata(torch.movedim(torch.cat(outputs, dim=1).movedim(1, 2), 2, axis), inputs)

    def _segment_slices(self, slices: torch.Tensor, network: Callable[..., torch.Tensor], *args, **kwargs):
        """Logits ``n×K×h×w`` of ``n×C×h×w`` slices: whole, or in native-resolution windows when they are larger."""
        if len(self.mirrorings) > 1 and (args or kwargs):
            # prompts are given in the slice's own coordinates: a mirrored slice would receive them on the wrong side
            raise ValueError("mirror_axes cannot be used with prompts or other network inputs; use mirror_axes=()")
        with autocast(slices.device, self.amp):
            total = 0
            for dims in self.mirrorings:
                mirrored = torch.flip(slices, dims) if dims else slices
                logits = self._segment_slices_at_precision(mirrored, network, *args, **kwargs).float()
                total = total + (torch.flip(logits, dims) if dims else logits)
            return total / len(self.mirrorings)  # exact for one pass: x / 1 == x

    def _segment_slices_at_precision(self, slices: torch.Tensor, network: Callable[..., torch.Tensor], *args, **kwargs):
        if self.window_size is None:
            return network(slices, *args, **kwargs)
        if args or kwargs:
            if max(slices.shape[-2:]) <= self.window_size:
                return network(slices, *args, **kwargs)  # prompts in whole-picture coordinates: no padding
            # prompts are given in whole-picture coordinates: a window would receive points outside it
            raise ValueError("window_size cannot be used with prompts or other network inputs; segment whole slices")
        # smaller slices are zero-padded to one window (MONAI pads them), larger ones covered by several
        return sliding_window_inference(
            slices,
            roi_size=(self.window_size, self.window_size),
            sw_batch_size=self.batch_size,
            predictor=network,
            overlap=self.window_overlap,
            mode="gaussian",
            padding_mode="constant",
            cval=0.0,
            progress=self.progress and slices.shape[0] == 1,  # a large picture: a bar over its windows
        )

    @staticmethod
    def _with_metadata(outputs: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """The input's metadata and transform history on the output (as MONAI's own inferers keep them), so that
        ``Invertd`` can undo the preprocessing on the prediction whoever runs the inferer."""
        if not isinstance(inputs, MetaTensor):
            return outputs
        outputs = outputs.as_tensor() if isinstance(outputs, MetaTensor) else outputs
        return MetaTensor(outputs, meta=inputs.meta, applied_operations=inputs.applied_operations)
