"""SAM2LoRA bundle: configs, metadata, the network's method details, and train → evaluate → infer via ConfigWorkflow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_helpers import bundle_workflow, check_bundle_files
from PIL import Image

from common.data import SamplePromptsd
from common.datasets import make_synthetic_dataset
from common.networks import Sam2LoraNet

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLE = REPO_ROOT / "bundles" / "sam2lora_fundus_segmentation"
CONFIGS = BUNDLE / "configs"


def _workflow(files, workflow_type, configs=CONFIGS, **override):
    return bundle_workflow(configs, files, workflow_type, **override)


def test_bundle_files_metadata_and_large_files():
    check_bundle_files(
        BUNDLE,
        ["hippocampus.json", "hippocampus_inference.json", "merged_inference.json", "native_patches.json",
         "paper.json", "paper_inference.json", "whole_pictures.json"],
        "sam2.1_hiera_l",  # the paper's backbone: large_files.yml fetches its checkpoint
    )


def test_lora_placement_and_share_on_the_test_backbone():
    net = Sam2LoraNet("sam2.1_hiera_test", checkpoint=None, lora_rank=4, lora_alpha=8)
    names = net.adapted_layers
    assert len([n for n in names if ".trunk.blocks." in n]) == len(net.sam.image_encoder.trunk.blocks)
    assert len([n for n in names if n.startswith("sam_mask_decoder.transformer")]) == 28
    assert net.parameter_report.groups == {"adapters": net.parameter_report.trainable}
    assert net.skip_fusion is None  # SAM2 has its own high-resolution path


@pytest.mark.slow
def test_trainable_share_on_hiera_large_is_under_5_percent():
    net = Sam2LoraNet("sam2.1_hiera_l", checkpoint=None)
    assert net.parameter_report.trainable == 7_693_312
    assert net.parameter_report.trainable_share < 0.05


def test_litemedsam_skips_start_as_the_pretrained_decoder():
    # zero-initialised skip projections: with LoRA B = 0 the adapted network equals the base network at step 0
    from common.networks import SamSegmentationNet

    base = SamSegmentationNet("litemedsam", checkpoint=None).eval()
    adapted = Sam2LoraNet(base.sam, lora_rank=4, lora_alpha=8).eval()
    assert adapted.skip_fusion is not None
    assert adapted.parameter_report.groups["skip_fusion"] == 64 * 32 + 32 + 128 * 64 + 64
    image = torch.rand(1, 3, 64, 64)
    reference_net = SamSegmentationNet("litemedsam", checkpoint=None).eval()
    reference_net.load_state_dict(
        {k: v for k, v in adapted.state_dict().items() if "lora_" not in k and "skip_" not in k}
    )
    with torch.no_grad():
        assert torch.allclose(adapted(image), reference_net(image), atol=1e-5)
        torch.nn.init.normal_(adapted.skip_fusion.proj_s0.weight)
        assert not torch.allclose(adapted(image), reference_net(image), atol=1e-3)


def test_prompts_are_drawn_per_sample_from_each_label():
    label_a = torch.zeros(1, 40, 50)
    label_a[0, 5:15, 10:20] = 1
    label_b = torch.zeros(1, 40, 50)
    label_b[0, 25:35, 30:45] = 1
    sampler = SamplePromptsd(keys="label", num_positive=4, num_negative=2, erosion=1, box_jitter=0.02)
    sampler.set_random_state(0)
    for label in (label_a, label_b):
        out = sampler({"label": label})
        coords, labels, box = out["point_coords"], out["point_labels"], out["box"]
        assert coords.shape == (6, 2) and labels.tolist() == [1, 1, 1, 1, 0, 0]
        for (x, y), lab in zip(coords.long().tolist(), labels.tolist()):
            assert label[0, y, x] == lab  # positives inside, negatives outside this sample's own object
        rows, cols = torch.nonzero(label[0], as_tuple=True)
        assert box[0] <= cols.min() and box[1] <= rows.min() and box[2] >= cols.max() and box[3] >= rows.max()
        assert box[2] - cols.max() <= 0.02 * 50 + 1e-4 and rows.min() - box[1] <= 0.02 * 40 + 1e-4
    empty = sampler({"label": torch.zeros(1, 8, 8)})
    assert (empty["point_labels"][:4] == -1).all() and empty["box"].tolist() == [0, 0, 7, 7]


@pytest.fixture(scope="module")
def trained_bundle(tmp_path_factory):
    """train → evaluate with exactly the overrides the issue names, from a copy of the bundle as working directory
    (``bundle_root`` stays "."), shared by the checks below."""
    import os
    import shutil

    root = tmp_path_factory.mktemp("sam2lora")
    data = root / "data"
    make_synthetic_dataset(data, spatial_dims=2, num_classes=1, num_train=4, num_val=2, num_test=2)
    bundle_root = root / "bundle"
    shutil.copytree(BUNDLE, bundle_root)
    configs = bundle_root / "configs"
    overrides = {"backbone": "sam2.1_hiera_test", "dataset_dir": str(data)}
    cwd = os.getcwd()
    os.chdir(bundle_root)
    try:
        train = _workflow(
            ["train.json"], "train", configs=configs, **overrides, **{"train#trainer#max_epochs": 1, "epoch_length": 2}
        )
        train.initialize()
        assert train.check_properties() == []
        net = train.parser.get_parsed_content("network")
        before = {k: v.clone() for k, v in net.state_dict().items()}
        train.run()
        after = {k: v.clone() for k, v in net.state_dict().items()}
        train.finalize()
        evaluate = _workflow(["train.json", "evaluate.json"], "train", configs=configs, **overrides)
        evaluate.initialize()
        evaluate.run()
        evaluate.finalize()
    finally:
        os.chdir(cwd)
    return {
        "root": root,
        "data": data,
        "bundle_root": bundle_root,
        "before": before,
        "after": after,
        "overrides": overrides,
    }


def test_training_changes_lora_only_and_saves_adapter_checkpoint(trained_bundle):
    before, after = trained_bundle["before"], trained_bundle["after"]
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.endswith("lora_B") for k in changed)
    assert all(".lora_" in k for k in changed), sorted(k for k in changed if ".lora_" not in k)[:5]
    checkpoint = torch.load(trained_bundle["bundle_root"] / "models" / "model.pt", weights_only=True)
    lora_keys = {k for k in before if ".lora_" in k}
    assert set(checkpoint) == lora_keys  # adapter-only: every LoRA tensor and nothing else
    for key in lora_keys:
        assert torch.equal(checkpoint[key], after[key])


def test_evaluate_writes_metrics_and_predictions(trained_bundle):
    out = trained_bundle["bundle_root"] / "eval"
    metrics = dict(line.split(",") for line in (out / "metrics.csv").read_text().splitlines())
    assert set(metrics) == {"val_mean_dice", "val_auc", "val_sensitivity", "val_specificity", "val_hd95"}
    assert all(
        0.0 <= float(metrics[m]) <= 1.0 for m in ("val_mean_dice", "val_auc", "val_sensitivity", "val_specificity")
    )
    for detail in ("val_mean_dice", "val_sensitivity", "val_specificity", "val_hd95"):  # per image + summary
        raw = (out / f"{detail}_raw.csv").read_text().splitlines()
        assert len(raw) == 1 + 2  # header + one row per test image
        assert (out / f"{detail}_summary.csv").is_file()
    predictions = sorted((out / "predictions").glob("*_seg.png"))
    assert len(predictions) == 2
    assert len(list((out / "overlays").glob("*_overlay.png"))) == 2


def test_inference_writes_masks_with_the_input_geometry(trained_bundle):
    out = trained_bundle["root"] / "infer"
    infer = _workflow(
        ["inference.json"],
        "infer",
        configs=trained_bundle["bundle_root"] / "configs",
        **trained_bundle["overrides"],
        bundle_root=str(trained_bundle["bundle_root"]),
        output_dir=str(out),
    )
    infer.initialize()
    assert infer.check_properties() == []
    infer.run()
    infer.finalize()
    masks = sorted(out.glob("*_seg.png"))
    assert len(masks) == 2
    for mask in masks:
        source = trained_bundle["data"] / "images" / mask.name.replace("_seg", "")
        assert Image.open(mask).size == Image.open(source).size
        assert set(np.unique(np.asarray(Image.open(mask)))) <= {0, 1}
    overlays = sorted(out.glob("*_montage.png"))
    assert len(overlays) == 2
    for overlay in overlays:  # pictures have the rows and columns of their source file
        source = trained_bundle["data"] / "images" / overlay.name.replace("_montage", "")
        assert Image.open(overlay).size == Image.open(source).size


def test_prompted_training_mode_runs(tmp_path):
    data = tmp_path / "data"
    make_synthetic_dataset(data, spatial_dims=2, num_classes=1, num_train=2, num_val=1, num_test=0)
    (tmp_path / "bundle" / "models").mkdir(parents=True)
    train = _workflow(
        ["train.json"],
        "train",
        backbone="sam2.1_hiera_test",
        dataset_dir=str(data),
        bundle_root=str(tmp_path / "bundle"),
        prompt_mode="points+box",
        num_workers=0,
        **{"train#trainer#max_epochs": 1, "epoch_length": 2},
    )
    train.initialize()
    seen = []
    net = train.parser.get_parsed_content("network")
    original = net.forward

    def spy(image, boxes=None, point_coords=None, point_labels=None):
        seen.append((boxes, point_coords))
        return original(image, boxes=boxes, point_coords=point_coords, point_labels=point_labels)

    net.forward = spy
    train.run()
    train.finalize()
    assert seen and all(b is not None and p is not None for b, p in seen)
    boxes = seen[0][0]
    assert boxes.shape == (8, 4) and not torch.equal(boxes[0], boxes[1])  # one box per crop (2 pictures × 4)


@pytest.mark.slow
def test_litemedsam_path_on_real_chase_db1(shared_data, tmp_path):
    # the real-data path end to end on CPU: datalist from the released layout, LiteMedSAM's real weights, two
    # training iterations, evaluation of the 8 test images inside their fields of view; whole pictures, so that 12
    # pictures are segmented in seconds (the default's native windows on real weights: test_shipped_adapters.py)
    from common.datasets.fundus import prepare_fundus_datalist

    data = tmp_path / "chase"
    prepare_fundus_datalist({"chase_db1": shared_data / "chase_db1"}, data, task="vessel")
    bundle_root = tmp_path / "bundle"
    (bundle_root / "models").mkdir(parents=True)
    overrides = {
        "backbone": "litemedsam",
        "dataset_dir": str(data),
        "bundle_root": str(bundle_root),
        "lora_rank": 4,
        "lora_alpha": 8,
        "num_workers": 0,
    }
    train = _workflow(
        ["train.json", "whole_pictures.json"],
        "train",
        **overrides,
        **{"train#trainer#max_epochs": 1, "train#trainer#epoch_length": 2, "val_interval": 1},
    )
    train.initialize()
    net = train.parser.get_parsed_content("network")
    assert net.skip_fusion is not None
    train.run()
    best = train.parser.get_parsed_content("validate#evaluator").state.best_metric
    train.finalize()
    # the checkpoint alone reproduces the trained network: evaluating the validation split from it gives the same
    # Dice as the validation during training (frozen BatchNorm statistics must not drift while training)
    check = _workflow(
        ["train.json", "whole_pictures.json", "evaluate.json"],
        "train",
        **overrides,
        output_dir=str(tmp_path / "check"),
        **{"validate#dataset#data": "$common.data.load_datalist(@dataset_dir, 'validation')"},
    )
    check.initialize()
    check.run()
    assert check.parser.get_parsed_content("validate#evaluator").state.metrics["val_mean_dice"] == pytest.approx(
        best, abs=1e-4
    )
    check.finalize()
    checkpoint = torch.load(bundle_root / "models" / "model.pt", weights_only=True)
    assert any(k.startswith("skip_fusion.") for k in checkpoint) and any(".lora_B" in k for k in checkpoint)
    evaluate = _workflow(["train.json", "whole_pictures.json", "evaluate.json"], "train", **overrides)
    evaluate.initialize()
    evaluate.run()
    evaluate.finalize()
    raw = (bundle_root / "eval" / "val_mean_dice_raw.csv").read_text().splitlines()
    assert len(raw) == 1 + 8 and all("Image_1" in line for line in raw[1:])  # children 11-14
    predictions = sorted((bundle_root / "eval" / "predictions").glob("*_seg.png"))
    assert len(predictions) == 8 and Image.open(predictions[0]).size == (999, 960)
