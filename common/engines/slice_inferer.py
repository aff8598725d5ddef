"""Run a 2D network over a 3D volume slice by slice, in batches, optionally with neighbouring slices as channels."""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer

__all__ = ["SliceBatchInferer"]


class SliceBatchInferer(Inferer):
    """Segment volumes with a 2D network, ``batch_size`` slices per forward pass; 2D images go straight through.

    MONAI's ``SliceInferer`` runs a sliding window per slice; ours feeds whole slices (the networks resize to their
    backbone's input themselves) and adds the 2.5D mode: with ``context_slices=k`` each slice is given with its
    ``k`` neighbours on each side as extra channels (edge slices repeat the edge), e.g. ``k=1`` turns a grey
    volume into three-channel (previous, current, next) slices for the backbone's RGB input.

    Args:
        spatial_axis: the axis of the ``H×W×D`` spatial dimensions to slice along (0, 1 or 2; 2 = axial after
            ``Orientationd("RAS")``).
        batch_size: slices per forward pass.
        context_slices: neighbours on each side stacked as channels (0 = plain 2D slices).
        progress: show a progress bar over the slice batches.

    Input ``B×C×H×W×D`` (or ``B×C×H×W``, passed to the network as is); output ``B×K×H×W×D`` (or ``B×K×H×W``).
    """

    def __init__(
        self, spatial_axis: int = 2, batch_size: int = 16, context_slices: int = 0, progress: bool = False
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

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
        if inputs.ndim == 4:
            return self._with_metadata(network(inputs, *args, **kwargs), inputs)
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
            logits = network(slices.flatten(0, 1), *args, **kwargs)
            outputs.append(logits.reshape(batch, len(index), *logits.shape[1:]))
        # B×N×K×h×w → B×K×H×W×D
        return self._with_metadata(torch.movedim(torch.cat(outputs, dim=1).movedim(1, 2), 2, axis), inputs)

    @staticmethod
    def _with_metadata(outputs: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """The input's metadata and transform history on the output (as MONAI's own inferers keep them), so that
        ``Invertd`` can undo the preprocessing on the prediction whoever runs the inferer."""
        if not isinstance(inputs, MetaTensor):
            return outputs
        outputs = outputs.as_tensor() if isinstance(outputs, MetaTensor) else outputs
        return MetaTensor(outputs, meta=inputs.meta, applied_operations=inputs.applied_operations)
