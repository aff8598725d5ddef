"""Datalist contract and the synthetic sample dataset."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from common.data import (
    build_datalist,
    case_id,
    load_datalist,
    make_synthetic_case,
    make_synthetic_dataset,
    write_datalist,
)


def test_case_id_strips_double_suffixes():
    assert case_id("a/b/case_001.nii.gz") == "case_001"
    assert case_id("img.PNG") == "img"
    assert case_id("x.nrrd") == "x"


@pytest.mark.parametrize("dims,suffix", [(2, ".png"), (3, ".nii.gz")])
def test_synthetic_dataset_layout(tmp_path, dims, suffix):
    path = make_synthetic_dataset(tmp_path, spatial_dims=dims, num_classes=2, num_train=3, num_val=1, num_test=1)
    datalist = json.loads(path.read_text())
    assert datalist["labels"] == {"1": "organ", "2": "lesion"}
    assert [len(datalist[s]) for s in ("training", "validation", "testing")] == [3, 1, 1]
    entry = datalist["training"][0]
    assert entry["image"].endswith(suffix) and not entry["image"].startswith("/")  # relative to dataset_dir
    files = load_datalist(tmp_path, "training")
    assert all(f["image"].startswith(str(tmp_path)) for f in files)
    if dims == 2:
        image = np.asarray(Image.open(files[0]["image"]))
        label = np.asarray(Image.open(files[0]["label"]))
        assert image.shape == label.shape == (160, 192) and image.dtype == np.uint8
    else:
        image = nib.load(files[0]["image"])
        label = nib.load(files[0]["label"])
        assert image.shape == label.shape == (48, 56, 24)
        assert np.allclose(image.affine, label.affine) and image.header.get_zooms() == (0.8, 0.8, 2.0)
        label = np.asarray(label.dataobj)
    assert set(np.unique(label)) <= {0, 1, 2} and (label == 1).any() and (label == 2).any()


def test_synthetic_cases_are_reproducible_and_differ_by_seed():
    a1, l1 = make_synthetic_case((64, 64), seed=3)
    a2, l2 = make_synthetic_case((64, 64), seed=3)
    b, _ = make_synthetic_case((64, 64), seed=4)
    assert np.array_equal(a1, a2) and np.array_equal(l1, l2) and not np.array_equal(a1, b)
    assert a1.min() >= 0 and a1.max() <= 1
    _, vessels = make_synthetic_case((64, 80), num_classes=3, seed=0)
    assert (vessels == 3).any()


def _write_pairs(root, names, label_suffix=""):
    (root / "img").mkdir()
    (root / "seg").mkdir()
    for name in names:
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "img" / f"{name}.png")
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "seg" / f"{name}{label_suffix}.png")


def test_build_datalist_pairs_and_splits_by_case(tmp_path):
    _write_pairs(tmp_path, [f"c{i:02d}" for i in range(10)], label_suffix="_mask")
    datalist = build_datalist(
        tmp_path,
        "img",
        "seg",
        label_suffix="_mask",
        val_fraction=0.2,
        test_fraction=0.1,
        seed=1,
        labels={"1": "lesion"},
    )
    sizes = {k: len(datalist[k]) for k in ("training", "validation", "testing")}
    assert sizes == {"training": 7, "validation": 2, "testing": 1}
    ids = [case_id(e["image"]) for split in ("training", "validation", "testing") for e in datalist[split]]
    assert sorted(ids) == [f"c{i:02d}" for i in range(10)]  # disjoint and complete
    assert all(e["label"] == f"seg/{case_id(e['image'])}_mask.png" for e in datalist["training"])
    again = build_datalist(
        tmp_path,
        "img",
        "seg",
        label_suffix="_mask",
        val_fraction=0.2,
        test_fraction=0.1,
        seed=1,
        labels={"1": "lesion"},
    )
    assert again == datalist  # seeded: reproducible
    write_datalist(datalist, tmp_path)
    assert len(load_datalist(tmp_path, "validation")) == 2


def test_build_datalist_refuses_unpaired_files(tmp_path):
    _write_pairs(tmp_path, ["a", "b"])
    (tmp_path / "seg" / "b.png").unlink()
    with pytest.raises(ValueError, match=r"without label \['b'\]"):
        build_datalist(tmp_path, "img", "seg")


def test_unlabelled_folder_goes_to_testing(tmp_path):
    _write_pairs(tmp_path, ["a", "b"])
    datalist = build_datalist(tmp_path, "img", label_dir=None)
    assert datalist["training"] == [] and len(datalist["testing"]) == 2


def test_missing_datalist_and_missing_files_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no datalist.json"):
        load_datalist(tmp_path)
    write_datalist({"training": [{"image": "nope.png", "label": "nope.png"}]}, tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_datalist(tmp_path)
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        build_datalist(tmp_path, "absent")
