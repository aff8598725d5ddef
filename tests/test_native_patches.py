"""Native-resolution training and inference for pictures larger than the backbone input (``native_patches.json`` in
every bundle, ``window_size`` in every ``inference.json``): the network never sees a shrunk picture."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from bundle_helpers import REPO_ROOT, TEST_BACKBONES, bundle_workflow
from PIL import Image

from common.backbones import get_backbone_spec
from common.datasets import make_synthetic_dataset

#: the configs that train each bundle on 2D pictures, before native_patches.json
PICTURE_CONFIGS = {
    "sam2lora_fundus_segmentation": ["train.json"],
    "balr_sam_segmentation": ["train.json", "pictures_2d.json"],
    "conv_lora_sam_segmentation": ["train.json", "pictures_2d.json"],
    "s_sam_text_prompted_segmentation": ["train.json", "pictures_2d.json"],
}
#: and the configs that segment 2D pictures with what they trained
PICTURE_INFERENCE = {  # the hippocampus defaults refuse pictures: each bundle's 2D inference configs
    name: ["inference.json", "pictures_2d_inference.json"]
    for name in ("balr_sam_segmentation", "conv_lora_sam_segmentation", "s_sam_text_prompted_segmentation")
}


def _run_recording_inputs(workflow) -> list[tuple[bool, tuple[int, ...]]]:
    """Run ``workflow``; returns (training?, input shape) of every forward pass of its network."""
    workflow.initialize()
    assert workflow.check_properties() == []
    seen = []
    network = workflow.parser.get_parsed_content("network")
    network.register_forward_pre_hook(lambda module, args: seen.append((module.training, tuple(args[0].shape))))
    workflow.run()
    workflow.finalize()
    return seen


@pytest.mark.parametrize("name", sorted(PICTURE_CONFIGS))
def test_training_on_native_crops_and_inference_in_native_windows(name, tmp_path):
    bundle = tmp_path / name
    shutil.copytree(REPO_ROOT / "bundles" / name, bundle)
    data = tmp_path / "data"
    make_synthetic_dataset(data, spatial_dims=2, num_classes=1, num_train=2, num_val=1, num_test=1)  # 160×192
    side = get_backbone_spec(TEST_BACKBONES[name]).input_size  # 128: smaller than the pictures
    overrides = {"backbone": TEST_BACKBONES[name], "dataset_dir": str(data), "bundle_root": str(bundle)}
    if name == "s_sam_text_prompted_segmentation":
        overrides["input_size"] = side  # S-SAM sets its backbone's input size itself (256 by default)
    configs = bundle / "configs"

    train = bundle_workflow(
        configs,
        [*PICTURE_CONFIGS[name], "native_patches.json"],
        "train",
        **overrides,
        batch_size=1,
        num_workers=0,
        samples_per_image=3,
        val_interval=1,
        **{"train#trainer#max_epochs": 1},
    )
    seen = _run_recording_inputs(train)
    training = [shape for is_training, shape in seen if is_training]
    validation = [shape for is_training, shape in seen if not is_training]
    # one picture per batch gives 3 native crops of the backbone's input size; nothing is resized
    assert training and all(shape[0] == 3 and shape[-2:] == (side, side) for shape in training)
    # the validation picture is covered by several windows of the same size
    assert validation and all(shape[-2:] == (side, side) for shape in validation)
    assert sum(shape[0] for shape in validation) >= 4
    assert (bundle / "models" / "model.pt").is_file()

    output = tmp_path / "predictions"
    files = PICTURE_INFERENCE.get(name, ["inference.json"])
    infer = bundle_workflow(configs, files, "infer", **overrides, output_dir=str(output), window_size=side)
    seen = _run_recording_inputs(infer)
    assert seen and all(shape[-2:] == (side, side) for _, shape in seen)
    (label,) = sorted(output.glob("*_seg.png"))
    test_image = sorted((data / "images").glob("*.png"))[-1]
    assert np.asarray(Image.open(label)).shape == np.asarray(Image.open(test_image)).shape[:2]
