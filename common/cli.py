"""Helpers shared by the package's command-line tools."""

from __future__ import annotations

import argparse
import json

__all__ = ["config_override"]


def config_override(item: str) -> tuple[str, object]:
    """``ID=VALUE`` (a ``--set`` option) → ``(ID, VALUE)`` for a bundle config; VALUE is read as JSON when it parses
    (numbers, booleans, lists) and kept as text otherwise (paths, ``$`` expressions). Use it as the argparse ``type``
    of an ``append`` option, so that a malformed item is reported by argparse, then ``dict(args.set)``."""
    key, separator, text = item.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"--set expects ID=VALUE, got {item!r}")
    try:
        return key, json.loads(text)
    except json.JSONDecodeError:
        return key, text
