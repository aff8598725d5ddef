"""Shared fixtures: CPU threads, the real data folder beside the repository, and cached tiny backbones."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

# CI machines have 2 cores; more threads than cores only adds contention.
torch.set_num_threads(min(2, os.cpu_count() or 1))
warnings.filterwarnings("ignore", category=FutureWarning, module="timm")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the repository; tests that need it are skipped when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it sits beside the repository in CI)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def bundle_copy(request, tmp_path):
    """A copy of the test module's ``BUNDLE`` folder as the working directory, so that ``bundle_root`` stays "."."""
    root = tmp_path / "bundle"
    shutil.copytree(request.module.BUNDLE, root)
    cwd = os.getcwd()
    os.chdir(root)
    yield root
    os.chdir(cwd)
