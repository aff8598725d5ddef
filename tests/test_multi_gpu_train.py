"""multi_gpu_train.json of every bundle, run as documented with torchrun: 2 CPU ranks on Gloo, one epoch, and both
ranks end with the same adapter weights (DistributedDataParallel averaged their gradients)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from bundle_helpers import TEST_BACKBONES, bundle_and_synthetic_data
from monai.bundle import ConfigParser

from common.adapters import adapter_state_dict


@pytest.mark.parametrize("name", sorted(TEST_BACKBONES))
def test_two_gloo_ranks_train_one_epoch_to_identical_adapters(name, tmp_path):
    bundle, data = bundle_and_synthetic_data(name, tmp_path, num_val=2)
    # test-only addition: every rank writes its adapter state before the process group goes
    (bundle / "configs" / "save_each_rank.json").write_text(
        json.dumps(
            {
                "finalize": [
                    "$common.adapters.save_adapter_checkpoint(@network.module, @bundle_root + '/rank_' + "
                    "str(dist.get_rank()) + '.pt')",
                    "$dist.is_initialized() and dist.destroy_process_group()",
                ]
            }
        )
    )
    configs = "['configs/train.json','configs/multi_gpu_train.json','configs/save_each_rank.json']"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "monai.bundle",
        "run", "--config_file", configs, "--bundle_root", str(bundle), "--backbone", TEST_BACKBONES[name],
        "--dataset_dir", str(data), "--max_epochs", "1", "--val_interval", "1", "--num_workers", "0",
        "--batch_size", "1",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, cwd=bundle, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    first = torch.load(bundle / "rank_0.pt", weights_only=True)
    second = torch.load(bundle / "rank_1.pt", weights_only=True)
    assert first.keys() == second.keys() and len(first) > 0
    assert all(torch.equal(first[k], second[k]) for k in first)
    # only rank 0 wrote the checkpoint, and training happened: the adapters moved from their (seeded) initial values
    assert torch.load(bundle / "models" / "model.pt", weights_only=True).keys() == first.keys()
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.json"))
    parser.update({"bundle_root": str(bundle), "backbone": TEST_BACKBONES[name], "dataset_dir": str(data)})
    parser.get_parsed_content("initialize")
    initial = adapter_state_dict(parser.get_parsed_content("network_def"))
    assert initial.keys() == first.keys()
    assert any(not torch.equal(initial[k], first[k]) for k in first)
