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
# The bundles' amp default times the network in float32 and bfloat16 on CPUs with native bfloat16 and keeps the faster
# one per process: on tiny test backbones that is a coin toss, and two processes of one test (a MONAI Label server and
# common.segment, DDP ranks) could disagree. The suite pins float32; tests/test_cpu_precision.py unpins it and tests
# both precisions and the choice itself.
os.environ.setdefault("MONAI_SAM_PEFT_CPU_PRECISION", "float32")


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
