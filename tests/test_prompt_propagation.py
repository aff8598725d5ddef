"""Interactive segmentation: prompts on one slice, propagation both ways, and the MONAI Label task around it."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from bundle_helpers import REPO_ROOT, bundle_with_test_weights

from common.engines.prompt_propagation import mask_box, propagate_from_prompts


class BoxOracle(torch.nn.Module):
    """A promptable stand-in with known answers: bright pixels (> 0.5) inside the box, or within 6 pixels of the
    positive points; logits ±10."""

    def forward(self, image, boxes=None, point_coords=None, point_labels=None):
        _, _, height, width = image.shape
        ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        region = torch.zeros(height, width, dtype=torch.bool)
        if boxes is not None:
            x0, y0, x1, y1 = boxes[0].tolist()
            region |= (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
        if point_coords is not None:
            for (x, y), label in zip(point_coords[0].tolist(), point_labels[0].tolist()):
                if label == 1:
                    region |= ((xs - x) ** 2 + (ys - y) ** 2) <= 36
        inside = region & (image[0, 0] > 0.5)
        return torch.where(inside, 10.0, -10.0)[None, None]


def _blob(shape=(32, 40, 20), slices=range(4, 15)) -> np.ndarray:
    """A bright 6×8 block on ``slices`` of the last axis and a second, separate block elsewhere (not to be picked)."""
    volume = np.zeros(shape, np.float32)
    for k in slices:
        volume[10:16, 12:20, k] = 1.0
    volume[25:30, 30:36, :] = 1.0  # another structure, far from the prompts
    return volume


def test_mask_box_encloses_the_mask_with_a_margin():
    mask = torch.zeros(20, 30, dtype=torch.bool)
    mask[5:10, 8:18] = True
    assert mask_box(mask, margin=0.1).tolist() == [7.0, 4.0, 18.0, 10.0]  # x0 y0 x1 y1, ≥ 1 px each side
    assert mask_box(torch.zeros(4, 4, dtype=torch.bool)) is None


@pytest.mark.parametrize("prompt", ["point", "box"])
def test_prompts_on_one_slice_propagate_in_both_directions(prompt):
    volume = torch.from_numpy(_blob())[None]
    kwargs = {"point_coords": [[15.0, 12.0]], "point_labels": [1]} if prompt == "point" else {"box": [11, 9, 21, 17]}
    mask = propagate_from_prompts(BoxOracle(), volume, slice_index=9, **kwargs)
    expected = np.zeros((32, 40, 20), np.uint8)
    expected[10:16, 12:20, 4:15] = 1  # slices 4..14: down to 4 and up to 14 from slice 9, the other block untouched
    assert np.array_equal(mask.numpy(), expected)
    single = propagate_from_prompts(BoxOracle(), volume, 9, propagate=False, **kwargs)
    assert torch.nonzero(single.any(0).any(0)).flatten().tolist() == [9]
    limited = propagate_from_prompts(BoxOracle(), volume, 9, max_distance=2, **kwargs)
    assert torch.nonzero(limited.any(0).any(0)).flatten().tolist() == [7, 8, 9, 10, 11]


def test_other_axes_and_errors():
    volume = torch.from_numpy(np.moveaxis(_blob(), 2, 0).copy())[None]  # the blob's slices now along axis 0
    mask = propagate_from_prompts(BoxOracle(), volume, 9, box=[11, 9, 21, 17], spatial_axis=0)
    assert torch.nonzero(mask.any(2).any(1)).flatten().tolist() == list(range(4, 15))
    with pytest.raises(ValueError, match="at least one point or a box"):
        propagate_from_prompts(BoxOracle(), volume, 3)
    with pytest.raises(ValueError, match="outside the volume"):
        propagate_from_prompts(BoxOracle(), volume, 99, box=[0, 0, 1, 1], spatial_axis=0)


def _oracle_task(bundle, **overrides):
    """The MONAI Label task on a copy of the SAM2LoRA bundle with the oracle as its network."""
    from common.monai_label import PromptPropagationInferTask

    if not bundle.exists():
        shutil.copytree(REPO_ROOT / "bundles" / bundle.name, bundle)
        torch.save({}, bundle / "models" / "model.pt")  # the oracle has no weights
    network = {"network_def": {"_target_": "test_prompt_propagation.BoxOracle"}, "intensity": "ct:0,200"}
    return PromptPropagationInferTask(bundle, overrides={**network, **overrides})


def test_monai_label_task_turns_clicks_and_rois_into_a_propagated_label_volume(tmp_path):
    pytest.importorskip("monailabel", reason="monailabel is installed by the README's test command")

    bundle = tmp_path / "sam2lora_fundus_segmentation"
    affine = np.array([[0.0, -0.8, 0, 12.0], [0.9, 0, 0, -3.0], [0, 0, 2.5, 40.0], [0, 0, 0, 1]])
    image = tmp_path / "study.nii.gz"
    nib.save(nib.Nifti1Image(_blob() * 200, affine), str(image))
    task = _oracle_task(bundle, allow_other_inputs=True)  # a volume, which the fundus adapter was not trained on
    assert task.is_valid() and task.labels == {"retinal vessel": 1} and task.dimension == 3
    expected = np.zeros((32, 40, 20), np.uint8)
    expected[10:16, 12:20, 4:15] = 1
    # a click [i, j, k] on slice 9 (3D Slicer sends voxel indices), and separately an ROI [i0, j0, i1, j1, k0, k1]
    for request in ({"foreground": [[12, 15, 9]]}, {"roi": [9, 11, 17, 21, 8, 10]}):
        result_file, result = task({"image": str(image), **request})
        written = nib.load(result_file)
        assert written.shape == (32, 40, 20) and np.allclose(written.affine, affine, atol=1e-6)
        assert np.array_equal(np.asarray(written.dataobj).astype(np.uint8), expected)
        assert result["slices"] == list(range(4, 15))
    result_file, result = task({"image": str(image), "foreground": [[12, 15, 9]], "propagate": "false"})
    assert result["slices"] == [9]


def test_monai_label_task_refuses_what_it_cannot_segment_with_one_line_and_a_client_error(tmp_path):
    pytest.importorskip("monailabel", reason="monailabel is installed by the README's test command")
    from starlette.exceptions import HTTPException

    from common.data import InputError

    task = _oracle_task(tmp_path / "sam2lora_fundus_segmentation")
    assert task.dimension == 2  # what the fundus adapter segments, as /info/ reports it
    volume = tmp_path / "study.nii.gz"
    nib.save(nib.Nifti1Image(_blob() * 200, np.eye(4)), str(volume))
    picture = tmp_path / "fundus.png"
    Image.fromarray((_blob()[..., 9] * 200).astype(np.uint8)).save(picture)  # 40 wide, 32 high
    refused = [
        ({"image": str(volume), "foreground": [[12, 15, 9]]}, 422, r"study.nii.gz: a 3D volume, but this bundle "
                                                                  r"segments 2D colour fundus pictures"),
        ({"image": "", "foreground": [[1, 1]]}, 404, "no image path given"),
        ({"image": str(picture)}, 422, r"^no prompt: click on the structure"),
        ({"image": str(picture), "background": [[3, 3]]}, 422, "^no prompt"),
        ({"image": str(picture), "foreground": [[45, 3]]}, 422, r"foreground: the click \[45.0, 3.0\] is outside "
                                                                r"the study \(40×32 voxels\)"),
        ({"image": str(picture), "foreground": "abc"}, 422, "foreground: 'abc' is not JSON"),
        ({"image": str(picture), "foreground": [["a", 1]]}, 422, r"foreground: \[\"a\", 1\] is not a list of clicks"),
        ({"image": str(picture), "roi": [50, 40, 60, 45]}, 422, "roi: the box .* is empty or outside the study"),
        ({"image": str(picture), "roi": [1, 2, 3]}, 422, r"roi: \[1, 2, 3\] is not a box"),
    ]  # fmt: skip
    for request, status, message in refused:
        with pytest.raises(InputError, match=message) as caught:
            task(request)
        # what MONAI Label's server (Starlette) answers with this status and the message as the body
        assert isinstance(caught.value, HTTPException) and caught.value.status_code == status
        assert caught.value.detail == str(caught.value) and "\n" not in str(caught.value)
    volume_task = _oracle_task(tmp_path / "sam2lora_fundus_segmentation", allow_other_inputs=True)
    with pytest.raises(InputError, match=r"slice: 25 is outside the study \(slices 0..19\)"):
        volume_task({"image": str(volume), "foreground": [[12, 15]], "slice": 25})


def test_monai_label_task_returns_a_png_label_map_for_a_jpeg_picture(tmp_path):
    pytest.importorskip("monailabel", reason="monailabel is installed by the README's test command")

    task = _oracle_task(tmp_path / "sam2lora_fundus_segmentation")
    picture = tmp_path / "fundus.jpg"
    Image.fromarray((_blob()[..., 9] * 250).astype(np.uint8)).convert("RGB").save(picture, quality=95)
    result_file, result = task({"image": str(picture), "roi": [11, 9, 21, 17]})  # [i0, j0, i1, j1]: i along x
    assert result_file.endswith(".png") and result["slices"] == [0]
    labels = np.asarray(Image.open(result_file))
    expected = np.zeros((32, 40), np.uint8)
    expected[10:16, 12:20] = 1  # rows, columns: the boxed bright block at the picture's own size, values 0 / 1
    assert labels.shape == expected.shape and np.array_equal(labels, expected)


def test_monai_label_task_runs_the_real_sam2lora_network(shared_data, tmp_path):
    pytest.importorskip("monailabel", reason="monailabel is installed by the README's test command")
    from common.monai_label import PromptPropagationInferTask

    bundle = bundle_with_test_weights("sam2lora_fundus_segmentation", tmp_path)
    picture = tmp_path / "fundus.jpg"
    Image.open(shared_data / "chase_db1" / "Image_11L.jpg").crop((352, 352, 480, 480)).save(picture)
    result_file, result = PromptPropagationInferTask(bundle)({"image": str(picture), "foreground": [[60, 70]]})
    labels = np.asarray(Image.open(result_file))
    assert result_file.endswith(".png") and labels.shape == (128, 128) and set(np.unique(labels)) <= {0, 1}
    study = shared_data / "msd_hippocampus" / "images" / "hippocampus_001.nii.gz"
    volume_task = PromptPropagationInferTask(bundle, overrides={"allow_other_inputs": True})
    result_file, result = volume_task({"image": str(study), "foreground": [[17, 25, 17]], "background": [[2, 2, 17]]})
    written, source = nib.load(result_file), nib.load(study)
    assert written.shape == source.shape and np.allclose(written.affine, source.affine, atol=1e-6)
    assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1}
    assert set(result["slices"]) <= set(range(source.shape[2]))
