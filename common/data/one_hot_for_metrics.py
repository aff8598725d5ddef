"""Logits and reference → binary channels behind a background channel, by the network's own output rule, so that
one metric definition (``include_background=False``) scores every bundle, head and dataset alike."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.networks.utils import one_hot
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type

from .logits_to_labels import checked_rule, labels_from_probabilities, probabilities_of

__all__ = ["OneHotForMetricsd"]


class OneHotForMetricsd(MapTransform):
    """Turn ``pred`` logits (``K×…``) and ``label`` into ``(C+1)×…`` binary channels, channel 0 the background.

    The prediction is read with the rule the network declares (:data:`~common.data.OUTPUT_RULES`), as inference
    reads it; the reference decides what the channels are:

    - a label map (``1×…`` class values): both become one-hot label maps (softmax heads: argmax; sigmoid heads: the
      most probable class that reaches ``threshold``, as :class:`~common.data.LogitsToLabelsd`);
    - ``K`` binary channels (label groups, e.g. nested optic disc ⊃ cup, or S-SAM's one mask per class): each
      sigmoid channel is thresholded on its own, and both gain a background channel (no channel set).

    MONAI's metrics with ``include_background=False`` then score the same channels as a per-channel metric on
    the ``K`` outputs: a binary head scores the same with its background channel left out.

    Args:
        keys: the prediction key (logits, replaced by the channels).
        rule: the network's output rule.
        label_key: the reference (replaced by its channels).
        threshold: sigmoid probability that counts as foreground.
        probabilities_key: when given, the probabilities (float, ``K×…``) are stored under it, e.g. for
            :class:`~common.data.ProbabilitiesToLabelsd` to write the label map an evaluation saves.
    """

    def __init__(
        self,
        keys: str = "pred",
        rule: str = "softmax",
        label_key: str = "label",
        threshold: float = 0.5,
        probabilities_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.rule = checked_rule(rule)
        self.label_key = label_key
        self.threshold = threshold
        self.probabilities_key = probabilities_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            logits, label = d[key], d[self.label_key]
            probabilities = probabilities_of(torch.as_tensor(logits).float(), self.rule)
            if self.probabilities_key is not None:
                d[self.probabilities_key] = probabilities
            pred, reference = self.channels(probabilities, torch.as_tensor(label))
            d[key] = convert_to_dst_type(pred, logits, dtype=torch.float32)[0]
            d[self.label_key] = convert_to_dst_type(reference, label, dtype=torch.float32)[0]
        return d

    def channels(self, probabilities: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(C+1)×…`` prediction and reference channels of ``K×…`` probabilities (the network's logits through its
        rule, :func:`~common.data.probabilities_of`) and a label map or ``K`` channels."""
        softmax = self.rule == "softmax"
        if label.shape[0] == 1:
            num_channels = probabilities.shape[0] + (0 if softmax else 1)
            labels = labels_from_probabilities(probabilities, self.rule, self.threshold)
            return one_hot(labels, num_channels, dim=0), one_hot(label.round(), num_channels, dim=0)
        if softmax or label.shape[0] != probabilities.shape[0]:
            raise ValueError(
                f"{self.label_key} has {label.shape[0]} channels: expected a label map (1 channel) or one channel per "
                f"sigmoid output ({probabilities.shape[0]}, rule {self.rule!r})"
            )
        foreground = (probabilities >= self.threshold).float()
        reference = (label > 0).float()
        return _with_background(foreground), _with_background(reference)


def _with_background(channels: torch.Tensor) -> torch.Tensor:
    return torch.cat([1 - channels.amax(dim=0, keepdim=True), channels], dim=0)
