"""Fundus dataset readers on miniature copies of each published layout, and on the real CHASE_DB1."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from common.data import load_datalist
from common.datasets.fundus import FUNDUS_DATASETS, field_of_view, prepare_fundus_datalist

H, W = 24, 32


def _fundus(path, value=200):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.zeros((H, W, 3), np.uint8)
    yy, xx = np.mgrid[:H, :W]
    image[(yy - H / 2) ** 2 + (xx - W / 2) ** 2 < (H / 2.2) ** 2] = value
    Image.fromarray(image).save(path)


def _mask(path, box=(4, 12, 6, 20), value=255, mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.zeros((H, W), np.uint8)
    mask[box[0] : box[1], box[2] : box[3]] = value
    Image.fromarray(mask).convert(mode).save(path)


def _labelme(path, shapes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"shapes": [{"label": k, "points": v} for k, v in shapes.items()]}))


DISC = [[6, 4], [24, 4], [24, 20], [6, 20]]
CUP = [[12, 8], [18, 8], [18, 14], [12, 14]]


def make_layout(name, root):
    """Write two cases in ``name``'s published layout under ``root``."""
    if name == "drive":
        for folder, tag, numbers in (("training", "training", (21, 22)), ("test", "test", (1, 2))):
            for n in numbers:
                _fundus(root / folder / "images" / f"{n:02d}_{tag}.tif")
                _mask(root / folder / "1st_manual" / f"{n:02d}_manual1.gif")
                _mask(root / folder / "mask" / f"{n:02d}_{tag}_mask.gif", box=(0, H, 0, W))
    elif name == "chase_db1":
        for stem in ("Image_01L", "Image_12R"):
            _fundus(root / f"{stem}.jpg")
            _mask(root / f"{stem}_1stHO.png", mode="1")  # 1-bit PNG, as released
    elif name == "stare":
        for stem in ("im0001", "im0002"):  # images gzip-compressed as distributed, labels plain
            _fundus(root / "tmp.ppm")
            (root / "stare-images").mkdir(exist_ok=True)
            (root / "stare-images" / f"{stem}.ppm.gz").write_bytes(gzip.compress((root / "tmp.ppm").read_bytes()))
            _mask(root / "labels-ah" / f"{stem}.ah.ppm", mode="L")
        (root / "tmp.ppm").unlink()
    elif name == "hrf":
        for stem in ("01_dr", "02_h"):
            _fundus(root / "images" / f"{stem}.JPG")
            _mask(root / "manual1" / f"{stem}.tif")
            _mask(root / "mask" / f"{stem}_mask.tif", box=(0, H, 0, W))
    elif name == "hrf_av":
        for folder in ("training", "test"):
            _fundus(root / folder / "images" / "01_dr.jpg")
            _mask(root / folder / "vessels" / "01_dr.png")
            _mask(root / folder / "fov" / "01_dr.png", box=(0, H, 0, W))
    elif name == "fives":
        for folder in ("train", "test"):
            _fundus(root / folder / "Original" / "1_A.png")
            _mask(root / folder / "Ground truth" / "1_A.png")
    elif name == "refuge2":
        for folder in ("train", "test"):
            image = root / folder / "images" / "g0001.jpg"
            _fundus(image)
            mask = np.full((H, W), 255, np.uint8)
            mask[4:20, 6:24] = 128
            mask[8:14, 12:18] = 0
            (root / folder / "mask").mkdir(parents=True)
            Image.fromarray(mask).save(root / folder / "mask" / "g0001.bmp")
    elif name == "drishti_gs":
        for folder in ("Training", "Test"):
            stem = f"drishtiGS_{'002' if folder == 'Training' else '001'}"
            _fundus(root / folder / "Images" / f"{stem}.png")
            soft = root / folder / "GT" / stem / "SoftMap"
            _mask(soft / f"{stem}_ODsegSoftmap.png", box=(4, 20, 6, 24))
            _mask(soft / f"{stem}_cupsegSoftmap.png", box=(8, 14, 12, 18))
    elif name == "origa":
        for stem in ("001", "002"):
            _fundus(root / "Images" / f"{stem}.jpg")
            mask = np.zeros((H + 2, W + 4), np.uint8)  # wider and taller than the image, as released
            mask[5:21, 8:26] = 1
            mask[9:15, 14:20] = 2
            (root / "Semi-automatic-annotations").mkdir(exist_ok=True)
            savemat(root / "Semi-automatic-annotations" / f"{stem}.mat", {"mask": mask})
    elif name == "g1020":
        for stem in ("image_0", "image_1"):
            _fundus(root / "Images" / f"{stem}.jpg")
            _labelme(root / "Images" / f"{stem}.json", {"disc": DISC, "cup": CUP})
    elif name == "grape":
        for stem in ("1_OD_1", "2_OS_1"):
            _fundus(root / "ROI images" / f"{stem}.jpg")
            _labelme(root / "json" / f"{stem}.json", {"OD": DISC, "OC": CUP})
    elif name == "papila":
        for stem in ("RET002OD", "RET003OS"):
            _fundus(root / "FundusImages" / f"{stem}.jpg")
            contours = root / "ExpertsSegmentations" / "Contours"
            contours.mkdir(parents=True, exist_ok=True)
            np.savetxt(contours / f"{stem}_disc_exp1.txt", np.array(DISC, float))
            np.savetxt(contours / f"{stem}_cup_exp1.txt", np.array(CUP, float))
    elif name == "image_folder":
        for stem in ("a", "b"):
            _fundus(root / "images" / f"{stem}.png")
            _mask(root / "labels" / f"{stem}.png", value=1)


@pytest.mark.parametrize("name", [n for n in FUNDUS_DATASETS])
def test_reader_converts_the_published_layout(tmp_path, name):
    task = FUNDUS_DATASETS[name][0]
    task = "vessel" if task == "any" else task
    make_layout(name, tmp_path / "raw")
    path = prepare_fundus_datalist(
        {name: tmp_path / "raw"}, tmp_path / "out", task=task, val_fraction=0.0, test_fraction=0.5
    )
    datalist = json.loads(path.read_text())
    entries = datalist["training"] + datalist["testing"]
    assert len(entries) == (4 if name == "drive" else 2)
    for split in ("training", "testing"):
        assert load_datalist(tmp_path / "out", split)  # every referenced file exists
    for entry in entries:
        label = np.asarray(Image.open(tmp_path / "out" / entry["label"]))
        fov = np.asarray(Image.open(tmp_path / "out" / entry["fov"]))
        assert label.shape == fov.shape == (H, W)
        assert fov.any() and label.any()
        if task == "vessel":
            assert set(np.unique(label)) == {0, 1}
        else:  # nested disc/cup: the cup (2) lies inside the disc (1 or 2)
            assert set(np.unique(label)) == {0, 1, 2}
            rows, cols = np.nonzero(label == 2)
            assert (label[rows.min() - 1, cols.min()] >= 1) or (label[rows.min(), cols.min() - 1] >= 1)


def test_official_splits_are_kept(tmp_path):
    make_layout("drive", tmp_path / "drive")
    make_layout("chase_db1", tmp_path / "chase")
    path = prepare_fundus_datalist(
        {"drive": tmp_path / "drive", "chase_db1": tmp_path / "chase"}, tmp_path / "out", val_fraction=0.0
    )
    datalist = json.loads(path.read_text())
    training = sorted(e["label"] for e in datalist["training"])
    testing = sorted(e["label"] for e in datalist["testing"])
    assert any("21_training" in t for t in training) and any("01_test" in t for t in testing)
    assert any("Image_01L" in t for t in training) and any("Image_12R" in t for t in testing)
    assert {e["dataset"] for e in datalist["training"]} == {"drive", "chase_db1"}  # pooled


def test_task_mismatch_and_missing_layout_are_clear(tmp_path):
    make_layout("refuge2", tmp_path / "refuge")
    with pytest.raises(ValueError, match="annotates disc_cup, not vessel"):
        prepare_fundus_datalist({"refuge2": tmp_path / "refuge"}, tmp_path / "out", task="vessel")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="stare-images"):
        prepare_fundus_datalist({"stare": tmp_path / "empty"}, tmp_path / "out")
    with pytest.raises(ValueError, match="unknown dataset"):
        prepare_fundus_datalist({"nope": tmp_path / "empty"}, tmp_path / "out")


def test_field_of_view_of_a_dark_surround():
    image = np.zeros((20, 20, 3), np.uint8)
    image[5:15, 5:15] = 120
    fov = field_of_view(image)
    assert fov[10, 10] and not fov[0, 0] and fov.sum() == 100


def test_real_chase_db1_split(shared_data, tmp_path):
    path = prepare_fundus_datalist({"chase_db1": shared_data / "chase_db1"}, tmp_path, val_fraction=0.1)
    datalist = json.loads(path.read_text())
    counts = {k: len(datalist[k]) for k in ("training", "validation", "testing")}
    assert counts == {"training": 18, "validation": 2, "testing": 8}  # children 01-10 train, 11-14 test
    assert all(int(e["image"].split("Image_")[1][:2]) >= 11 for e in datalist["testing"])
    label = np.asarray(Image.open(tmp_path / datalist["testing"][0]["label"]))
    assert label.shape == (960, 999) and 0.03 < label.mean() < 0.15  # vessels are a few percent of the image
