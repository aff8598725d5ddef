"""Polyp and skin-lesion readers on miniature copies of each published layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from common.data import load_datalist
from common.datasets.lesions import LESION_DATASETS, prepare_lesion_datalist


def _pair(image_path, mask_path, ext_image=None):
    image_path.parent.mkdir(parents=True, exist_ok=True)
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((20, 24, 3), 120, np.uint8)).save(image_path)
    mask = np.zeros((20, 24), np.uint8)
    mask[5:15, 6:18] = 255
    Image.fromarray(mask).save(mask_path)


def make_layout(name, root):
    if name == "kvasir_seg":
        for stem in ("cju0qkwl35piu0993l0dewei2", "cju0qoxqj9q6s0835b43399p4"):
            _pair(root / "images" / f"{stem}.jpg", root / "masks" / f"{stem}.jpg")
    elif name == "cvc_clinicdb":
        for n in (1, 2, 3):
            _pair(root / "Original" / f"{n}.tif", root / "Ground Truth" / f"{n}.tif")
    elif name == "isic2017":
        for part, stem in (("Training", "ISIC_0000000"), ("Validation", "ISIC_0001769"), ("Test_v2", "ISIC_0012086")):
            _pair(
                root / f"ISIC-2017_{part}_Data" / f"{stem}.jpg",
                root / f"ISIC-2017_{part}_Part1_GroundTruth" / f"{stem}_segmentation.png",
            )
        Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(
            root / "ISIC-2017_Training_Data" / "ISIC_0000000_superpixels.png"
        )
    elif name == "image_folder":
        for stem in ("a", "b"):
            _pair(root / "images" / f"{stem}.png", root / "masks" / f"{stem}.png")


@pytest.mark.parametrize("name", list(LESION_DATASETS))
def test_reader_converts_the_published_layout(tmp_path, name):
    make_layout(name, tmp_path / "raw")
    path = prepare_lesion_datalist({name: tmp_path / "raw"}, tmp_path / "out", test_fraction=0.5, val_fraction=0.0)
    datalist = json.loads(path.read_text())
    entries = datalist["training"] + datalist["testing"]
    assert len(entries) == {"kvasir_seg": 2, "cvc_clinicdb": 3, "isic2017": 3, "image_folder": 2}[name]
    assert datalist["labels"] == {"1": "lesion"}
    assert load_datalist(tmp_path / "out", "training")
    for entry in entries:
        label = np.asarray(Image.open(tmp_path / "out" / entry["label"]))
        assert set(np.unique(label)) == {0, 1} and label[10, 10] == 1 and "fov" not in entry
    if name == "isic2017":  # official parts: training + validation → training, test → testing
        assert [e["image"].rsplit("/", 1)[1] for e in datalist["testing"]] == ["ISIC_0012086.jpg"]
