"""Freezing, trainable groups and parameter accounting."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from torch import nn

from .layer import AdapterLayer

__all__ = ["ParameterReport", "configure_trainable", "parameter_report", "param_matches"]

ADAPTER_GROUP = "adapters"


def param_matches(patterns: Sequence[str], name: str) -> bool:
    """Whether a pattern names the parameter ``name`` itself or a module that contains it.

    Same rule as module targets (full match of the name or a dotted suffix), applied to the parameter name and to
    each of its enclosing module names: ``"norm1"`` selects ``blocks.0.norm1.weight`` and ``blocks.0.norm1.bias``;
    ``"image_encoder.pos_embed"`` selects that one parameter.
    """
    parts = name.split(".")
    prefixes = [".".join(parts[:i]) for i in range(len(parts), 0, -1)]
    return any(re.fullmatch(rf"(?:.*\.)?(?:{p})", prefix) for p in patterns for prefix in prefixes)


@dataclass
class ParameterReport:
    """Parameter counts of a model.

    Attributes:
        total: all parameters.
        trainable: parameters with ``requires_grad``.
        groups: trainable parameters per group (``"adapters"`` and each named extra group).
    """

    total: int
    trainable: int
    groups: dict[str, int] = field(default_factory=dict)

    @property
    def trainable_share(self) -> float:
        """Trainable fraction of all parameters (0-1)."""
        return self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        lines = [f"trainable {self.trainable:,} of {self.total:,} parameters ({100 * self.trainable_share:.3f}%)"]
        lines += [f"  {group}: {count:,}" for group, count in self.groups.items()]
        return "\n".join(lines)


def _adapter_parameter_names(model: nn.Module) -> set[str]:
    names = set()
    for module_name, module in model.named_modules():
        if isinstance(module, AdapterLayer):
            for pname, param in module.named_parameters():
                # the wrapped base weight and bias stay frozen; everything else in the layer is the adapter
                if param is not module.weight and param is not module.bias:
                    names.add(f"{module_name}.{pname}" if module_name else pname)
    return names


def _group_of(name: str, adapter_names: set[str], extra: Mapping[str, Sequence[str]]) -> str | None:
    if name in adapter_names:
        return ADAPTER_GROUP
    for group, patterns in extra.items():
        if param_matches(patterns, name):
            return group
    return None


def configure_trainable(
    model: nn.Module, extra_trainable: Mapping[str, Sequence[str]] | None = None
) -> ParameterReport:
    """Freeze everything except adapter parameters and the named extra groups.

    Args:
        model: a model with adapters injected.
        extra_trainable: ``{group name: [patterns]}`` of further parameters to train (see :func:`param_matches`),
            e.g. ``{"layernorms": ["image_encoder.*norm[12]"], "pos_embed": ["image_encoder.pos_embed"]}``.

    Returns:
        the resulting :class:`ParameterReport`.

    Raises:
        ValueError: an extra group matches no parameter (a typo would otherwise silently train nothing).
    """
    extra = dict(extra_trainable or {})
    adapter_names = _adapter_parameter_names(model)
    for name, param in model.named_parameters():
        param.requires_grad_(_group_of(name, adapter_names, extra) is not None)
    report = parameter_report(model, extra)
    empty = [g for g in extra if report.groups.get(g, 0) == 0]
    if empty:
        raise ValueError(f"trainable groups {empty} match no parameter of {type(model).__name__}")
    return report


def parameter_report(model: nn.Module, extra_trainable: Mapping[str, Sequence[str]] | None = None) -> ParameterReport:
    """Count total and trainable parameters, with trainable ones split by group (unmatched ones under "other")."""
    extra = dict(extra_trainable or {})
    adapter_names = _adapter_parameter_names(model)
    total = trainable = 0
    groups: dict[str, int] = {ADAPTER_GROUP: 0, **{g: 0 for g in extra}}
    for name, param in model.named_parameters():
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
            group = _group_of(name, adapter_names, extra) or "other"
            groups[group] = groups.get(group, 0) + param.numel()
    return ParameterReport(total=total, trainable=trainable, groups=groups)
