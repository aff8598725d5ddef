"""Helpers shared by the package's command-line tools."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["config_override", "errors_as_one_line"]


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


@contextmanager
def errors_as_one_line(errors: tuple[type[BaseException], ...] = (OSError, ValueError)) -> Iterator[None]:
    """Around the work of a command: an expected error about the user's data or paths (a missing folder, a bad
    layout, an unwritable output) ends the command with ``error: <message>`` on stderr and exit status 1, as
    ``common.segment`` does, instead of a traceback that buries the message. Anything else still raises."""
    try:
        yield
    except errors as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
