"""Conv-LoRA bundle: files, metadata, and train → evaluate → infer via ConfigWorkflow: the default multi-class
configuration (3D volumes by slice sampling, the shipped adapter's), the paper's binary 2D one and multi-class 2D."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_helpers import bundle_workflow, check_bundle_files, run_workflow, write_hippocampus_datalist
from PIL import Image

from common.datasets import make_synthetic_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLE = REPO_ROOT / "bundles" / "conv_lora_sam_segmentation"


def test_bundle_files_metadata_and_large_files():
    extra = ["pictures_2d.json", "pictures_2d_inference.json", "kvasir_seg.json", "kvasir_seg_inference.json"]
    extra += ["multiclass_2d.json", "multiclass_2d_inference.json"]
    extra += ["merged_inference.json", "native_patches.json"]
    check_bundle_files(BUNDLE, extra, "sam_vit_h")


def test_binary_train_evaluate_infer(bundle_copy, tmp_path):
    data = tmp_path / "data"
    make_synthetic_dataset(data, spatial_dims=2, num_classes=1, num_train=4, num_val=2, num_test=2)
    configs = bundle_copy / "configs"
    overrides = {"backbone": "sam_vit_test", "dataset_dir": str(data)}
    train = bundle_workflow(
        configs, ["train.json", "pictures_2d.json"], "train", **overrides, **{"train#trainer#max_epochs": 1}
    )
    train.initialize()
    assert train.check_properties() == []
    net = train.parser.get_parsed_content("network")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    train.run()
    train.finalize()
    changed = {k for k, v in net.state_dict().items() if not torch.equal(before[k], v)}
    assert any(".lora_B" in k for k in changed) and any("mask_decoder.transformer" in k for k in changed)
    assert not any("iou_prediction_head" in k or "prompt_encoder" in k for k in changed)
    checkpoint = torch.load(bundle_copy / "models" / "model.pt", weights_only=True)
    assert any(".experts." in k for k in checkpoint) and not any(k.endswith("qkv.weight") for k in checkpoint)

    run_workflow(bundle_workflow(configs, ["train.json", "evaluate.json", "pictures_2d.json"], "train", **overrides))
    metrics = dict(line.split(",") for line in (bundle_copy / "eval" / "metrics.csv").read_text().splitlines())
    assert set(metrics) == {"val_mean_dice", "val_mean_iou", "val_hd95"}
    assert len((bundle_copy / "eval" / "val_mean_dice_raw.csv").read_text().splitlines()) == 1 + 2
    assert len(list((bundle_copy / "eval" / "predictions").glob("*_seg.png"))) == 2

    out = tmp_path / "infer"
    inference = ["inference.json", "pictures_2d_inference.json"]
    run_workflow(bundle_workflow(configs, inference, "infer", **overrides, output_dir=str(out)))
    masks = sorted(out.glob("*_seg.png"))
    assert len(masks) == 2
    source = data / "images" / masks[0].name.replace("_seg", "")
    assert Image.open(masks[0]).size == Image.open(source).size


def test_multiclass_3d_train_evaluate_infer(bundle_copy, tmp_path):
    data = tmp_path / "data"
    make_synthetic_dataset(data, spatial_dims=3, num_classes=2, num_train=3, num_val=1, num_test=2, shape=(40, 48, 12))
    configs = bundle_copy / "configs"
    overrides = {"backbone": "sam_vit_test", "dataset_dir": str(data)}
    train = run_workflow(
        bundle_workflow(
            configs, ["train.json"], "train", **overrides, **{"train#trainer#max_epochs": 1}
        )
    )
    net = train.parser.get_parsed_content("network")
    assert net.num_classes == 2 and net.parameter_report.groups["multiclass_head"] > 0
    assert (bundle_copy / "models" / "model.pt").is_file()

    run_workflow(bundle_workflow(configs, ["train.json", "evaluate.json"], "train", **overrides))
    eval_dir = bundle_copy / "eval"
    raw = (eval_dir / "val_mean_dice_raw.csv").read_text().splitlines()
    assert raw[0].split(",")[1:] == ["class0", "class1", "mean"] and len(raw) == 1 + 2  # per class, per volume
    prediction = sorted((eval_dir / "predictions").glob("*_seg.nii.gz"))
    assert len(prediction) == 2

    out = tmp_path / "infer"
    run_workflow(
        bundle_workflow(
            configs, ["inference.json"], "infer", **overrides, output_dir=str(out)
        )
    )
    volumes = sorted(out.glob("*_seg.nii.gz"))
    assert len(volumes) == 2
    for volume in volumes:
        source = nib.load(data / "images" / volume.name.replace("_seg", ""))
        result = nib.load(volume)
        assert result.shape == source.shape  # geometry restored (Invertd)
        assert np.allclose(result.affine, source.affine, atol=1e-5)
        assert set(np.unique(np.asarray(result.dataobj))) <= {0, 1, 2}


@pytest.mark.slow
def test_litemedsam_multiclass_path_on_real_hippocampus(shared_data, bundle_copy, tmp_path):
    # the real multi-class path on CPU: case-level datalist of the MSD volumes, LiteMedSAM's real weights, two
    # training iterations on sampled slices, volumetric evaluation of a test volume with per-class Dice
    data = tmp_path / "hippocampus"
    write_hippocampus_datalist(shared_data / "msd_hippocampus", data)
    configs = bundle_copy / "configs"
    overrides = {
        "backbone": "litemedsam",
        "dataset_dir": str(data),
        "num_workers": 0,
        "batch_size": 1,
        "samples_per_image": 2,
    }
    run_workflow(
        bundle_workflow(
            configs,
            ["train.json"],
            "train",
            **overrides,
            **{"train#trainer#max_epochs": 1, "train#trainer#epoch_length": 2},
        )
    )
    run_workflow(bundle_workflow(configs, ["train.json", "evaluate.json"], "train", **overrides))
    raw = (bundle_copy / "eval" / "val_mean_dice_raw.csv").read_text().splitlines()
    assert len(raw) == 1 + 1 and raw[0].endswith("class0,class1,mean")
    prediction = sorted((bundle_copy / "eval" / "predictions").glob("*_seg.nii.gz"))[0]
    source = shared_data / "msd_hippocampus" / "images" / prediction.name.replace("_seg", "")
    assert nib.load(prediction).shape == nib.load(source).shape


def test_multiclass_2d_train_and_evaluate(bundle_copy, tmp_path):
    data = tmp_path / "data"
    make_synthetic_dataset(data, spatial_dims=2, num_classes=2, num_train=4, num_val=2, num_test=2)
    configs = bundle_copy / "configs"
    overrides = {"backbone": "sam_vit_test", "dataset_dir": str(data)}
    run_workflow(
        bundle_workflow(
            configs, ["train.json", "pictures_2d.json", "multiclass_2d.json"], "train", **overrides,
            **{"train#trainer#max_epochs": 1},
        )
    )
    evaluate = ["train.json", "evaluate.json", "pictures_2d.json", "multiclass_2d.json"]
    run_workflow(bundle_workflow(configs, evaluate, "train", **overrides))
    raw = (bundle_copy / "eval" / "val_mean_dice_raw.csv").read_text().splitlines()
    assert raw[0].split(",")[1:] == ["class0", "class1", "mean"] and len(raw) == 1 + 2
    labels = [np.asarray(Image.open(p)) for p in sorted((bundle_copy / "eval" / "predictions").glob("*_seg.png"))]
    assert len(labels) == 2 and all(set(np.unique(lab)) <= {0, 1, 2} for lab in labels)
    out = tmp_path / "infer"
    run_workflow(
        bundle_workflow(
            configs, ["inference.json", "pictures_2d_inference.json", "multiclass_2d_inference.json"], "infer",
            **overrides, output_dir=str(out),
        )
    )
    masks = sorted(out.glob("*_seg.png"))
    assert len(masks) == 2 and all(set(np.unique(np.asarray(Image.open(m)))) <= {0, 1, 2} for m in masks)
    assert Image.open(masks[0]).size == Image.open(data / "images" / masks[0].name.replace("_seg", "")).size
