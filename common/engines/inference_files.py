"""What a bundle's ``inference.json`` needs on disk, checked before the network is built: a missing file is one
``error:`` line naming it and the command that gets it, not a traceback through MONAI's config parser."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["require_inference_files"]


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
            f"{backbone_checkpoint}: the backbone's base weights are missing; get them with `python -m monai.bundle "
            f"download_large_files --bundle_path {bundle_root}` (large_files.yml), or choose another backbone "
            "(--backbone litemedsam needs no download)"
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
