"""Network logits → probabilities and one label map, for the three output conventions of the bundles' networks."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type
from torch import nn

__all__ = [
    "OUTPUT_RULES",
    "LogitsToLabelsd",
    "ProbabilitiesToLabelsd",
    "checked_rule",
    "labels_from_probabilities",
    "output_rule_of",
    "probabilities_of",
    "sigmoid_rule",
]

OUTPUT_RULES = ("softmax", "sigmoid_argmax", "sigmoid_sum")


def output_rule_of(network: nn.Module) -> str:
    """The output rule a network declares (its ``output_rule``; through DDP's ``module`` wrapper), checked against
    :data:`OUTPUT_RULES`: what every inference config reads instead of restating it."""
    inner = getattr(network, "module", network)
    rule = getattr(inner, "output_rule", None)
    if rule is None:
        raise ValueError(
            f"{type(inner).__name__} declares no output_rule: give the config's output_rule "
            f"(one of {', '.join(OUTPUT_RULES)})"
        )
    if rule not in OUTPUT_RULES:
        raise ValueError(f"{type(inner).__name__}.output_rule must be one of {', '.join(OUTPUT_RULES)}, got {rule!r}")
    return rule


def checked_rule(rule: str) -> str:
    """``rule`` if it is one of :data:`OUTPUT_RULES`; a ValueError naming them otherwise."""
    if rule not in OUTPUT_RULES:
        raise ValueError(f"rule must be one of {', '.join(OUTPUT_RULES)}, got {rule!r}")
    return rule


def probabilities_of(logits: torch.Tensor, rule: str) -> torch.Tensor:
    """``K×…`` probabilities of ``K×…`` logits by one of :data:`OUTPUT_RULES`: a softmax over the channels for
    ``"softmax"`` heads, each channel's own sigmoid for the sigmoid rules."""
    return torch.softmax(logits, dim=0) if checked_rule(rule) == "softmax" else torch.sigmoid(logits)


def sigmoid_rule(label_groups: Sequence[Sequence[int]]) -> str:
    """The sigmoid rule for one output channel per label group: ``"sigmoid_sum"`` when each group holds the next
    (nested structures: optic disc ⊃ cup, so label = how many channels pass), else ``"sigmoid_argmax"``."""
    groups = [set(group) for group in label_groups]
    nested = len(groups) > 1 and all(outer > inner for outer, inner in zip(groups, groups[1:]))
    return "sigmoid_sum" if nested else "sigmoid_argmax"


class LogitsToLabelsd(MapTransform):
    """Turn ``K×…`` logits into a ``1×…`` uint8 label map (0 = background), keeping the probabilities on request.

    Rules (``rule``):
        - ``"softmax"``: channel 0 is background (multi-class heads with K+1 outputs); label = argmax.
        - ``"sigmoid_argmax"``: one independent sigmoid per class (binary heads, S-SAM's per-class masks); label =
          1 + the most probable class, or 0 where none reaches ``threshold``.
        - ``"sigmoid_sum"``: nested classes (SAM2LoRA's optic disc ⊃ cup); label = how many channels pass
          ``threshold`` (disc 1, cup 2).

    Args:
        keys: the logits key (replaced by the label map).
        rule: one of the rules above.
        threshold: sigmoid probability that counts as foreground.
        probabilities_key: when given, the probabilities (float, ``K×…``) are stored under it.
    """

    def __init__(
        self,
        keys: KeysCollection,
        rule: str = "sigmoid_argmax",
        threshold: float = 0.5,
        probabilities_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.rule = checked_rule(rule)
        self.threshold = threshold
        self.probabilities_key = probabilities_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            logits = d[key].float()
            probabilities = probabilities_of(logits, self.rule)
            d[key] = labels_from_probabilities(probabilities, self.rule, self.threshold)
            if self.probabilities_key is not None:
                d[self.probabilities_key] = probabilities
        return d


def labels_from_probabilities(probabilities: torch.Tensor, rule: str, threshold: float = 0.5) -> torch.Tensor:
    """``1×…`` uint8 label map of ``K×…`` probabilities by one of :data:`OUTPUT_RULES` (see :class:`LogitsToLabelsd`)."""
    if checked_rule(rule) == "softmax":
        labels = probabilities.argmax(dim=0, keepdim=True)
    elif rule == "sigmoid_sum":
        labels = (probabilities > threshold).sum(dim=0, keepdim=True)
    else:
        best, index = probabilities.max(dim=0, keepdim=True)
        labels = torch.where(best > threshold, index + 1, torch.zeros_like(index))
    return labels.to(torch.uint8)


class ProbabilitiesToLabelsd(MapTransform):
    """Take the label map again from probabilities that were resampled back to the input's size.

    A fundus picture is segmented at the training pictures' scale (an HRF picture at ×0.28) and its results are
    resampled back to the picture's size. A label map resampled by nearest neighbour keeps the reduced grid's steps
    (a 2-pixel vessel comes back 7 pixels wide or not at all); probabilities resampled smoothly and thresholded at
    the input's size follow the vessel's edges (HRF validation pictures: Dice 0.754 → 0.765 with the same adapter).

    Args:
        keys: the probabilities key (``K×…``, as :class:`LogitsToLabelsd` stored them, resampled back).
        labels_key: the label map to replace (its metadata is kept).
        rule: the network's output rule (:data:`OUTPUT_RULES`).
        threshold: sigmoid probability that counts as foreground.
    """

    def __init__(
        self,
        keys: KeysCollection,
        labels_key: str = "pred",
        rule: str = "sigmoid_argmax",
        threshold: float = 0.5,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.labels_key = labels_key
        self.rule = checked_rule(rule)
        self.threshold = threshold

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            labels = labels_from_probabilities(torch.as_tensor(d[key]).float(), self.rule, self.threshold)
            previous = d[self.labels_key]
            if tuple(previous.shape[1:]) != tuple(labels.shape[1:]):
                raise ValueError(f"{key} {tuple(d[key].shape)} and {self.labels_key} {tuple(previous.shape)} differ")
            d[self.labels_key] = convert_to_dst_type(labels, previous, dtype=labels.dtype)[0]  # keeps its metadata
        return d
