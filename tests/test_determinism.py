"""Same seed and data → the same adapter weights after N training iterations on CPU, for every bundle; another seed
gives other weights (so the comparison can fail)."""

from __future__ import annotations

import pytest
import torch
from bundle_helpers import TEST_BACKBONES, bundle_and_synthetic_data, short_training

from common.adapters import adapter_state_dict

#: one bundle also loads its data in worker processes (their seeds must follow the global seed too)
WORKERS = {"sam2lora_fundus_segmentation": 2}


def _train(bundle, data, name: str, seed: int) -> dict[str, torch.Tensor]:
    parser = short_training(
        bundle, data, name, 3, num_workers=WORKERS.get(name, 0),
        initialize=[f"$monai.utils.set_determinism(seed={seed})"],
    )  # fmt: skip
    parser.get_parsed_content("train#trainer").run()
    return adapter_state_dict(parser.get_parsed_content("network"))


@pytest.mark.parametrize("name", sorted(TEST_BACKBONES))
def test_same_seed_same_adapter_weights(name, tmp_path):
    bundle, data = bundle_and_synthetic_data(name, tmp_path)
    first, second = _train(bundle, data, name, 0), _train(bundle, data, name, 0)
    assert first.keys() == second.keys() and first
    different = [k for k in first if not torch.equal(first[k], second[k])]
    assert not different, f"same seed, different weights: {different[:5]}"
    other = _train(bundle, data, name, 1)
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_the_same_segmentation_command_writes_the_same_files(shared_data, tmp_path):
    """Two runs of one ``common.segment`` command with the bundle's own precision choice (no environment pin): the
    same label map and report, value for value (the choice used to be timed, and flipped between runs)."""
    import json
    import os
    import subprocess
    import sys

    import nibabel as nib
    import numpy as np
    from bundle_helpers import REPO_ROOT

    scan = shared_data / "msd_hippocampus" / "images" / "hippocampus_001.nii.gz"
    env = {k: v for k, v in os.environ.items() if k != "MONAI_SAM_PEFT_CPU_PRECISION"}
    results = []
    for run in ("first", "second"):
        out = tmp_path / run
        command = [sys.executable, "-m", "common.segment", "--bundle", str(REPO_ROOT / "bundles" / "balr_sam_segmentation"),
                   "--input", str(scan), "--output", str(out)]  # fmt: skip
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        labels = np.asarray(nib.load(out / "hippocampus_001_seg.nii.gz").dataobj)
        report = json.loads((out / "hippocampus_001_volumes.json").read_text())
        results.append((labels, report))
    assert results[0][0].any() and np.array_equal(results[0][0], results[1][0])
    assert results[0][1] == results[1][1]
