"""Resolution normalisation of fundus pictures: the field of view (FOV) is measured in the picture, the picture is
resampled so that the FOV is as wide as in the training pictures, and the results go back to the input's size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd, Resize

from common.data import ScaleFieldOfViewd, field_of_view_diameter


def _fundus(height: int, width: int, diameter: float, vessel_width: float) -> torch.Tensor:
    """A ``3×H×W`` synthetic fundus picture: a bright disc of ``diameter`` on black, with dark vertical and
    horizontal vessels ``vessel_width`` pixels wide through its centre."""
    rows, columns = np.mgrid[:height, :width].astype(np.float32)
    centre_r, centre_c = (height - 1) / 2, (width - 1) / 2
    inside = (rows - centre_r) ** 2 + (columns - centre_c) ** 2 <= (diameter / 2) ** 2
    vessels = (np.abs(columns - centre_c) < vessel_width / 2) | (np.abs(rows - centre_r) < vessel_width / 2)
    picture = np.where(inside, np.where(vessels, 0.3, 0.8), 0.0).astype(np.float32)
    return MetaTensor(torch.from_numpy(np.stack([picture, picture * 0.5, picture * 0.2])))


def test_the_diameter_is_measured_on_the_picture():
    assert field_of_view_diameter(_fundus(200, 260, 180, 4)) == pytest.approx(180, abs=3)
    # a circle cut at the top and bottom (as many cameras do) still shows its diameter across
    assert field_of_view_diameter(_fundus(150, 260, 200, 4)) == pytest.approx(200, abs=3)
    assert field_of_view_diameter(torch.rand(1, 64, 64)) is None  # grey: not a colour fundus picture
    assert field_of_view_diameter(torch.ones(3, 64, 64)) is None  # no dark surround: a crop of the inside


def _vessel_width(picture: torch.Tensor) -> int:
    """Width in pixels of the vertical synthetic vessel, on the picture's middle row (away from the crossing)."""
    row = picture[0, picture.shape[1] // 4].numpy()
    centre = picture.shape[2] // 2
    return int((row[centre - 20 : centre + 20] < 0.55).sum())  # away from the blurred edge of the disc


def test_a_picture_at_half_scale_is_brought_to_the_training_scale_and_back():
    reference = 240
    full, half = _fundus(260, 260, 240, 8), _fundus(130, 130, 120, 4)
    scale = Compose([ScaleFieldOfViewd("image", reference_diameter=reference)])
    full_out, half_out = scale({"image": full})["image"], scale({"image": half})["image"]
    assert tuple(full_out.shape) == (3, 260, 260)  # already at the reference: untouched
    assert abs(half_out.shape[1] - 260) <= 1 and abs(half_out.shape[2] - 260) <= 1
    assert half_out.meta["fov_scale"] == pytest.approx(2.0, rel=0.03)
    # the vessels the network sees are as wide as in the training pictures: fails without the resampling (4 px)
    assert abs(_vessel_width(half_out) - _vessel_width(full_out)) <= 1 and _vessel_width(full_out) >= 7
    off = Compose([ScaleFieldOfViewd("image", reference_diameter=None)])({"image": half})["image"]
    assert _vessel_width(off) <= 4

    # labels and probabilities go back to the input's own grid
    data = scale({"image": half})
    data["pred"] = MetaTensor((data["image"][:1] > 0.5).float())
    data["prob"] = MetaTensor(data["image"][:1].clone())
    back = Invertd(["pred", "prob"], scale, orig_keys="image", nearest_interp=[True, False])(data)
    assert tuple(back["pred"].shape) == tuple(back["prob"].shape) == (1, 130, 130)
    assert set(torch.unique(back["pred"]).tolist()) <= {0.0, 1.0}
    agreement = (back["pred"][0] > 0) == (half[0] > 0.5)
    assert agreement.float().mean() > 0.97


def test_labels_follow_the_picture_with_nearest_neighbours():
    half = _fundus(130, 130, 120, 3)
    label = MetaTensor((half[:1] > 0.1).to(torch.uint8) + (half[:1] > 0.5).to(torch.uint8))
    out = ScaleFieldOfViewd(["image", "label"], 240, mode=["bilinear", "nearest"])({"image": half, "label": label})
    assert out["label"].shape[1:] == out["image"].shape[1:]
    assert set(torch.unique(out["label"]).tolist()) == {0, 1, 2}


def test_a_non_positive_reference_is_refused():
    with pytest.raises(ValueError, match="reference_diameter must be positive"):
        ScaleFieldOfViewd("image", 0)


def test_training_brings_a_large_camera_picture_and_its_label_to_the_training_scale():
    """The fundus bundle's training steps resample a high-resolution camera's picture, label and FOV mask alike
    (×0.42 here, HRF's 3264-pixel FOV to a 1379-pixel reference): the label stays binary and on the picture's grid,
    and a 3-pixel vessel (1.3 pixels after the reduction) stays in it wherever it lies on the sampling grid."""
    from bundle_helpers import REPO_ROOT
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / "bundles" / "sam2lora_fundus_segmentation" / "configs" / "train.json"))
    names = [t["_target_"] for t in parser.get("load_transforms")]
    start = names.index("common.data.ScaleFieldOfViewd")
    assert names[start + 1] == "AsDiscreted"
    parser["fov_diameter"] = 1379
    scale = Compose([parser.get_parsed_content(f"load_transforms#{start + i}") for i in range(2)])
    for offset in range(3):  # the vessel at each phase of the sampling grid
        picture = _fundus(1200, 3400, 3264, 3)
        label = torch.zeros(1, 1200, 3400)
        column = 1700 + offset - 1
        label[:, 100:1100, column : column + 3] = 1
        fov = MetaTensor((picture[:1] > 0).float())
        out = scale({"image": picture, "label": MetaTensor(label), "fov": fov})
        assert out["image"].meta["fov_scale"] == pytest.approx(1379 / 3264, rel=0.02)
        assert out["label"].shape[1:] == out["fov"].shape[1:] == out["image"].shape[1:]
        assert set(torch.unique(out["label"]).tolist()) == set(torch.unique(out["fov"]).tolist()) == {0.0, 1.0}
        rows = out["label"][0, 60:400]  # away from the vessel's ends
        assert bool((rows.sum(dim=1) >= 1).all()), f"the vessel broke up at offset {offset}"


def test_a_grey_picture_given_to_a_colour_fundus_model_is_warned_about(caplog):
    colour = _fundus(130, 130, 120, 4)
    grey = MetaTensor(colour[:1].clone())
    grey_as_rgb = MetaTensor(colour[:1].repeat(3, 1, 1))
    scale = ScaleFieldOfViewd("image", reference_diameter=120)
    with caplog.at_level("WARNING", logger="common.data.field_of_view_scale"):
        scale({"image": colour})
        assert not [r for r in caplog.records if "grey picture" in r.message]
        scale({"image": grey})
        scale({"image": grey_as_rgb})
    assert len([r for r in caplog.records if "grey picture" in r.message]) == 2
    caplog.clear()
    ScaleFieldOfViewd("image", reference_diameter=None)({"image": grey})  # not a fundus bundle: nothing to say
    assert not caplog.records


def test_a_picture_far_larger_than_the_model_sees_is_warned_about_and_shrunk_quickly_as_before(caplog):
    # an 8000² picture sat 55 s in MONAI's anti-aliasing convolution, silent, before its first window; beyond 4× the
    # reference the same Gaussian is SciPy's (seconds) and the user is told the scale the picture is segmented at
    picture = _fundus(600, 640, 560, 24)
    scale = ScaleFieldOfViewd("image", reference_diameter=70)  # ×0.125
    with caplog.at_level("WARNING", logger="common.data.field_of_view_scale"):
        data = scale({"image": picture})
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "600×640 pixels, its field of view 560 across, 8.0× the 70 the model" in warnings[0]
    out = data["image"]
    assert tuple(out.shape) == (3, 75, 80)
    # what MONAI's own anti-aliased Resize gives, but for the border (SciPy repeats the edge, MONAI pads zeros)
    expected = Resize((75, 80), mode="bilinear", anti_aliasing=True)(picture)
    assert float((out - expected)[:, 4:-4, 4:-4].abs().max()) < 0.02
    assert tuple(scale.inverse(data)["image"].shape) == (3, 600, 640)  # results go back to the picture's size
    caplog.clear()
    with caplog.at_level("WARNING", logger="common.data.field_of_view_scale"):
        ScaleFieldOfViewd("image", reference_diameter=160)({"image": picture})  # ×0.29, as HRF: as it always was
    assert not caplog.records


def test_labels_taken_from_probabilities_at_the_input_size_keep_thin_vessels():
    # an HRF-like picture at ×0.28: a 5-pixel vessel is 1.4 pixels wide where the network sees it. Labels resampled
    # back by nearest neighbour come back in 3.5-pixel steps; thresholding the smoothly resampled probabilities
    # follows the vessel's edges
    from common.data import LogitsToLabelsd, ProbabilitiesToLabelsd

    picture = _fundus(700, 700, 660, 5)
    truth = (picture[0] > 0.2) & (picture[0] < 0.5)  # the vessels (0.3) inside the disc (0.8)
    scale = ScaleFieldOfViewd("image", reference_diameter=185)
    data = scale({"image": picture})
    small = data["image"][:1]
    vessel_probability = ((0.8 - small) / 0.5).clamp(0, 1) * (small > 0.05)  # an ideal network's answer
    data["pred"] = MetaTensor(torch.logit(vessel_probability.clamp(1e-4, 1 - 1e-4)), meta=data["image"].meta)
    data = LogitsToLabelsd("pred", rule="sigmoid_argmax", probabilities_key="prob")(data)
    back = Invertd(["pred", "prob"], scale, orig_keys="image", nearest_interp=[True, False])(data)
    nearest = back["pred"][0] > 0
    relabelled = ProbabilitiesToLabelsd("prob", labels_key="pred", rule="sigmoid_argmax")(back)["pred"]
    assert tuple(relabelled.shape) == (1, 700, 700) and relabelled.dtype == torch.uint8

    def dice(mask):
        return float(2 * (mask & truth).sum() / (mask.sum() + truth.sum()))

    assert dice(relabelled[0] > 0) > dice(nearest) + 0.05, (dice(relabelled[0] > 0), dice(nearest))
    with pytest.raises(ValueError, match="differ"):
        ProbabilitiesToLabelsd("prob", labels_key="pred")({"prob": back["prob"], "pred": data["pred"]})
