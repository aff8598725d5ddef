"""Training data is checked before training starts: one ``error:`` line per problem naming the case, on the route a
user takes (``python -m monai.bundle run`` of a bundle's train.json), never a silent run on empty targets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bundle_helpers import REPO_ROOT
from PIL import Image

from common.data import load_datalist, training_datalist
from common.datasets import make_synthetic_dataset


def _data(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    make_synthetic_dataset(data, spatial_dims=2, num_classes=2, num_train=3, num_val=1, num_test=0, shape=(40, 48))
    return data


def _exit_message(call) -> str:
    with pytest.raises(SystemExit) as raised:
        call()
    assert raised.value.code not in (0, None)
    return str(raised.value.code)


def test_labels_of_the_declared_values_and_shapes_pass(tmp_path):
    data = _data(tmp_path)
    assert len(training_datalist(data, "training", [1, 2])) == 3
    assert len(training_datalist(data, "validation", [1, 2])) == 1
    assert training_datalist(data, "training", None) == load_datalist(data, "training")  # nothing read


def test_each_label_problem_is_one_line_naming_the_case(tmp_path):
    data = _data(tmp_path)
    items = load_datalist(data, "training")
    first, second, third = (Path(item["label"]) for item in items)
    Image.fromarray((np.asarray(Image.open(first)) > 0).astype(np.uint8) * 255).save(first)  # a 0/255 mask
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(second)  # not its image's shape
    message = _exit_message(lambda: training_datalist(data, "training", [1, 2]))
    lines = message.splitlines()
    assert lines[0].startswith(f"error: {first}: label values [255] are not declared") and "0/255 mask" in lines[0]
    assert lines[1] == f"error: {second}: shape (20, 20) differs from its image's (48, 40)"
    assert lines[-1] == "2 of 3 training case(s) cannot be trained on" and str(third) not in message
    assert len(training_datalist(data, "training", None)) == 3  # a binarising configuration does not check values


def test_datalist_problems_are_one_line(tmp_path):
    data = _data(tmp_path)
    datalist = json.loads((data / "datalist.json").read_text())
    del datalist["training"][0]["label"]
    (data / "datalist.json").write_text(json.dumps(datalist))
    assert "no 'label' in its datalist entry" in _exit_message(lambda: training_datalist(data, "training", [1, 2]))
    (data / "datalist.json").write_text(json.dumps({**datalist, "training": []}))
    assert "'training' list is missing or empty" in _exit_message(lambda: training_datalist(data))
    assert training_datalist(data, "validation", [1, 2])  # the validation list is still there
    (data / "datalist.json").write_text(json.dumps({"training": datalist["training"][1:]}))
    assert training_datalist(data, "validation", [1, 2]) == []  # none: training keeps its last weights
    (data / "datalist.json").write_text('{"training": [')
    assert "not valid JSON" in _exit_message(lambda: training_datalist(data))
    (data / "datalist.json").unlink()
    assert "no datalist.json" in _exit_message(lambda: training_datalist(data))


def test_a_bundle_refuses_0_255_masks_before_training_with_one_line(tmp_path):
    # SAM2LoRA's vessel labels are 1: a folder of 0/255 masks used to train for hours on empty targets
    data = tmp_path / "data"
    make_synthetic_dataset(data, spatial_dims=2, num_classes=1, num_train=2, num_val=1, num_test=0, shape=(40, 48))
    for label in (data / "labels").glob("*.png"):
        Image.fromarray((np.asarray(Image.open(label)) > 0).astype(np.uint8) * 255).save(label)
    bundle = REPO_ROOT / "bundles" / "sam2lora_fundus_segmentation"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "train.json"),
               "--bundle_root", str(tmp_path / "bundle"), "--dataset_dir", str(data), "--backbone", "sam2.1_hiera_test"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)  # fmt: skip
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert len(errors) == 2 and all("label values [255] are not declared" in e for e in errors), errors
    assert done.stderr.strip().endswith("2 of 2 training case(s) cannot be trained on")
    assert not (tmp_path / "bundle" / "models").exists()  # stopped before anything was built
