"""BALR-SAM bundle: files, metadata, and train → evaluate → infer via ConfigWorkflow: the default configuration
(hippocampus MR volumes by slice sampling on LiteMedSAM, the shipped adapter's), the paper's binary 2D pictures
(``pictures_2d.json``) and the Synapse CT configuration, plus the real hippocampus path with LiteMedSAM."""

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
BUNDLE = REPO_ROOT / "bundles" / "balr_sam_segmentation"


def test_bundle_files_metadata_and_large_files():
    check_bundle_files(
        BUNDLE,
        ["pictures_2d.json", "pictures_2d_inference.json", "isic2017.json", "isic2017_inference.json", "synapse.json",
         "synapse_inference.json", "merged_inference.json", "native_patches.json"],
        "sam_vit_h",
    )
    train = json.loads((BUNDLE / "configs" / "train.json").read_text())
    inference = json.loads((BUNDLE / "configs" / "inference.json").read_text())
    # the network the evaluation and inference build must be the one training built
    assert train["network_def"] == inference["network_def"]
    assert all(train[k] == inference[k] for k in train["network_def"].values() if k.startswith("@") for k in [k[1:]])
    # and so must each overlay pair: what an overlay sets for training, its inference overlay sets alike
    for overlay in ("pictures_2d", "isic2017", "synapse"):
        trained = json.loads((BUNDLE / "configs" / f"{overlay}.json").read_text())
        served = json.loads((BUNDLE / "configs" / f"{overlay}_inference.json").read_text())
        for key in ("backbone", "input_size", "label_names"):
            assert trained.get(key, train[key]) == served.get(key, inference[key]), (overlay, key)


def test_binary_2d_pictures_train_evaluate_infer(bundle_copy, tmp_path):
    data = tmp_path / "data"
    make_synthetic_dataset(data, spatial_dims=2, num_classes=1, num_train=4, num_val=2, num_test=2)
    configs = bundle_copy / "configs"
    overrides = {"backbone": "sam_vit_test", "dataset_dir": str(data)}
    train = bundle_workflow(configs, ["train.json", "pictures_2d.json"], "train", **overrides, max_epochs=2)
    train.initialize()
    assert train.check_properties() == []
    net = train.parser.get_parsed_content("network")
    loss = train.parser.get_parsed_content("loss")
    assert loss.ramp_iterations == 2  # half of 2 epochs × 2 iterations
    before = {k: v.clone() for k, v in net.state_dict().items()}
    train.run()
    train.finalize()
    assert int(loss.step) == 4
    changed = {k for k, v in net.state_dict().items() if not torch.equal(before[k], v)}
    for part in (".adapter_up", "cden.", "class_tokens", "mask_decoder.transformer"):
        assert any(part in k for k in changed), part
    assert not any("prompt_encoder" in k or k.endswith(("qkv.weight", "attn.proj.weight")) for k in changed)
    checkpoint = torch.load(bundle_copy / "models" / "model.pt", weights_only=True)
    assert any(".adapter_down" in k for k in checkpoint) and not any(k.endswith("qkv.weight") for k in checkpoint)

    run_workflow(bundle_workflow(configs, ["train.json", "evaluate.json", "pictures_2d.json"], "train", **overrides))
    metrics = dict(line.split(",") for line in (bundle_copy / "eval" / "metrics.csv").read_text().splitlines())
    assert set(metrics) == {"val_mean_dice", "val_mean_iou", "val_hd95"}
    assert len(list((bundle_copy / "eval" / "predictions").glob("*_seg.png"))) == 2

    out = tmp_path / "infer"
    files = ["inference.json", "pictures_2d_inference.json"]
    run_workflow(bundle_workflow(configs, files, "infer", **overrides, output_dir=str(out)))
    masks = sorted(out.glob("*_seg.png"))
    assert len(masks) == 2
    assert Image.open(masks[0]).size == Image.open(data / "images" / masks[0].name.replace("_seg", "")).size


def test_ablation_switches_reach_the_network(bundle_copy, tmp_path):
    data = tmp_path / "data"
    make_synthetic_dataset(data, spatial_dims=2, num_classes=1, num_train=2, num_val=1, num_test=1)
    workflow = bundle_workflow(
        bundle_copy / "configs",
        ["train.json", "pictures_2d.json"],
        "train",
        backbone="sam_vit_test",
        dataset_dir=str(data),
        use_cden=False,
        use_tensor_attention=False,
        boundary_weight=0.0,
    )
    workflow.initialize()
    net = workflow.parser.get_parsed_content("network")
    assert net.cden is None and net.tensor_attention_layers == [] and net.adapted_layers
    assert workflow.parser.get_parsed_content("loss").max_weight == 0.0


def test_synapse_style_3d_train_evaluate_infer(bundle_copy, tmp_path):
    data = tmp_path / "data"
    make_synthetic_dataset(data, spatial_dims=3, num_classes=2, num_train=3, num_val=1, num_test=2, shape=(40, 48, 12))
    configs = bundle_copy / "configs"
    # synthetic labels are already 0/1/2: the Synapse 13 → 8 label mapping (synapse.json adds it last) is switched off
    overrides = {
        "backbone": "sam_vit_test",
        "dataset_dir": str(data),
        "label_names": {"1": "organ a", "2": "organ b"},
        "slice_size": [48, 48],
        "load_transforms#4#_disabled_": True,
    }
    run_workflow(
        bundle_workflow(
            configs, ["train.json", "synapse.json"], "train", **overrides, **{"train#trainer#max_epochs": 1}
        )
    )
    assert (bundle_copy / "models" / "model.pt").is_file()
    run_workflow(bundle_workflow(configs, ["train.json", "evaluate.json", "synapse.json"], "train", **overrides))
    raw = (bundle_copy / "eval" / "val_mean_dice_raw.csv").read_text().splitlines()
    assert raw[0].split(",")[1:] == ["class0", "class1", "mean"] and len(raw) == 1 + 2  # per class, per volume
    hd95 = (bundle_copy / "eval" / "val_hd95_raw.csv").read_text().splitlines()
    assert len(hd95) == 1 + 2

    out = tmp_path / "infer"
    overrides.pop("load_transforms#4#_disabled_")
    run_workflow(
        bundle_workflow(
            configs, ["inference.json", "synapse_inference.json"], "infer", **overrides, output_dir=str(out)
        )
    )
    volumes = sorted(out.glob("*_seg.nii.gz"))
    assert len(volumes) == 2
    for volume in volumes:
        source = nib.load(data / "images" / volume.name.replace("_seg", ""))
        result = nib.load(volume)
        assert result.shape == source.shape and np.allclose(result.affine, source.affine, atol=1e-5)
        assert set(np.unique(np.asarray(result.dataobj))) <= {0, 1, 2}


@pytest.mark.slow
def test_litemedsam_on_real_hippocampus(shared_data, bundle_copy, tmp_path):
    # the real multi-class path on CPU: LiteMedSAM's real weights, two training iterations on sampled slices,
    # volumetric evaluation of one test volume with per-class Dice
    data = tmp_path / "hippocampus"
    write_hippocampus_datalist(shared_data / "msd_hippocampus", data)
    configs = bundle_copy / "configs"
    files = ["train.json"]  # the default configuration is this one
    overrides = {"dataset_dir": str(data), "num_workers": 0, "batch_size": 1}
    run_workflow(
        bundle_workflow(
            configs,
            files,
            "train",
            **overrides,
            samples_per_image=2,
            **{"train#trainer#max_epochs": 1, "train#trainer#epoch_length": 2},
        )
    )
    run_workflow(bundle_workflow(configs, [files[0], "evaluate.json", *files[1:]], "train", **overrides))
    raw = (bundle_copy / "eval" / "val_mean_dice_raw.csv").read_text().splitlines()
    assert len(raw) == 1 + 1 and raw[0].endswith("class0,class1,mean")
    prediction = sorted((bundle_copy / "eval" / "predictions").glob("*_seg.nii.gz"))[0]
    source = shared_data / "msd_hippocampus" / "images" / prediction.name.replace("_seg", "")
    assert nib.load(prediction).shape == nib.load(source).shape


@pytest.mark.slow
def test_decoder_ablation_benchmark_runs_on_real_slices(shared_data, tmp_path):
    from common.benchmark.experiments.balr_decoder_ablation import main

    write_hippocampus_datalist(shared_data / "msd_hippocampus", tmp_path / "data")
    args = ["--dataset_dir", str(tmp_path / "data"), "--output_dir", str(tmp_path / "out"), "--num_volumes", "3"]
    assert main([*args, "--slices_per_volume", "2", "--iterations", "2", "--held_out_fraction", "0.34"]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert [(r["use_tensor_attention"], r["boundary_loss"]) for r in results] == [
        (True, True),
        (True, False),
        (False, True),
        (False, False),
    ]
    # the tensor attention trains fewer decoder parameters; the loss with the boundary term differs once it ramps in
    assert results[0]["trainable"] < results[2]["trainable"]
    assert results[0]["loss_last_10"] != results[1]["loss_last_10"]
    assert all(0.0 <= d <= 1.0 or d != d for r in results for d in r["held_out_dice"].values())
