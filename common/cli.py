"""Helpers shared by the package's command-line tools."""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "BUNDLES_ENV",
    "DATA_ENV",
    "bundles_folder",
    "config_override",
    "data_root",
    "errors_as_one_line",
    "refuse_unknown_arguments",
    "unknown_config_id",
]

#: where the commands find the bundles and the datasets when no option names them (a non-editable install has no
#: checkout to look in)
BUNDLES_ENV = "MONAI_SAM_PEFT_BUNDLES"
DATA_ENV = "MONAI_SAM_PEFT_DATA"


def bundles_folder(
    explicit: str | os.PathLike | None = None, option: str = "--bundles <folder holding the bundles>"
) -> Path:
    """The folder holding the bundles: ``explicit`` (a command's ``--bundles``), else ``$MONAI_SAM_PEFT_BUNDLES``,
    else ``bundles/`` in the working folder (the repository root, where the README's commands run).

    Args:
        option: how the calling command lets a user name it, for the error line.

    Raises:
        FileNotFoundError: one line saying which of them was tried and how to give it.
    """
    for value, source in ((explicit, "--bundles"), (os.environ.get(BUNDLES_ENV), BUNDLES_ENV)):
        if value:
            if not Path(value).is_dir():
                raise FileNotFoundError(f"{source} {value}: no such folder (the folder holding the bundles)")
            return Path(value)
    here = Path.cwd() / "bundles"
    if here.is_dir():
        return here
    raise FileNotFoundError(
        f"no bundles folder: give {option}, set {BUNDLES_ENV} (the folder holding the bundles), or run from the "
        "repository root"
    )


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """The folder holding the datasets (``chase_db1/``, ``msd_hippocampus/`` ...): ``explicit`` (``--data_root``),
    else ``$MONAI_SAM_PEFT_DATA``, else ``../shared/data`` from the working folder (the layout of this project's
    checkout). Whether the dataset a command needs is there is checked by the command, which names the option."""
    for value in (explicit, os.environ.get(DATA_ENV)):
        if value:
            return Path(value)
    return Path.cwd().parent / "shared" / "data"


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


_MISSING = object()


def unknown_config_id(parser, config_id: str) -> str | None:
    """None when ``config_id`` names a setting of the parsed bundle configs (``a#b`` for nested ones, ``_meta_#…``
    for metadata), else one line naming it and the closest valid ids: ``unknown setting 'slice_batchsize' (did you
    mean 'slice_batch_size'?)``. A misspelt override would otherwise add a new key that nothing reads."""
    if config_id.startswith("_meta_") or parser.get(config_id, _MISSING) is not _MISSING:
        return None
    parent, _, _ = config_id.rpartition("#")
    siblings = parser.get(parent, {}) if parent else parser.get()
    if isinstance(siblings, dict):
        candidates = [f"{parent}#{key}" if parent else key for key in siblings if not str(key).startswith("_")]
    elif isinstance(siblings, list):
        candidates = [f"{parent}#{index}" for index in range(len(siblings))]
    else:
        candidates = []
    close = difflib.get_close_matches(config_id, candidates, n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    return f"unknown setting {config_id!r}{hint}: the bundle's configs have no such key"


def refuse_unknown_arguments(config_files: Iterable[str] | str | None = None, argv: list[str] | None = None) -> None:
    """For ``python -m monai.bundle run``: end the run with one line on stderr when a ``--name`` argument is neither
    one of MONAI's own ``run`` arguments nor a setting of the configs given with ``--config_file`` (MONAI would add
    it as a new key that nothing reads, and the run would go on without the setting the user meant). Called from a
    bundle's ``initialize``; does nothing when the process is not ``monai.bundle``'s command line (tests, MONAI
    Label, ``common.segment``, which checks its own ``--set``)."""
    import ast
    import inspect

    from monai.bundle import ConfigParser
    from monai.bundle.scripts import run

    argv = sys.argv if argv is None else argv
    if not argv or not argv[0].replace("\\", "/").endswith("monai/bundle/__main__.py"):
        return
    own = set(inspect.signature(run).parameters) - {"override"} | {"workflow_type", "workflow_name"}
    names, config_files = [], config_files
    tokens = argv[1:]
    for index, token in enumerate(tokens):
        if not token.startswith("--"):
            continue
        name, _, value = token[2:].partition("=")
        if not value and index + 1 < len(tokens):
            value = tokens[index + 1]
        if name == "config_file" and config_files is None:
            try:
                config_files = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                config_files = value
        elif name not in own:
            names.append(name)
    if not names or not config_files:
        return
    files = [config_files] if isinstance(config_files, str) else list(config_files)
    parser = ConfigParser()
    parser.read_config([f.strip() for file in files for f in str(file).split(",")])
    problems = [line for line in (unknown_config_id(parser, name) for name in names) if line]
    if problems:
        print(f"error: {problems[0]}", file=sys.stderr)
        raise SystemExit(1)
