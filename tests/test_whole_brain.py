"""Whole-brain T1 scans through the hippocampus bundles: the hippocampi are found by registration to the MNI152
template, segmented in MSD-like boxes and pasted back per side; scans that are not head MR are refused; crops go
straight to the adapter as before."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_helpers import REPO_ROOT

from common.data import HIPPOCAMPUS_BOXES, CropTemplateRegionsd, read_scan
from common.data.brain_template import mni152_template_path
from common.segment import main, segment_scans

BALR_SAM = REPO_ROOT / "bundles" / "balr_sam_segmentation"
SAMPLE = REPO_ROOT / "common" / "samples" / "hippocampus" / "images" / "hippocampus_001.nii.gz"


class EverywhereAnterior(torch.nn.Module):
    """An oracle "network" that calls every pixel class 1 (K+1 softmax logits): the label map written is then the
    footprint of whatever was segmented, here the boxes pasted back into the scan."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], 3, *x.shape[-2:])
        logits[:, 1] = 1.0
        return logits


ORACLE = {"network_def": {"_target_": "test_whole_brain.EverywhereAnterior"}, "output_rule": "softmax"}


def _no_weights(folder: Path) -> Path:
    torch.save({}, folder / "none.pt")
    return folder / "none.pt"


def _moved_template(folder: Path) -> tuple[Path, np.ndarray]:
    """A synthetic head: the MNI152 template turned by 10° about S, shifted, stored at 1.3 mm in LIA orientation.
    Returns the file and the 4×4 map from template RAS mm to the file's world."""
    from nibabel.processing import resample_from_to

    template = nib.load(str(mni152_template_path()))
    angle = np.deg2rad(10.0)
    moved = np.eye(4)
    moved[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    moved[:3, 3] = (6.0, -9.0, 12.0)
    # the grid of the new file: 1.3 mm, axes L, I, A (FreeSurfer's orientation), covering the moved head
    grid = np.array([[-1.3, 0, 0, 110.0], [0, 0, 1.3, -130.0], [0, -1.3, 0, 110.0], [0, 0, 0, 1]])
    data = np.asarray(template.dataobj, dtype=np.float32) * 300.0  # MR-like values, not 0-1
    head = resample_from_to(nib.Nifti1Image(data, moved @ template.affine), ((170, 190, 180), grid), order=1)
    path = folder / "head.nii.gz"
    nib.save(head, str(path))
    return path, moved


def test_a_whole_brain_scan_is_segmented_where_the_template_puts_the_hippocampi(tmp_path):
    head, template_to_world = _moved_template(tmp_path)
    overrides = {**ORACLE, "save_probabilities": True}
    weights = _no_weights(tmp_path)
    results = segment_scans(BALR_SAM, head, tmp_path / "out", weights, overrides=overrides, progress=False)
    assert results == {str(head): "ok"}
    written = nib.load(str(tmp_path / "out" / "head_seg.nii.gz"))
    source = nib.load(str(head))
    assert written.shape == source.shape and np.allclose(written.affine, source.affine, atol=1e-4)
    labels = np.asarray(written.dataobj)
    # class 1 of the left box is 1, of the right box 3; the oracle never says 2 or 4
    assert set(np.unique(labels)) == {0, 1, 3}
    world_to_template = np.linalg.inv(template_to_world)
    for value, box in ((1, HIPPOCAMPUS_BOXES[0]), (3, HIPPOCAMPUS_BOXES[1])):
        voxels = np.argwhere(labels == value)
        world = written.affine[:3, :3] @ voxels.T + written.affine[:3, 3:4]
        in_template = world_to_template[:3, :3] @ world + world_to_template[:3, 3:4]
        # the footprint is the box, back where the template has it (registration error of a few mm allowed)
        assert np.allclose(in_template.mean(axis=1), box.centre_mm, atol=3.0), (value, in_template.mean(axis=1))
        assert abs(len(voxels) * 1.3**3 - np.prod(box.size)) < 0.1 * np.prod(box.size)
    report = json.loads((tmp_path / "out" / "head_volumes.json").read_text())
    assert list(report["classes"]) == [
        "left anterior hippocampus", "left posterior hippocampus", "right anterior hippocampus",
        "right posterior hippocampus",
    ]  # fmt: skip
    assert report["sides"]["left"]["labels"] == [1, 2] and report["template_fit"]["correlation"] > 0.9
    # a 36×52×40 mm box is far above a hippocampus's volume: reported, not hidden
    assert any("outside the normal adult range" in w for w in report["warnings"])
    assert (tmp_path / "out" / "head_montage.png").is_file()
    # probabilities: background and the four side structures, in the scan's grid, agreeing with the labels
    probabilities = np.asarray(nib.load(str(tmp_path / "out" / "head_prob.nii.gz")).dataobj)
    assert probabilities.shape == (*source.shape, 5)
    assert (probabilities.argmax(axis=-1) == labels).mean() > 0.999


def test_forcing_the_crop_path_on_a_whole_brain_scan_segments_the_whole_scan(tmp_path):
    # the control of the test above: without localisation the footprint is the whole scan
    head, _ = _moved_template(tmp_path)
    overrides = {**ORACLE, "whole_brain": False}
    segment_scans(BALR_SAM, head, tmp_path / "out", _no_weights(tmp_path), overrides=overrides, progress=False)
    labels = np.asarray(nib.load(str(tmp_path / "out" / "head_seg.nii.gz")).dataobj)
    assert (labels == 1).all()


def test_a_crop_goes_straight_to_the_adapter_with_todays_labels(tmp_path):
    auto, crop = tmp_path / "auto", tmp_path / "crop"
    segment_scans(BALR_SAM, SAMPLE, auto, progress=False)
    segment_scans(BALR_SAM, SAMPLE, crop, overrides={"whole_brain": False}, progress=False)
    first = nib.load(str(auto / "hippocampus_001_seg.nii.gz"))
    labels = np.asarray(first.dataobj)
    assert np.array_equal(labels, np.asarray(nib.load(str(crop / "hippocampus_001_seg.nii.gz")).dataobj))
    assert set(np.unique(labels)) == {0, 1, 2}  # anterior / posterior, no side
    assert "sides" not in json.loads((auto / "hippocampus_001_volumes.json").read_text())


def _noise(folder: Path) -> Path:
    data = np.random.default_rng(0).normal(100, 30, (120, 140, 110)).astype(np.float32)
    path = folder / "noise.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([1.2, 1.2, 1.2, 1.0])), str(path))
    return path


def test_noise_is_refused_with_one_line_and_nothing_written(tmp_path, capsys, caplog):
    scan = _noise(tmp_path)
    status = main(["--bundle", str(BALR_SAM), "--input", str(scan), "--output", str(tmp_path / "out"), "--quiet"])
    assert status == 1
    # the decision is said (common.segment shows this logger's INFO lines)
    decisions = [r.getMessage() for r in caplog.records if r.name == "common.data.template_regions"]
    assert any("a whole brain: the structures are located first" in message for message in decisions), decisions
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(scan) in errors[0] and "MNI152" in errors[0]
    assert not (tmp_path / "out").exists()


def test_the_transform_refuses_a_bad_setting_and_a_crop_forced_down_the_whole_brain_path():
    with pytest.raises(ValueError, match="whole_brain"):
        CropTemplateRegionsd("image", {"1": "a"}, whole_brain="yes")
    from common.data import ScanInputError

    image = read_scan(SAMPLE)
    forced = CropTemplateRegionsd("image", {"1": "a", "2": "p"}, whole_brain=True)
    with pytest.raises(ScanInputError, match="hippocampus_001.nii.gz: not a T1 MR of the head"):
        forced({"image": image})  # a 35 mm crop is not a head


def test_an_abdominal_ct_is_refused(shared_data, tmp_path, capsys):
    scan = shared_data / "totalsegmentator_samples" / "example_ct_sm.nii.gz"
    # refused as another kind of input first (tests/test_input_kind.py), and by the whole-brain fit when let through
    for extra, message in (([], "example_ct_sm.nii.gz: looks like CT"),
                           (["--set", "allow_other_inputs=true"], "example_ct_sm.nii.gz: not a T1 MR of the head")):
        status = main(["--bundle", str(BALR_SAM), "--input", str(scan), "--output", str(tmp_path / "out"), "--quiet",
                       *extra])  # fmt: skip
        assert status == 1
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], errors
        assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def bert_result(tmp_path_factory):
    """The shipped BALR-SAM adapter on FreeSurfer's whole-brain sample subject, through common.segment."""
    from conftest import SHARED_DATA

    scan = SHARED_DATA / "freesurfer_bert" / "bert_t1_brain.nii.gz"
    if not scan.is_file():
        pytest.skip(f"{scan} is absent (../shared/data sits beside the repository in CI)")
    output = tmp_path_factory.mktemp("bert")
    assert segment_scans(BALR_SAM, scan, output, progress=False) == {str(scan): "ok"}
    return scan, output


def test_bert_hippocampi_agree_with_freesurfer_on_the_right_sides(bert_result):
    scan, output = bert_result
    labels = np.asarray(nib.load(str(output / "bert_t1_brain_seg.nii.gz")).dataobj)
    reference = np.asarray(nib.load(str(scan.parent / "bert_hippocampus_aseg.nii.gz")).dataobj)
    for values, side in (((1, 2), 1), ((3, 4), 2)):
        mine, theirs = np.isin(labels, values), reference == side
        dice = 2 * (mine & theirs).sum() / (mine.sum() + theirs.sum())
        assert dice >= 0.75, (side, dice)  # the crop path on this scan gives none (the issue's 46 mL of blobs)
    report = json.loads((output / "bert_t1_brain_volumes.json").read_text())
    for side in ("left", "right"):
        assert 2.0 <= report["sides"][side]["volume_ml"] <= 6.0


def test_monai_label_serves_a_whole_brain_study_with_common_segments_labels(bert_result, tmp_path):
    pytest.importorskip("monailabel", reason="monailabel is installed by the README's test command")
    from monailabel.tasks.infer.bundle import BundleInferTask

    scan, output = bert_result
    bundle = shutil.copytree(BALR_SAM, tmp_path / "model" / BALR_SAM.name, ignore=shutil.ignore_patterns("docs"))
    task = BundleInferTask(str(bundle), {"models": "", "zoo_source": "github", "sam2": "false", "preload": "false"})
    study = Path(shutil.copy(scan, tmp_path / "bert_t1_brain.nii.gz"))
    result_file, _ = task({"image": str(study), "device": "cpu"})
    served, source = nib.load(result_file), nib.load(str(scan))
    assert served.shape == source.shape and np.allclose(served.affine, source.affine, atol=1e-4)
    reference = np.asarray(nib.load(str(output / "bert_t1_brain_seg.nii.gz")).dataobj)
    assert np.array_equal(np.asarray(served.dataobj).astype(np.uint8), reference)


def test_monai_bundle_run_segments_a_whole_brain_scan_as_common_segment_does(bert_result, tmp_path):
    import subprocess
    import sys

    scan, output = bert_result
    config = BALR_SAM / "configs" / "inference.json"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(config), "--bundle_root",
               str(BALR_SAM), "--input", str(scan), "--output_dir", str(tmp_path)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=BALR_SAM.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    labels = np.asarray(nib.load(str(tmp_path / "bert_t1_brain_seg.nii.gz")).dataobj)
    assert np.array_equal(labels, np.asarray(nib.load(str(output / "bert_t1_brain_seg.nii.gz")).dataobj))
    report = json.loads((tmp_path / "bert_t1_brain_volumes.json").read_text())
    assert set(report["sides"]) == {"left", "right"} and report["warnings"] == []


def test_each_box_holds_all_of_freesurfers_hippocampus_of_its_side_in_bert(shared_data):
    from common.data.brain_template import register_to_template

    scan = read_scan(shared_data / "freesurfer_bert" / "bert_t1_brain.nii.gz")
    reference = read_scan(shared_data / "freesurfer_bert" / "bert_hippocampus_aseg.nii.gz")[0].numpy()
    fit = register_to_template(scan[0].numpy(), scan.affine.numpy())
    for value, box in ((1, HIPPOCAMPUS_BOXES[0]), (2, HIPPOCAMPUS_BOXES[1])):
        voxels = np.argwhere(reference == value).T
        scan_to_box = np.linalg.inv(box.affine()) @ np.linalg.inv(fit.matrix) @ scan.affine.numpy()
        in_box = scan_to_box[:3, :3] @ voxels + scan_to_box[:3, 3:4]
        inside = np.all((in_box > -0.5) & (in_box < np.array(box.size)[:, None] - 0.5), axis=0)
        assert inside.all(), (box.side, inside.mean())
        # and not inside the other side's box
        other = HIPPOCAMPUS_BOXES[1 - (value - 1)]
        to_other = np.linalg.inv(other.affine()) @ np.linalg.inv(fit.matrix) @ scan.affine.numpy()
        in_other = to_other[:3, :3] @ voxels + to_other[:3, 3:4]
        assert not np.all((in_other > -0.5) & (in_other < np.array(other.size)[:, None] - 0.5), axis=0).any()


def test_a_colour_picture_saved_as_a_volume_is_refused_before_registration(tmp_path, capsys):
    # a fundus-sized RGB picture stored as a 999×960×3 NIfTI: long enough to be taken for a whole brain, far too thin
    picture = np.random.default_rng(0).integers(0, 255, (999, 960, 3)).astype(np.uint8)
    scan = tmp_path / "photo.nii.gz"
    nib.save(nib.Nifti1Image(picture, np.eye(4)), str(scan))
    status = main(["--bundle", str(BALR_SAM), "--input", str(scan), "--output", str(tmp_path / "out"), "--quiet"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert status == 1 and len(errors) == 1 and "photo.nii.gz" in errors[0] and "3 mm thick" in errors[0], errors
    assert not (tmp_path / "out").exists()


def test_a_misspelt_whole_brain_setting_is_one_line(tmp_path, capsys):
    status = main(["--bundle", str(BALR_SAM), "--input", str(SAMPLE), "--output", str(tmp_path / "out"), "--quiet",
                   "--set", "whole_brain=maybe"])  # fmt: skip
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert status == 1 and errors == [
        "error: the bundle's preprocessing cannot be built with these settings: whole_brain must be 'auto', true or "
        "false, got 'maybe'"
    ]
