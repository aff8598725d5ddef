"""What a bundle's ``inference.json`` needs on disk, checked before the network is built: a missing file is one
``error:`` line naming it and the command that gets it, not a traceback through MONAI's config parser."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from common.backbones.official_checkpoints import download_hint

__all__ = ["refuse_untrained_settings", "require_inference_files", "require_inputs_and_output", "untrained_settings"]

logger = logging.getLogger(__name__)


def require_inference_files(
    bundle_root: str | os.PathLike,
    backbone_checkpoint: str | os.PathLike | None,
    weights: str | os.PathLike | None,
) -> None:
    """Stop the run when the base weights or the trained adapter are missing.

    Args:
        bundle_root: the bundle folder (for the commands in the message).
        backbone_checkpoint: the backbone's base weights (``None``: random weights, nothing to check).
        weights: the adapter checkpoint the run loads (``None``: none is loaded).

    Raises:
        SystemExit: with one ``error:`` line listing each missing file and how to get it (exit status 1).
    """
    problems = []
    if backbone_checkpoint is not None and not Path(backbone_checkpoint).is_file():
        problems.append(
            f"{backbone_checkpoint}: the backbone's base weights are missing; get them with "
            f"{download_hint(backbone_checkpoint, bundle_root)}, or choose another backbone (--backbone litemedsam "
            "needs no download)"
        )
    if weights is not None and not Path(weights).is_file():
        problems.append(
            f"{weights}: no trained adapter for this configuration; train it first (`python -m monai.bundle run "
            f"--config_file {Path(bundle_root) / 'configs' / 'train.json'} --bundle_root {bundle_root} --dataset_dir "
            "<your datalist folder>` with the same extra configs) or set --checkpointloader#load_path to one"
        )
    if problems and not (Path(bundle_root) / "configs" / "metadata.json").is_file():
        # the usual cause from outside the bundle: bundle_root "." is the working folder, not the bundle
        problems.append(
            f"the bundle root {str(bundle_root)!r} is not a bundle folder (no configs/metadata.json): run from inside "
            "the bundle or pass --bundle_root <bundle folder> (e.g. --bundle_root bundles/<name>)"
        )
    if problems:
        raise SystemExit("error: " + "; ".join(problems))


def require_inputs_and_output(
    input: str | os.PathLike | None,
    dataset_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    datalist_name: str = "datalist.json",
) -> None:
    """Stop the run before any work when it has nothing to segment or nowhere to write.

    Without this, ``monai.bundle run`` with no ``--input`` and no datalist stopped with a traceback through MONAI's
    config parser, and an ``--output_dir`` that is a file or cannot be written stopped with one *after* the whole
    inference, its results lost.

    Args:
        input: the run's ``--input`` (a scan or a folder; None: the datalist's ``testing`` split is segmented).
        dataset_dir: the folder holding ``datalist_name`` when ``input`` is None.
        output_dir: where the results go (created by the run when absent).

    Raises:
        SystemExit: one ``error:`` line per problem (exit status 1).
    """
    problems = []
    if input is None and not (Path(dataset_dir) / datalist_name).is_file():
        problems.append(
            f"nothing to segment: no --input and no {datalist_name} in --dataset_dir {dataset_dir}; pass --input <a "
            "scan or a folder of scans>, or --dataset_dir <a folder with a datalist.json holding a testing split>"
        )
    output = Path(output_dir)
    existing = next(p for p in (output, *output.parents) if p.exists() or p == Path(p.anchor) or str(p) == ".")
    if existing.exists() and not existing.is_dir():
        where = "is a file" if existing == output else f"is inside {existing}, which is a file"
        problems.append(f"--output_dir {output}: {where}, not a folder")
    elif existing.exists():
        try:  # what the run will do there (os.access is not enough: root passes it on a read-only file system)
            tempfile.TemporaryFile(dir=existing).close()
        except OSError as error:
            problems.append(f"--output_dir {output}: cannot write into {existing} ({error.strerror})")
    if problems:
        raise SystemExit("\n".join(f"error: {p}" for p in problems))


def untrained_settings(
    bundle_root: str | os.PathLike, weights: str | os.PathLike | None, settings: Mapping[str, object]
) -> str | None:
    """One line when ``weights`` is the bundle's shipped adapter and ``settings`` differ from those it was trained
    with (``metadata.json`` ``shipped_adapter``: the file's sha256 and ``trained_with``), else None.

    An adapter run at another input size or intensity setting gives a wrong result without any error (the
    hippocampus adapter at 256² labels 2 voxels); other weights (a user's own training) are not checked.
    """
    metadata = Path(bundle_root) / "configs" / "metadata.json"
    if weights is None or not Path(weights).is_file() or not metadata.is_file():
        return None
    record = json.loads(metadata.read_text()).get("shipped_adapter")
    if not record:
        return None
    if hashlib.sha256(Path(weights).read_bytes()).hexdigest() != record["sha256"]:
        return None  # not the shipped file: its settings are its trainer's business
    differ = {k: v for k, v in record["trained_with"].items() if k in settings and settings[k] != v}
    if not differ:
        return None
    trained = ", ".join(f"{k}={v!r}" for k, v in differ.items())
    asked = ", ".join(f"{k}={settings[k]!r}" for k in differ)
    return (
        f"{weights} was trained with {trained}, not {asked}: its results would be wrong without any error; keep the "
        "trained setting, or set allow_untrained_settings=true to run anyway"
    )


def refuse_untrained_settings(
    bundle_root: str | os.PathLike,
    weights: str | os.PathLike | None,
    settings: Mapping[str, object],
    allow: bool = False,
) -> None:
    """:func:`untrained_settings` for a bundle's ``initialize``: one ``error:`` line and exit status 1, or with
    ``allow`` a warning and the run goes on."""
    problem = untrained_settings(bundle_root, weights, settings)
    if problem and allow:
        logger.warning("%s (allowed)", problem)
    elif problem:
        raise SystemExit(f"error: {problem}")
