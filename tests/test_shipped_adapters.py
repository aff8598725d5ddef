"""The adapters the bundles ship in ``models/model.pt``: each one loads on its real backbone through the bundle's
**default** ``inference.json`` (the documented command, no download, no extra setting) and segments real held-out
data close to the accuracy measured for it in its model card. Skipped with a reason when ``../shared`` is absent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from common.metrics import vessel_metrics, volume_metrics
from common.data import build_datalist

REPO_ROOT = Path(__file__).resolve().parents[1]

#: bundle → (test volumes of the accuracy split it is checked on, their mean Dice measured with the shipped file
#: (anterior, posterior; the command in the bundle card), the floor asserted here)
HIPPOCAMPUS_ADAPTERS = {
    # measured 0.864 on these four (0.885/0.893, 0.822/0.817, 0.881/0.845, 0.893/0.871); 0.843 on all 52
    "balr_sam_segmentation": {"cases": 4, "measured": 0.864, "floor": 0.84},
    # measured 0.836 on these four (0.841/0.871, 0.814/0.810, 0.841/0.829, 0.845/0.836); 0.817 on all 52
    "s_sam_text_prompted_segmentation": {"cases": 4, "measured": 0.836, "floor": 0.81},
    # measured 0.865 on these four (0.902/0.895, 0.835/0.811, 0.873/0.840, 0.900/0.861); 0.840 on all 52
    "conv_lora_sam_segmentation": {"cases": 4, "measured": 0.865, "floor": 0.84},
}


def _hippocampus_test_cases(msd_hippocampus: Path, count: int) -> list[dict]:
    """The first ``count`` test volumes of the accuracy runs' split (seed 0: 70 % / 10 % / 20 %, by case)."""
    split = build_datalist(msd_hippocampus, "images", "labels", val_fraction=0.1, test_fraction=0.2, seed=0,
                           skip_unlabelled=True)  # fmt: skip
    return [{k: str(msd_hippocampus / v) for k, v in case.items()} for case in split["testing"][:count]]


@pytest.mark.parametrize("name", sorted(HIPPOCAMPUS_ADAPTERS))
def test_shipped_hippocampus_adapter_segments_held_out_mr(name, shared_data, tmp_path):
    bundle = REPO_ROOT / "bundles" / name
    expected = HIPPOCAMPUS_ADAPTERS[name]
    assert (bundle / "models" / "model.pt").is_file(), "the bundle ships its trained adapter"
    cases = _hippocampus_test_cases(shared_data / "msd_hippocampus", expected["cases"])
    scans = tmp_path / "scans"
    scans.mkdir()
    for case in cases:
        os.symlink(case["image"], scans / Path(case["image"]).name)
    out = tmp_path / "out"
    # the documented route, as a user runs it on a fresh clone: the bundle's own inference.json and nothing else
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "inference.json"),
               "--bundle_root", str(bundle), "--input", str(scans), "--output_dir", str(out)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "MONAI_SAM_PEFT_CPU_PRECISION"}  # the bundle's own choice
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    dice = []
    for case in cases:
        stem = Path(case["image"]).name.split(".")[0]
        truth_file = nib.load(case["label"])
        truth = np.asarray(truth_file.dataobj).round().astype(int)
        prediction = nib.load(out / f"{stem}_seg.nii.gz")
        assert prediction.shape == truth.shape and np.allclose(prediction.affine, truth_file.affine, atol=1e-5)
        metrics = volume_metrics(np.asarray(prediction.dataobj).astype(int), truth, 2, truth_file.header.get_zooms())
        dice.append(metrics["dice"])
    mean = np.mean(dice, axis=0)
    assert mean.mean() >= expected["floor"], f"mean Dice {mean.round(3).tolist()} (measured {expected['measured']})"


#: SAM2LoRA's vessel adapter on one CHASE_DB1 test picture (child 11, never seen in training or model choice):
#: vessel Dice inside the field of view against the first observer, measured with the shipped file (the command in
#: the bundle card), and the floor asserted here
FUNDUS_ADAPTER = {"picture": "Image_11L", "measured": 0.820, "floor": 0.80}


def test_shipped_fundus_adapter_segments_a_held_out_chase_db1_photograph(shared_data, tmp_path):
    from PIL import Image

    from common.data import field_of_view

    bundle = REPO_ROOT / "bundles" / "sam2lora_fundus_segmentation"
    assert (bundle / "models" / "model.pt").is_file(), "the bundle ships its trained adapter"
    source = shared_data / "chase_db1" / f"{FUNDUS_ADAPTER['picture']}.jpg"
    photo = tmp_path / "photo.jpg"
    os.symlink(source, photo)
    out = tmp_path / "out"
    # the documented route on a fresh clone: the bundle's own inference.json, one photograph, no FOV file
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "inference.json"),
               "--bundle_root", str(bundle), "--input", str(photo), "--output_dir", str(out)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "MONAI_SAM_PEFT_CPU_PRECISION"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    mask = np.asarray(Image.open(out / "photo_seg.png"))
    picture = np.asarray(Image.open(source))
    truth = np.asarray(Image.open(shared_data / "chase_db1" / f"{FUNDUS_ADAPTER['picture']}_1stHO.png")) > 0
    assert mask.shape == truth.shape == picture.shape[:2] and set(np.unique(mask)) <= {0, 1}
    inside = field_of_view(picture)
    assert not mask[~inside].any()  # the camera's dark surround is cleared without a FOV file
    probabilities = np.asarray(Image.open(out / "photo_prob.tif"))
    assert probabilities.shape == mask.shape and np.array_equal(probabilities > 0.5, mask > 0)
    assert (out / "photo_montage.png").is_file()
    dice = vessel_metrics(mask, probabilities, truth, inside)["dice"]
    assert dice >= FUNDUS_ADAPTER["floor"], f"vessel Dice {dice:.3f} (measured {FUNDUS_ADAPTER['measured']})"


#: the same adapter on two pictures of the other camera's test set (HRF, Canon CR-1 at 3504×2336: field of view about
#: 3.6× CHASE_DB1's; HRF's training pictures were in its training, these never in training or model choice), segmented by ``common.segment`` with no flag; vessel
#: Dice inside HRF's own FOV mask, measured with the shipped file, and the floor asserted here
# measured 0.770 on these two (0.740, 0.800); 0.791 on all 21 (bundle 0.8.0, two mirrored passes)
OTHER_CAMERA = {"pictures": ("09_dr", "09_h"), "measured": 0.770, "floor": 0.75}


def test_shipped_fundus_adapter_segments_photographs_from_another_camera(shared_data, tmp_path):
    from PIL import Image

    bundle = REPO_ROOT / "bundles" / "sam2lora_fundus_segmentation"
    hrf = shared_data / "hrf_av" / "test"
    scans = tmp_path / "scans"
    scans.mkdir()
    for name in OTHER_CAMERA["pictures"]:
        os.symlink(hrf / "images" / f"{name}.jpg", scans / f"{name}.jpg")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "common.segment", "--bundle", str(bundle), "--input", str(scans), "--output",
               str(out), "--quiet"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "MONAI_SAM_PEFT_CPU_PRECISION"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    dice = []
    for name in OTHER_CAMERA["pictures"]:
        mask = np.asarray(Image.open(out / f"{name}_seg.png"))
        truth = np.asarray(Image.open(hrf / "vessels" / f"{name}.png")) > 0
        inside = np.asarray(Image.open(hrf / "fov" / f"{name}.png")) > 0
        assert mask.shape == truth.shape == (2336, 3504) and set(np.unique(mask)) <= {0, 1}  # the picture's own size
        probabilities = np.asarray(Image.open(out / f"{name}_prob.tif"))
        dice.append(vessel_metrics(mask, probabilities, truth, inside)["dice"])
    assert np.mean(dice) >= OTHER_CAMERA["floor"], f"vessel Dice {np.round(dice, 3)} (measured {OTHER_CAMERA['measured']})"
