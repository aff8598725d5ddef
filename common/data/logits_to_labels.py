"""Network logits → probabilities and one label map, for the three output conventions of the bundles' networks."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from torch import nn

__all__ = ["OUTPUT_RULES", "LogitsToLabelsd", "output_rule_of", "sigmoid_rule"]

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
        if rule not in OUTPUT_RULES:
            raise ValueError(f"rule must be one of {', '.join(OUTPUT_RULES)}, got {rule!r}")
        self.rule = rule
        self.threshold = threshold
        self.probabilities_key = probabilities_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            logits = d[key].float()
            if self.rule == "softmax":
                probabilities = torch.softmax(logits, dim=0)
                labels = probabilities.argmax(dim=0, keepdim=True)
            else:
                probabilities = torch.sigmoid(logits)
                if self.rule == "sigmoid_sum":
                    labels = (probabilities > self.threshold).sum(dim=0, keepdim=True)
                else:
                    best, index = probabilities.max(dim=0, keepdim=True)
                    labels = torch.where(best > self.threshold, index + 1, torch.zeros_like(index))
            d[key] = labels.to(torch.uint8)
            if self.probabilities_key is not None:
                d[self.probabilities_key] = probabilities
        return d
