"""The one layout of the bundles' JSON configs, and a command that writes it.

JSON as ``json.dumps(indent=4)`` writes it, except that a list or object of at most four plain values (strings,
numbers, booleans, null, or lists of them) that fits in 120 characters stays on one line: a transform reads as one
line, and a config's length tracks its content rather than its line breaks. ``tests/test_bundle_family.py`` checks
every config against it; ``python tests/config_format.py bundles/*/configs/*.json`` rewrites files into it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

#: the widest line an inlined list or object may make
LINE_WIDTH = 120
#: the most entries an inlined list or object may have
MAX_INLINE_ENTRIES = 4


def _is_plain(value: Any) -> bool:
    if isinstance(value, list):
        return all(not isinstance(item, (dict, list)) for item in value)
    return not isinstance(value, dict)


def _one_line(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_one_line(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(key)}: {_one_line(item)}" for key, item in value.items()) + "}"
    return json.dumps(value)


def _format(value: Any, indent: int, prefix_width: int) -> str:
    if isinstance(value, (dict, list)) and value and indent > 0 and len(value) <= MAX_INLINE_ENTRIES:
        entries = value.values() if isinstance(value, dict) else value
        if all(_is_plain(entry) for entry in entries):
            line = _one_line(value)
            if indent + prefix_width + len(line) <= LINE_WIDTH:
                return line
    inner = " " * (indent + 4)
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(k)}: {_format(v, indent + 4, len(json.dumps(k)) + 2)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    if isinstance(value, list) and value:
        items = [f"{inner}{_format(v, indent + 4, 0)}" for v in value]
        return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"
    return json.dumps(value)


def format_config(config: Any) -> str:
    """``config`` (parsed JSON) as text in the bundles' layout, ASCII, with a final newline."""
    return _format(config, 0, 0) + "\n"


def main(paths: list[str]) -> int:
    """Rewrite each JSON file in ``paths`` into the layout; print the ones that changed."""
    for name in paths:
        path = Path(name)
        text = path.read_text(encoding="utf-8")
        formatted = format_config(json.loads(text))
        if formatted != text:
            path.write_text(formatted, encoding="utf-8")
            print(f"formatted {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
