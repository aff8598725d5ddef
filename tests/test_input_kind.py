"""Another kind of input than a bundle segments (an abdominal CT given to a hippocampus bundle, a fundus picture
given to a 3D bundle, an MR volume given to the fundus bundle) would be labelled without an error: every route
refuses it with one line naming the file and what the bundle expects, unless allow_other_inputs is set."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from bundle_helpers import REPO_ROOT

from common.data import LoadScand, ScanInputError, accepted_input, looks_like_ct, readable_scans

BUNDLES = sorted(p for p in (REPO_ROOT / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())
DATA = REPO_ROOT.parent / "shared" / "data"
MR = DATA / "msd_hippocampus" / "images" / "hippocampus_001.nii.gz"
WHOLE_BRAIN = DATA / "freesurfer_bert" / "bert_t1_brain.nii.gz"
CT = DATA / "totalsegmentator_samples" / "example_ct_sm.nii.gz"
FUNDUS = DATA / "hrf_av" / "test" / "images" / "09_dr.jpg"
BALR_SAM = REPO_ROOT / "bundles" / "balr_sam_segmentation"
MR_3D = {"dimension": 3, "modality": "MR"}


def _volume(path, array):
    nib.save(nib.Nifti1Image(array.astype(np.float32), np.eye(4)), str(path))
    return str(path)


def _ct_like(rng):
    # a body of soft tissue (around 40 HU) in air (-1000 HU), as any CT field of view holds
    array = np.full((24, 24, 12), -1000.0)
    array[4:20, 4:20, :] = 40 + 10 * rng.standard_normal((16, 16, 12))
    return array


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_each_bundle_declares_what_it_segments_and_its_inference_checks_it(bundle):
    declared = accepted_input(bundle)
    assert declared["dimension"] in (2, 3) and declared["modality"]
    inference = json.loads((bundle / "configs" / "inference.json").read_text())
    assert inference["preprocessing"]["accepted_input"] == "$None if @allow_other_inputs else @accepted_input"
    assert inference["accepted_input"] == "$common.data.accepted_input(@bundle_root)"
    assert inference["allow_other_inputs"] is False
    assert "@preprocessing.transforms[0]" in inference["datalist"]  # folders are checked by the same loader


def test_a_ct_volume_is_refused_by_an_mr_bundle_and_an_mr_volume_is_not(tmp_path):
    rng = np.random.default_rng(0)
    ct = _volume(tmp_path / "abdomen.nii.gz", _ct_like(rng))
    mr = _volume(tmp_path / "head.nii.gz", np.abs(300 * rng.standard_normal((24, 24, 12))))
    with pytest.raises(ScanInputError, match=r"abdomen.nii.gz: looks like CT \(values down to -1000, air in Hounsfield "
                                             r"units\), but this bundle segments 3D MR volumes; .*allow_other_inputs=true"):  # fmt: skip
        LoadScand("image", accepted_input=MR_3D, image_only=True)({"image": ct})
    assert LoadScand("image", accepted_input=MR_3D, image_only=True)({"image": mr})["image"].shape == (1, 24, 24, 12)
    # the override (accepted_input None) and a CT config accept it
    assert LoadScand("image", accepted_input=None, image_only=True)({"image": ct})["image"].min() == -1000
    LoadScand("image", accepted_input={"dimension": 3, "modality": "CT"}, image_only=True)({"image": ct})


def test_a_picture_is_refused_by_a_3d_bundle_and_a_volume_by_a_2d_one(tmp_path):
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "eye.png")
    volume = _volume(tmp_path / "head.nii.gz", np.ones((8, 8, 4)))
    with pytest.raises(ScanInputError, match=r"eye.png: a 2D picture of \(30, 20\) pixels, but this bundle segments "
                                             r"3D MR volumes"):  # fmt: skip
        LoadScand("image", accepted_input=MR_3D, image_only=True)({"image": str(tmp_path / "eye.png")})
    with pytest.raises(ScanInputError, match="head.nii.gz: a 3D volume, but this bundle segments 2D colour fundus"):
        LoadScand("image", accepted_input={"dimension": 2, "modality": "colour fundus"})({"image": volume})
    # a folder run reports the refused scan on one line and goes on with the others
    scans = tmp_path / "scans"
    scans.mkdir()
    (tmp_path / "eye.png").rename(scans / "eye.png")
    _volume(scans / "head.nii.gz", np.ones((8, 8, 4)))
    listed = readable_scans(scans, LoadScand("image", accepted_input=MR_3D, image_only=True))
    assert [item["image"] for item in listed] == [str(scans / "head.nii.gz")] and len(listed.skipped) == 1


@pytest.mark.skipif(not (MR.is_file() and CT.is_file() and WHOLE_BRAIN.is_file()), reason="../shared/data not found")
def test_real_mr_is_not_taken_for_ct_and_real_ct_is():
    for path, is_ct in ((MR, False), (WHOLE_BRAIN, False), (CT, True)):
        assert looks_like_ct(LoadScand("image", image_only=True)({"image": str(path)})["image"]) is is_ct, path


@pytest.mark.skipif(not (CT.is_file() and FUNDUS.is_file()), reason="../shared/data not found")
def test_common_segment_and_monai_bundle_run_refuse_another_kind_of_input(tmp_path, capsys):
    from common import segment

    for scan in (CT, FUNDUS):
        code = segment.main(["--bundle", str(BALR_SAM), "--input", str(scan), "--output", str(tmp_path / "a"),
                             "--quiet"])  # fmt: skip
        err = capsys.readouterr().err.strip()
        assert code == 1 and err.splitlines() == [err] and f"{scan}: " in err and "segments 3D MR volumes" in err
    assert not any((tmp_path / "a").glob("*_seg*"))
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(BALR_SAM / "configs" / "inference.json"),
               "--bundle_root", str(BALR_SAM), "--input", str(CT), "--output_dir", str(tmp_path / "b")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "looks like CT" in done.stderr and "but this bundle segments 3D MR volumes" in done.stderr
    assert not any((tmp_path / "b").glob("*_seg*"))
