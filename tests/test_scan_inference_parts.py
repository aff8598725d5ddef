"""The parts of volume inference: slice batching and 2.5D, intensity rules, logits → labels, volumes, montage."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from common.data import (
    CT_WINDOWS,
    LogitsToLabelsd,
    SaveClassVolumesd,
    ScaleScanIntensityd,
    class_volumes,
    label_montage,
    parse_intensity,
    probabilities_of,
)
from common.engines import SliceBatchInferer


class _PerSliceNet(torch.nn.Module):
    """A 2D network whose output for a slice depends only on that slice: a fixed 3×3 convolution, 2 outputs."""

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, 2, 3, padding=1)
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        return self.conv(x)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_batches_give_what_one_slice_at_a_time_gives(axis):
    volume = torch.rand(2, 1, 9, 7, 5)
    net = _PerSliceNet()
    out = SliceBatchInferer(spatial_axis=axis, batch_size=4)(volume, net)
    assert out.shape == (2, 2, 9, 7, 5)
    count = volume.shape[2 + axis]
    assert net.calls == [2 * min(4, count - s) for s in range(0, count, 4)]  # batches of slices, both volumes
    for index in range(count):
        expected = net.conv(volume.select(2 + axis, index))
        assert torch.allclose(out.select(2 + axis, index), expected, atol=1e-6)


def test_context_slices_stack_neighbours_as_channels_with_edges_repeated():
    volume = torch.arange(6.0).reshape(1, 1, 1, 1, 6).expand(1, 1, 2, 3, 6).contiguous()  # slice i holds value i
    seen = []

    def network(x):
        seen.append(x[:, :, 0, 0].clone())  # (batch, channel) values
        return x[:, 1:2]  # the centre slice

    out = SliceBatchInferer(spatial_axis=2, batch_size=4, context_slices=1)(volume, network)
    assert torch.equal(out, volume)
    assert torch.cat(seen).tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5], [4, 5, 5]]


def test_inferer_keeps_metadata_passes_2d_through_and_rejects_bad_settings():
    volume = MetaTensor(torch.rand(1, 1, 6, 6, 3), affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])))
    out = SliceBatchInferer(batch_size=2)(volume, _PerSliceNet())
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, volume.affine)
    net = _PerSliceNet()
    assert SliceBatchInferer()(torch.rand(3, 1, 8, 8), net).shape == (3, 2, 8, 8) and net.calls == [3]
    with pytest.raises(ValueError, match="spatial_axis"):
        SliceBatchInferer(spatial_axis=3)
    with pytest.raises(ValueError, match="B×C×H×W"):
        SliceBatchInferer()(torch.rand(8, 8), net)


class _PixelNet(torch.nn.Module):
    """A network whose output at a pixel depends only on that pixel (1×1 convolution); records its input sizes."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, 1, 1)
        self.sizes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(tuple(x.shape))
        return self.conv(x)


def test_windows_segment_large_pictures_at_native_resolution():
    picture = MetaTensor(torch.rand(1, 3, 70, 45), affine=torch.diag(torch.tensor([0.5, 0.5, 1.0, 1.0])))
    net = _PixelNet()
    out = SliceBatchInferer(batch_size=4, window_size=32, window_overlap=0.5)(picture, net)
    # every call sees 32×32 windows (never the picture shrunk), and the blended windows give the per-pixel answer
    assert {size[-2:] for size in net.sizes} == {(32, 32)} and sum(size[0] for size in net.sizes) > 4
    assert out.shape == (1, 1, 70, 45) and isinstance(out, MetaTensor) and torch.equal(out.affine, picture.affine)
    with torch.no_grad():
        assert torch.allclose(out.as_tensor(), net.conv(picture.as_tensor()), atol=1e-5)
    # a picture smaller than a window is zero-padded to it, never enlarged: the network sees it at its own
    # resolution, as the native-resolution training pads such pictures, and the answer is cut back to the picture
    net.sizes.clear()
    small = torch.rand(2, 3, 30, 20)
    out = SliceBatchInferer(window_size=32)(small, net)
    assert net.sizes == [(2, 3, 32, 32)] and out.shape == (2, 1, 30, 20)
    with torch.no_grad():
        assert torch.allclose(out, net.conv(small), atol=1e-5)


def test_windows_over_the_slices_of_a_volume_and_bad_window_settings():
    volume = torch.rand(1, 1, 40, 36, 3)
    net = _PixelNet(in_channels=1)
    out = SliceBatchInferer(spatial_axis=2, batch_size=2, window_size=16)(volume, net)
    assert out.shape == (1, 1, 40, 36, 3) and {size[-2:] for size in net.sizes} == {(16, 16)}
    with torch.no_grad():
        expected = torch.stack([net.conv(volume[..., index]) for index in range(3)], dim=-1)
    assert torch.allclose(out, expected, atol=1e-5)
    with pytest.raises(ValueError, match="prompts"):
        SliceBatchInferer(window_size=16)(torch.rand(1, 1, 40, 36), lambda x, points: x, torch.zeros(1, 1, 2))
    for bad in ({"window_size": 0}, {"window_overlap": 1.0}, {"window_overlap": -0.1}):
        with pytest.raises(ValueError, match="window"):
            SliceBatchInferer(**bad)


def test_test_time_mirroring_averages_the_mirrored_passes_mirrored_back():
    # a network that is not mirror-symmetric (a 3×3 convolution plus a position ramp), so that a pass that is
    # not mirrored back, a missing pass or a wrong axis all change the answer
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 2, 3, padding=1)
    ramp = torch.linspace(0, 1, 9)[:, None] * torch.linspace(0, 2, 7)[None]

    def network(x):
        return conv(x) + ramp

    picture = torch.rand(2, 3, 9, 7)
    mirrored = {axes: SliceBatchInferer(mirror_axes=axes)(picture, network) for axes in [(), (1,), (0, 1)]}
    with torch.no_grad():
        plain = network(picture)
        along_columns = network(picture.flip(3)).flip(3)
        along_rows = network(picture.flip(2)).flip(2)
        along_both = network(picture.flip(2, 3)).flip(2, 3)
        assert torch.equal(mirrored[()], plain)
        assert torch.allclose(mirrored[(1,)], (plain + along_columns) / 2, atol=1e-6)
        assert torch.allclose(mirrored[(0, 1)], (plain + along_rows + along_columns + along_both) / 4, atol=1e-6)
    assert not torch.allclose(mirrored[(1,)], plain, atol=1e-3)  # the check above can fail
    # volumes: each slice mirrored within itself, never across slices
    volume = torch.rand(1, 3, 9, 7, 4)
    out = SliceBatchInferer(spatial_axis=2, batch_size=3, mirror_axes=(1,))(volume, network)
    with torch.no_grad():
        expected = torch.stack(
            [(network(volume[..., i]) + network(volume[..., i].flip(3)).flip(3)) / 2 for i in range(4)], dim=-1
        )
    assert torch.allclose(out, expected, atol=1e-6)
    with pytest.raises(ValueError, match="mirror_axes"):
        SliceBatchInferer(mirror_axes=(1,))(torch.rand(1, 1, 8, 8), lambda x, points: x, torch.zeros(1, 1, 2))
    for bad in ((2,), (1, 1), (-1,)):
        with pytest.raises(ValueError, match="mirror_axes"):
            SliceBatchInferer(mirror_axes=bad)


def test_intensity_rules_for_ct_mr_and_2d_images():
    assert parse_intensity("ct:abdomen") == ("ct", CT_WINDOWS["abdomen"])
    assert parse_intensity("CT:-125,275") == ("ct", (-125.0, 275.0))
    assert parse_intensity("mr") == ("mr", (0.5, 99.5)) and parse_intensity("mr:1,99") == ("mr", (1.0, 99.0))
    for bad in ("ct:elbow", "mr:99,1", "pet", "ct:5,-5"):
        with pytest.raises(ValueError, match="unknown intensity setting"):
            parse_intensity(bad)
    ct = torch.tensor([-1000.0, -160.0, 40.0, 240.0, 3000.0]).reshape(1, 5, 1, 1)
    scaled = ScaleScanIntensityd("image", "ct:abdomen")({"image": ct})["image"].flatten()
    assert torch.allclose(scaled, torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))
    mr = torch.arange(1000.0).reshape(1, 10, 10, 10)
    scaled = ScaleScanIntensityd("image", "mr:1,99")({"image": mr})["image"]
    assert scaled.min() == 0 and scaled.max() == 1 and 0.49 < float(scaled.median()) < 0.51
    picture = torch.tensor([0.0, 51.0, 255.0]).reshape(1, 3, 1)  # 2D: 8-bit whatever the volume rule
    assert torch.allclose(
        ScaleScanIntensityd("image", "ct:lung")({"image": picture})["image"].flatten(), torch.tensor([0.0, 0.2, 1.0])
    )


def test_logits_to_labels_rules():
    logits = torch.tensor([[-5.0, 3.0, 2.0], [-5.0, 1.0, 4.0]]).reshape(2, 3, 1)  # 2 channels, 3 voxels
    d = LogitsToLabelsd("pred", "sigmoid_argmax", probabilities_key="prob")({"pred": logits})
    assert d["pred"].flatten().tolist() == [0, 1, 2] and d["pred"].dtype == torch.uint8
    assert torch.allclose(d["prob"], torch.sigmoid(logits))
    assert LogitsToLabelsd("pred", "sigmoid_sum")({"pred": logits})["pred"].flatten().tolist() == [0, 2, 2]
    three = torch.tensor([[5.0, 0.0], [0.0, 1.0], [0.0, 3.0]]).reshape(3, 2, 1)  # background + 2 classes
    assert LogitsToLabelsd("pred", "softmax")({"pred": three})["pred"].flatten().tolist() == [0, 2]
    with pytest.raises(ValueError, match="rule must be one of"):
        LogitsToLabelsd("pred", "max")
    # probabilities by the same rule: one softmax over the channels, or each channel's own sigmoid
    assert torch.allclose(probabilities_of(three, "softmax").sum(dim=0), torch.ones(2, 1))
    assert torch.allclose(probabilities_of(logits, "sigmoid_sum"), torch.sigmoid(logits))
    with pytest.raises(ValueError, match="rule must be one of"):
        probabilities_of(logits, "sigmoid")


def test_class_volumes_in_millilitres_from_the_geometry(tmp_path):
    labels = torch.zeros(1, 10, 10, 10, dtype=torch.uint8)
    labels[0, :5, :4, :2] = 1  # 40 voxels
    labels[0, 9, 9, 9] = 2
    affine = torch.tensor([[0.0, -2.0, 0.0, 5.0], [1.5, 0.0, 0.0, 0.0], [0.0, 0.0, 2.5, 0.0], [0, 0, 0, 1]])
    volumes = class_volumes(MetaTensor(labels, affine=affine), {"1": "liver", "2": "spleen", "3": "absent"})
    assert volumes["spacing_mm"] == [1.5, 2.0, 2.5] and volumes["voxel_volume_ml"] == pytest.approx(7.5e-3)
    assert volumes["classes"]["liver"] == {"label": 1, "voxels": 40, "volume_ml": pytest.approx(0.3)}
    assert volumes["classes"]["absent"]["voxels"] == 0
    image = MetaTensor(torch.zeros(1, 10, 10, 10), meta={"filename_or_obj": "/data/case_7.nii.gz"})
    SaveClassVolumesd("pred", {"1": "liver"}, output_dir=tmp_path)(
        {"pred": MetaTensor(labels, affine=affine), "image": image}
    )
    written = json.loads((tmp_path / "case_7_volumes.json").read_text())
    assert written["input"] == "/data/case_7.nii.gz" and written["classes"]["liver"]["volume_ml"] == pytest.approx(0.3)


def test_picture_areas_are_in_mm2_only_when_the_pixel_size_is_known():
    labels = torch.zeros(1, 6, 8, dtype=torch.uint8)
    labels[0, :2, :3] = 1  # 6 pixels
    photo = class_volumes(MetaTensor(labels), {"1": "vessel"})  # a photograph: no pixel size
    assert photo["spacing_mm"] is None and photo["classes"]["vessel"] == {"label": 1, "pixels": 6}
    scanned = class_volumes(MetaTensor(labels, affine=torch.diag(torch.tensor([0.5, 0.5, 1.0]))), {"1": "vessel"})
    assert scanned["spacing_mm"] == [0.5, 0.5] and scanned["classes"]["vessel"]["area_mm2"] == pytest.approx(1.5)


def test_montage_shows_labelled_slices_in_a_grid():
    image = np.zeros((1, 8, 6, 20), np.float32)
    labels = np.zeros((1, 8, 6, 20), np.int64)
    labels[0, 2:4, 2:4, 5:15] = 1
    sheet = label_montage(image, labels, num_classes=1, spatial_axis=2, num_slices=6, columns=3)
    tile_h, tile_w = sheet.shape[0] // 2, sheet.shape[1] // 3
    assert sheet.shape[2] == 3 and tile_h >= 6 and tile_w >= 8 and tile_h * 2 == sheet.shape[0]
    # every tile shows the label (green) because the slices were chosen among labelled ones
    for row in range(2):
        for col in range(3):
            tile = sheet[row * tile_h : (row + 1) * tile_h, col * tile_w : (col + 1) * tile_w]
            assert (tile[..., 1] > tile[..., 0]).any()


def test_output_rule_of_reads_the_network_and_sigmoid_rule_the_label_groups():
    from torch import nn

    from common.data import output_rule_of, sigmoid_rule
    from common.networks import ResizedInputNet

    assert sigmoid_rule([[1]]) == sigmoid_rule([[1], [2]]) == sigmoid_rule([[1, 2], [1, 2]]) == "sigmoid_argmax"
    assert sigmoid_rule([[1, 2], [2]]) == "sigmoid_sum"
    baseline = ResizedInputNet(nn.Conv2d(3, 2, 1), 16, output_rule="softmax")
    wrapped = nn.Module()
    wrapped.module = baseline  # how DistributedDataParallel holds it
    assert output_rule_of(baseline) == output_rule_of(wrapped) == "softmax"
    with pytest.raises(ValueError, match="Identity declares no output_rule: give the config's output_rule"):
        output_rule_of(nn.Identity())
    baseline.output_rule = "max"
    with pytest.raises(ValueError, match="output_rule must be one of"):
        output_rule_of(baseline)


def test_clear_outside_field_of_view_masks_colour_pictures_only():
    from common.data import ClearOutsideFieldOfViewd

    picture = torch.zeros(3, 8, 8)
    picture[:, 2:6, 2:6] = 0.8  # the camera's bright disc inside a dark surround
    labels, probabilities = torch.ones(1, 8, 8, dtype=torch.uint8), torch.full((1, 8, 8), 0.9)
    d = ClearOutsideFieldOfViewd(["pred", "prob"])({"image": picture, "pred": labels, "prob": probabilities})
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[2:6, 2:6] = True
    assert torch.equal(d["pred"][0] > 0, inside) and d["pred"].dtype == torch.uint8
    assert torch.equal(d["prob"][0] > 0, inside)
    grey = {"image": picture[:1], "pred": labels}  # grey pictures and volumes have no camera surround
    assert torch.equal(ClearOutsideFieldOfViewd("pred")(grey)["pred"], labels)
    with pytest.raises(ValueError, match="not on the picture's grid"):
        ClearOutsideFieldOfViewd("pred")({"image": picture, "pred": torch.ones(1, 4, 4)})
