"""S-SAM bundle: files, metadata, and train → evaluate → infer via ConfigWorkflow on 3D volumes (slice sampling,
volumetric evaluation) and on 2D images."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_helpers import bundle_workflow, check_bundle_files, run_workflow, write_hippocampus_datalist
from PIL import Image

from common.datasets import make_synthetic_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLE = REPO_ROOT / "bundles" / "s_sam_text_prompted_segmentation"


def test_bundle_files_metadata_and_large_files():
    check_bundle_files(
        BUNDLE,
        ["paper.json", "paper_inference.json", "lits.json", "pictures_2d.json", "pictures_2d_inference.json",
         "merged_inference.json", "native_patches.json"],
        "sam_vit_b",
    )  # fmt: skip
    assert (BUNDLE / "docs" / "data_license.txt").is_file()
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    train = json.loads((BUNDLE / "configs" / "train.json").read_text())
    inference = json.loads((BUNDLE / "configs" / "inference.json").read_text())
    assert train["text_encoder"] in meta["text_encoder"].lower()  # the metadata says which text encoder is used
    # the network inference builds is the one training built, in the default and in the paper's setting
    network_keys = [v[1:] for v in inference["network_def"].values() if isinstance(v, str) and v.startswith("@")]
    assert all(train[k] == inference[k] for k in network_keys)
    paper = json.loads((BUNDLE / "configs" / "paper.json").read_text())
    paper_inference = json.loads((BUNDLE / "configs" / "paper_inference.json").read_text())
    for key in network_keys:
        assert paper.get(key, train[key]) == paper_inference.get(key, inference[key]), key
    # the default serves slices at the size it trained on (padded, never enlarged); the paper's resizes them
    assert inference["window_size"] == "@input_size" and paper_inference["window_size"] is None


def test_volumes_train_evaluate_infer(bundle_copy, tmp_path):
    data = tmp_path / "data"
    make_synthetic_dataset(data, spatial_dims=3, num_classes=2, num_train=3, num_val=1, num_test=2, shape=(40, 48, 12))
    configs = bundle_copy / "configs"
    overrides = {"backbone": "sam_vit_test", "dataset_dir": str(data), "num_workers": 0, "batch_size": 2}
    train = bundle_workflow(
        configs, ["train.json"], "train", **overrides, **{"train#trainer#max_epochs": 1, "val_interval": 1}
    )
    train.initialize()
    assert train.check_properties() == []
    net = train.parser.get_parsed_content("network")
    assert net.label_names == ["anterior hippocampus", "posterior hippocampus"]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    train.run()
    train.finalize()
    changed = {k for k, v in net.state_dict().items() if not torch.equal(before[k], v)}
    assert any(k.endswith(".scale") for k in changed) and any("text_affine" in k for k in changed)
    assert not any("prompt_encoder" in k or "output_hypernetworks" in k or k.endswith("qkv.weight") for k in changed)
    checkpoint = torch.load(bundle_copy / "models" / "model.pt", weights_only=True)
    assert not any(k.endswith(("svd_u", "svd_s", "svd_vh")) for k in checkpoint)
    # the checkpoint carries the label-name prompts it was trained with (and BatchNorm statistics)
    assert {"text_affine.text_embeddings", "text_affine.norm.running_mean"} <= set(checkpoint)

    run_workflow(bundle_workflow(configs, ["train.json", "evaluate.json"], "train", **overrides))
    eval_dir = bundle_copy / "eval"
    metrics = dict(line.split(",") for line in (eval_dir / "metrics.csv").read_text().splitlines())
    assert set(metrics) == {"val_mean_dice", "val_mean_iou", "val_hd95_mm", "val_empty_class_fp"}
    raw = (eval_dir / "val_mean_dice_raw.csv").read_text().splitlines()
    assert raw[0].split(",")[1:] == ["class0", "class1", "mean"] and len(raw) == 1 + 2  # per class, per volume
    predictions = sorted((eval_dir / "predictions").glob("*_seg.nii.gz"))
    assert len(predictions) == 2

    out = tmp_path / "infer"
    run_workflow(bundle_workflow(configs, ["inference.json"], "infer", **overrides, output_dir=str(out)))
    volumes = sorted(out.glob("*_seg.nii.gz"))
    assert len(volumes) == 2
    for volume in volumes:
        source = nib.load(data / "images" / volume.name.replace("_seg", ""))
        result = nib.load(volume)
        assert result.shape == source.shape  # geometry restored (Invertd)
        assert np.allclose(result.affine, source.affine, atol=1e-5)
        assert set(np.unique(np.asarray(result.dataobj))) <= {0, 1, 2}


def test_pictures_2d_train_evaluate_infer(bundle_copy, tmp_path):
    data = tmp_path / "data"
    make_synthetic_dataset(data, spatial_dims=2, num_classes=2, num_train=4, num_val=1, num_test=2)
    configs = bundle_copy / "configs"
    overrides = {
        "backbone": "sam_vit_test",
        "dataset_dir": str(data),
        "num_workers": 0,
        "batch_size": 2,
        "label_names": {"1": "square", "2": "disc"},
    }
    run_workflow(
        bundle_workflow(
            configs,
            ["train.json", "pictures_2d.json"],
            "train",
            **overrides,
            **{"train#trainer#max_epochs": 1, "val_interval": 1},
        )
    )
    run_workflow(bundle_workflow(configs, ["train.json", "evaluate.json", "pictures_2d.json"], "train", **overrides))
    labels = [np.asarray(Image.open(p)) for p in sorted((bundle_copy / "eval" / "predictions").glob("*_seg.png"))]
    assert len(labels) == 2 and all(set(np.unique(lab)) <= {0, 1, 2} for lab in labels)
    out = tmp_path / "infer"
    files = ["inference.json", "pictures_2d_inference.json"]  # the default segments volumes and refuses pictures
    run_workflow(bundle_workflow(configs, files, "infer", **overrides, output_dir=str(out)))
    masks = sorted(out.glob("*_seg.png"))
    assert len(masks) == 2
    assert Image.open(masks[0]).size == Image.open(data / "images" / masks[0].name.replace("_seg", "")).size


@pytest.mark.slow
def test_litemedsam_on_real_hippocampus_volumes(shared_data, bundle_copy, tmp_path):
    # the real path on CPU: case-level datalist of the MSD volumes, LiteMedSAM's real weights, the packaged text
    # encoder on the two label names, two training iterations on sampled slices, volumetric evaluation of a test
    # volume with per-class Dice and HD95 in mm
    data = tmp_path / "hippocampus"
    write_hippocampus_datalist(shared_data / "msd_hippocampus", data)
    configs = bundle_copy / "configs"
    overrides = {"backbone": "litemedsam", "dataset_dir": str(data), "num_workers": 0, "batch_size": 1}
    train = run_workflow(
        bundle_workflow(
            configs,
            ["train.json"],
            "train",
            **overrides,
            **{"train#trainer#max_epochs": 1, "train#trainer#epoch_length": 2, "val_interval": 1},
        )
    )
    assert "all-MiniLM-L6-v2" in train.parser.get_parsed_content("network").text_encoder_description
    run_workflow(bundle_workflow(configs, ["train.json", "evaluate.json"], "train", **overrides))
    raw = (bundle_copy / "eval" / "val_hd95_mm_raw.csv").read_text().splitlines()
    assert len(raw) == 1 + 1 and raw[0].endswith("class0,class1,mean")
    prediction = sorted((bundle_copy / "eval" / "predictions").glob("*_seg.nii.gz"))[0]
    source = shared_data / "msd_hippocampus" / "images" / prediction.name.replace("_seg", "")
    assert nib.load(prediction).shape == nib.load(source).shape
