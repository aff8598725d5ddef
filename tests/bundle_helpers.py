"""Helpers shared by the bundle tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from monai.bundle import ConfigWorkflow


def bundle_workflow(configs: Path, files: Sequence[str], workflow_type: str, **override) -> ConfigWorkflow:
    """A ``ConfigWorkflow`` over ``files`` of a bundle's ``configs`` folder, with its metadata and logging config."""
    return ConfigWorkflow(
        config_file=[str(configs / f) for f in files],
        meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"),
        workflow_type=workflow_type,
        **override,
    )
