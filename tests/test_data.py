"""Datalist contract and the synthetic sample dataset."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from common.data import build_datalist, case_id, load_datalist, write_datalist
from common.datasets import make_synthetic_case, make_synthetic_dataset


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


def test_split_cases_is_seeded_disjoint_and_complete():
    from common.data import split_cases

    cases = [f"case_{i:02d}" for i in range(20)]
    split = split_cases(cases, val_fraction=0.1, test_fraction=0.2, seed=3)
    assert [len(split[s]) for s in ("training", "validation", "testing")] == [14, 2, 4]
    assert sorted(sum(split.values(), [])) == cases
    assert split == split_cases(list(reversed(cases)), 0.1, 0.2, 3)  # input order does not matter
    assert split != split_cases(cases, 0.1, 0.2, 4)
    with pytest.raises(ValueError, match="fractions"):
        split_cases(cases, 0.5, 0.5, 0)


def test_lits_layout_datalist(tmp_path):
    from common.datasets.lits import build_lits_datalist, main

    root = tmp_path / "LiTS"
    for batch, numbers in (("Training Batch 1", range(0, 4)), ("Training Batch 2", range(4, 10))):
        (root / batch).mkdir(parents=True)
        for n in numbers:
            (root / batch / f"volume-{n}.nii").write_bytes(b"")
            (root / batch / f"segmentation-{n}.nii").write_bytes(b"")
    out = tmp_path / "lits"
    assert (
        main(["--dataset_dir", str(root), "--output_dir", str(out), "--val_fraction", "0.1", "--test_fraction", "0.2"])
        == 0
    )
    datalist = json.loads((out / "datalist.json").read_text())
    assert datalist["labels"] == {"1": "liver", "2": "tumor"}
    assert [len(datalist[s]) for s in ("training", "validation", "testing")] == [7, 1, 2]
    for entry in datalist["training"]:
        image, label = (out / entry["image"]).resolve(), (out / entry["label"]).resolve()
        assert image.is_file() and label.name == image.name.replace("volume", "segmentation")
    (root / "Training Batch 2" / "segmentation-9.nii").unlink()
    with pytest.raises(ValueError, match="volume-9.nii"):
        build_lits_datalist(root)


def test_synapse_datalist_keeps_the_benchmark_test_cases_and_maps_13_labels_to_8(tmp_path):
    import json

    from monai.transforms import MapLabelValue

    from common.datasets.synapse import (
        SYNAPSE_LABELS,
        SYNAPSE_RAW_LABELS,
        SYNAPSE_TARGET_LABELS,
        SYNAPSE_TEST_CASES,
        build_synapse_datalist,
        main,
    )

    root = tmp_path / "RawData" / "Training"
    (root / "img").mkdir(parents=True)
    (root / "label").mkdir()
    numbers = ["0001", "0002", "0005", "0006", "0007", "0009", "0010", "0022"]
    for n in numbers:
        (root / "img" / f"img{n}.nii.gz").write_bytes(b"x")
        (root / "label" / f"label{n}.nii.gz").write_bytes(b"x")
    assert main(["--dataset_dir", str(tmp_path), "--output_dir", str(tmp_path / "out"), "--val_cases", "1"]) == 0
    datalist = json.loads((tmp_path / "out" / "datalist.json").read_text())
    assert datalist["labels"] == SYNAPSE_LABELS and len(SYNAPSE_LABELS) == 8
    test = sorted(e["image"].split("img")[-1][:4] for e in datalist["testing"])
    assert test == ["0001", "0002", "0022"] and set(test) <= set(SYNAPSE_TEST_CASES)
    assert len(datalist["validation"]) == 1 and len(datalist["training"]) == 4
    assert (tmp_path / "out" / datalist["training"][0]["label"]).resolve().is_file()

    # raw BTCV ids → benchmark ids: spleen 1→7, aorta 8→1, pancreas 11→6, oesophagus 5 and the veins → background
    mapped = MapLabelValue(SYNAPSE_RAW_LABELS, SYNAPSE_TARGET_LABELS)(np.arange(14))
    assert mapped.tolist() == [0, 7, 4, 3, 2, 0, 5, 8, 1, 0, 0, 6, 0, 0]

    (root / "label" / "label0010.nii.gz").unlink()
    with pytest.raises(ValueError, match="without label"):
        build_synapse_datalist(tmp_path)


@pytest.mark.parametrize(
    "module, arguments, message",
    [
        ("lits", ["--dataset_dir", "{missing}"], "LiTS folder not found"),
        ("synapse", ["--dataset_dir", "{missing}"], "Synapse folder not found"),
        ("make_datalist", ["--dataset_dir", "{missing}"], "image folder not found"),
        ("fundus", ["--dataset", "chase_db1={missing}"], "chase_db1: folder not found"),
        ("fundus", ["--task", "disc_cup", "--dataset", "chase_db1={here}"], "chase_db1 annotates vessel, not disc_cup"),
        ("lesions", ["--dataset", "kvasir={here}"], "unknown dataset 'kvasir'"),
    ],
)
def test_a_dataset_command_reports_a_bad_folder_in_one_line_and_writes_nothing(
    tmp_path, capsys, module, arguments, message
):
    import importlib

    main = importlib.import_module(f"common.datasets.{module}").main
    output = tmp_path / "out"
    paths = {"missing": str(tmp_path / "missing"), "here": str(tmp_path)}
    with pytest.raises(SystemExit) as exit_info:
        main([a.format(**paths) for a in arguments] + ["--output_dir", str(output)])
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert stderr.strip().splitlines() == [stderr.strip()] and stderr.startswith("error: ") and message in stderr
    assert not output.exists()  # no output folder for a run that failed at once


@pytest.mark.parametrize(
    "module, arguments, message",
    [
        ("fundus", ["--dataset", "chase_db1", "--output_dir", "out"], "expects NAME=FOLDER, got 'chase_db1'"),
        ("make_datalist", ["--dataset_dir", ".", "--labels", "{bad"], "expects a JSON object"),
    ],
)
def test_a_dataset_command_reports_a_malformed_option_through_argparse(capsys, module, arguments, message):
    import importlib

    main = importlib.import_module(f"common.datasets.{module}").main
    with pytest.raises(SystemExit) as exit_info:
        main(arguments)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err.splitlines()[-1]
