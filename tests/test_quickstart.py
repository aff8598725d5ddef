"""The README's main job, on the tiny test backbone: same path, seconds instead of minutes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

from common.adapters import LoraConfig, configure_trainable, inject_adapters, load_adapter_checkpoint
from common.networks import SamSegmentationNet
from common.quickstart import EXTRA_TRAINABLE, LORA_TARGETS, run_quickstart


def test_quickstart_writes_segmentations_overlay_metrics_and_adapter(tmp_path):
    metrics = run_quickstart(tmp_path, backbone="sam_vit_test", iterations=3, num_train=4, num_test=2)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert saved["iterations"] == 3 and len(saved["dice_adapted"]) == 2
    assert all(0.0 <= d <= 1.0 for d in saved["dice_zero_shot"] + saved["dice_adapted"])
    assert saved["parameters"]["trainable"] < saved["parameters"]["total"]

    for name in saved["test_cases"]:
        seg = np.asarray(Image.open(tmp_path / "segmentations" / name))
        image = np.asarray(Image.open(tmp_path / "data" / "images" / name))
        assert seg.shape == image.shape and set(np.unique(seg)) <= {0, 255}
    overlay = Image.open(tmp_path / "overlay.png")
    assert overlay.size == (4 * 192, 2 * 160) and overlay.mode == "RGB"

    # the adapter checkpoint is adapter-only and applies onto a freshly built network
    net = SamSegmentationNet("sam_vit_test")
    inject_adapters(net, LoraConfig(rank=8, alpha=16, target_modules=LORA_TARGETS))
    configure_trainable(net, EXTRA_TRAINABLE)
    load_adapter_checkpoint(net, tmp_path / "adapter.pt")
    state = torch.load(tmp_path / "adapter.pt", weights_only=True)
    assert state and all(".lora_" in k or "tokens" in k or "iou_token" in k for k in state)


def test_quickstart_cli_help():
    result = subprocess.run([sys.executable, "-m", "common.quickstart", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--output_dir" in result.stdout and "--backbone" in result.stdout
