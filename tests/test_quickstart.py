"""The README's main job: the shipped adapter on the embedded real MR volumes (real weights), and the LoRA adaptation
path on the tiny test backbone (same path, seconds instead of minutes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from common.adapters import LoraConfig, configure_trainable, inject_adapters, load_adapter_checkpoint
from common.networks import SamSegmentationNet
from common.quickstart import DEFAULT_BUNDLE_NAME, EXTRA_TRAINABLE, LORA_TARGETS, SAMPLES, main, run_quickstart

DEFAULT_BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / DEFAULT_BUNDLE_NAME


def test_the_embedded_samples_are_real_held_out_mr_with_their_licence():
    datalist = json.loads((SAMPLES / "datalist.json").read_text())
    assert len(datalist["training"]) == 8 and len(datalist["testing"]) == 3
    held_out = {c["image"] for c in datalist["testing"]}
    assert not held_out & {c["image"] for c in datalist["training"]}
    for case in datalist["training"] + datalist["testing"]:
        image, label = nib.load(SAMPLES / case["image"]), nib.load(SAMPLES / case["label"])
        assert image.shape == label.shape and len(image.shape) == 3
        assert set(np.unique(np.asarray(label.dataobj)).astype(int)) == {0, 1, 2}
    assert "CC-BY-SA 4.0" in (SAMPLES.parent / "README.md").read_text()


def test_shipped_adapter_segments_the_held_out_volumes(tmp_path):
    metrics = run_quickstart(tmp_path)
    seg = metrics["segmentation"]
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert set(seg["cases"]) == {"hippocampus_011", "hippocampus_019", "hippocampus_024"}
    for stem, case in seg["cases"].items():
        labels = nib.load(tmp_path / "segmentations" / f"{stem}_seg.nii.gz")
        assert labels.shape == nib.load(SAMPLES / "images" / f"{stem}.nii.gz").shape
        assert Image.open(tmp_path / "segmentations" / f"{stem}_montage.png").mode == "RGB"
        assert all(v > 0 for v in case["volume_ml"].values())
    # the shipped adapter's measured accuracy on these three is 0.857 (bundle card); a margin for CPU arithmetic
    assert seg["mean_dice_both"] >= 0.83, seg["mean_dice"]


def test_adaptation_path_writes_segmentations_overlay_metrics_and_adapter(tmp_path):
    metrics = run_quickstart(tmp_path, segment=False, adapt=True, backbone="sam_vit_test", iterations=3)
    saved = json.loads((tmp_path / "metrics.json").read_text())["adaptation"]
    assert saved == json.loads(json.dumps(metrics["adaptation"])) and "segmentation" not in metrics
    assert saved["iterations"] == 3 and saved["input_size"] == 64
    assert len(saved["dice_adapted"]) == len(saved["test_slices"]) == len(saved["dice_zero_shot"]) > 30
    assert all(0.0 <= d <= 1.0 for d in saved["dice_zero_shot"] + saved["dice_adapted"])
    assert saved["parameters"]["trainable"] < saved["parameters"]["total"]

    adapt = tmp_path / "adapt"
    for name in saved["test_slices"]:
        seg = np.asarray(Image.open(adapt / "segmentations" / name))
        image = np.asarray(Image.open(adapt / "data" / "testing" / "images" / name))
        assert seg.shape == image.shape and set(np.unique(seg)) <= {0, 255}
    overlay = Image.open(adapt / "overlay.png")
    assert overlay.mode == "RGB" and overlay.size[0] >= 4 * 160  # 4 enlarged tiles a row, one row per volume

    # the adapter checkpoint is adapter-only and applies onto a freshly built network
    net = SamSegmentationNet("sam_vit_test")
    inject_adapters(net, LoraConfig(rank=8, alpha=16, target_modules=LORA_TARGETS))
    configure_trainable(net, EXTRA_TRAINABLE)
    load_adapter_checkpoint(net, adapt / "adapter.pt")
    state = torch.load(adapt / "adapter.pt", weights_only=True)
    assert state and all(".lora_" in k or "tokens" in k or "iou_token" in k for k in state)


def test_quickstart_without_a_shipped_adapter_says_so(tmp_path, capsys):
    bundle = tmp_path / "bundle"
    (bundle / "models").mkdir(parents=True)
    assert main(["--output_dir", str(tmp_path / "out"), "--bundle", str(bundle)]) == 1
    assert "models/model.pt not found" in capsys.readouterr().err


def test_quickstart_output_path_that_is_a_file_is_one_line(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    with pytest.raises(SystemExit) as exit_info:
        main(["--output_dir", str(taken)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"--output_dir {taken} is a file; give a folder")
    assert taken.read_text() == "not a folder"


def test_quickstart_whole_brain_scan_that_does_not_exist_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--output_dir", str(tmp_path / "out"), "--whole_brain", str(tmp_path / "absent.nii.gz")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"--whole_brain {tmp_path / 'absent.nii.gz'}: no such "
                                                             "file or folder")  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_quickstart_whole_brain_reports_both_sides(shared_data, tmp_path):
    from common.quickstart import segment_whole_brain

    report = segment_whole_brain(shared_data / "freesurfer_bert" / "bert_t1_brain.nii.gz", tmp_path)
    sides = report["volumes"]["sides"]
    assert set(sides) == {"left", "right"} and all(2.0 <= side["volume_ml"] <= 6.0 for side in sides.values())
    assert (tmp_path / "whole_brain" / "bert_t1_brain_seg.nii.gz").is_file()


def test_quickstart_cli_help():
    result = subprocess.run([sys.executable, "-m", "common.quickstart", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--output_dir" in result.stdout and "--adapt" in result.stdout
    assert DEFAULT_BUNDLE.name == "balr_sam_segmentation"


@pytest.fixture(autouse=True)
def _bundle_ships_its_adapter():
    if not (DEFAULT_BUNDLE / "models" / "model.pt").is_file():
        pytest.fail(f"{DEFAULT_BUNDLE}/models/model.pt is missing: the quickstart's bundle must ship its adapter")
