"""Merged export: the full-weight checkpoint of every bundle gives the adapted network's outputs (LoRA and SVD folded
into plain layers, the rest kept as modules), runs through inference.json without the base checkpoint, and exports
to ONNX with MONAI's onnx_export; onnxruntime agrees with PyTorch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from bundle_helpers import TEST_BACKBONES, bundle_with_test_weights
from monai.bundle import ConfigParser
from PIL import Image

from common.adapters import adapter_layers, save_adapter_checkpoint
from common.export_merged import export_merged, main
from common.segment import load_bundle_for_inference

#: adapter layers that cannot be folded stay (BALR's bottleneck adapters, Conv-LoRA's experts)
KEEPS_ADAPTER_LAYERS = {"balr_sam_segmentation": True, "conv_lora_sam_segmentation": True}
BINARY = {"conv_lora_sam_segmentation": {"label_names": {"1": "lesion"}}}


def _trained_bundle(name, parent):
    """A bundle copy whose adapters are far from their initial values (LoRA B ≠ 0), as after training."""
    # Conv-LoRA's binary head: the test backbone saturates its multi-class scores to exactly 0 and 1, where no
    # adapter change shows in the output and the comparison below could not fail
    bundle = bundle_with_test_weights(name, parent, BINARY.get(name))
    _, network = load_bundle_for_inference(bundle)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in network.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn(param.shape, generator=generator))
    save_adapter_checkpoint(network, bundle / "models" / "model.pt")
    return bundle, network.eval()


def _merged_network(bundle):
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / "inference.json"), str(bundle / "configs" / "merged_inference.json")])
    parser.update({"bundle_root": str(bundle), "datalist": []})
    network = parser.get_parsed_content("network")
    parser.get_parsed_content("checkpointloader")(parser.get_parsed_content("evaluator"))
    return network.eval()


@pytest.mark.parametrize("name", sorted(TEST_BACKBONES))
def test_merged_export_matches_the_adapted_network(name, tmp_path):
    bundle, adapted = _trained_bundle(name, tmp_path)
    image = torch.rand(2, 3, 72, 90)
    with torch.no_grad():
        expected = adapted(image)
        initial = load_bundle_for_inference(bundle_with_test_weights(name, tmp_path / "initial", BINARY.get(name)))
        initial = initial[1].eval()(image)
    assert (expected - initial).abs().max() > 1e-3  # the adapters change the output: the comparison can fail

    path, merged_count, kept = export_merged(bundle)
    assert path == bundle / "models" / "model_merged.pt"
    merged = _merged_network(bundle)
    left = [n for n, _ in adapter_layers(merged)]
    assert left == kept
    if KEEPS_ADAPTER_LAYERS.get(name):
        assert kept and merged_count == 0
    else:
        assert merged_count > 0 and not kept  # no adapter code runs at inference
    with torch.no_grad():
        assert torch.allclose(merged(image), expected, atol=1e-5)


def test_merged_bundle_segments_a_picture_and_the_command_reports(tmp_path, capsys):
    bundle, _ = _trained_bundle("sam2lora_fundus_segmentation", tmp_path)
    assert main(["--bundle", str(bundle)]) == 0
    assert "adapter layers folded into plain layers, 0 kept as modules" in capsys.readouterr().out
    picture = tmp_path / "fundus.png"
    Image.fromarray((np.random.default_rng(0).random((60, 70, 3)) * 255).astype(np.uint8)).save(picture)
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file",
         "['configs/inference.json','configs/merged_inference.json']", "--bundle_root", str(bundle),
         "--input", str(picture), "--output_dir", str(tmp_path / "out")],
        cwd=bundle, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert Image.open(tmp_path / "out" / "fundus_seg.png").size == (70, 60)
    assert main(["--bundle", str(tmp_path / "nowhere")]) == 1
    capsys.readouterr()
    assert main(["--bundle", str(bundle), "--output", str(picture / "merged.pt")]) == 1  # under a file
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and err.startswith("error: ") and str(picture) in err


@pytest.mark.parametrize("name", sorted(TEST_BACKBONES))
def test_onnx_export_of_the_merged_network_agrees_with_onnxruntime(name, tmp_path):
    import onnxruntime

    bundle, _ = _trained_bundle(name, tmp_path)
    export_merged(bundle)
    onnx_file = tmp_path / "network.onnx"
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "onnx_export", "--net_id", "network", "--filepath", str(onnx_file),
         "--ckpt_file", "models/model_merged.pt", "--config_file",
         "['configs/inference.json','configs/merged_inference.json']", "--input_shape", "[1, 3, 96, 80]",
         "--bundle_root", str(bundle), "--datalist", "[]"],
        cwd=bundle, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    image = torch.rand(1, 3, 96, 80)
    with torch.no_grad():
        expected = _merged_network(bundle)(image).numpy()
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {session.get_inputs()[0].name: image.numpy()})
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-3, atol=1e-4)
