"""Helpers shared by the package's command-line tools."""

from __future__ import annotations

import json
from collections.abc import Iterable

__all__ = ["parse_config_overrides"]


def parse_config_overrides(items: Iterable[str]) -> dict:
    """``["ID=VALUE", ...]`` (``--set`` options) → ``{ID: VALUE}`` for a bundle config; VALUE is read as JSON when
    it parses (numbers, booleans, lists) and kept as text otherwise (paths, ``$`` expressions)."""
    overrides = {}
    for item in items:
        key, separator, text = item.partition("=")
        if not separator or not key:
            raise ValueError(f"--set expects ID=VALUE, got {item!r}")
        try:
            overrides[key] = json.loads(text)
        except json.JSONDecodeError:
            overrides[key] = text
    return overrides
