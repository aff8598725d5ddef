"""The prompt-free network: shapes, geometry, prompts, and MONAI engines and inferers running it unchanged."""

from __future__ import annotations

import pytest
import torch
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.inferers import SimpleInferer, SliceInferer, SlidingWindowInferer

from common.backbones import build_backbone
from common.backbones.forward import decode_masks, encode_image, prompt_free_embeddings
from common.losses import CompositeSegmentationLoss
from common.networks import SamSegmentationNet

TEST_BACKBONES = ["sam_vit_test", "sam2.1_hiera_test"]


@pytest.fixture(scope="module", params=TEST_BACKBONES)
def net(request):
    return SamSegmentationNet(request.param, checkpoint=None)


@pytest.mark.parametrize("shape", [(2, 1, 70, 90), (1, 3, 128, 128), (3, 1, 200, 50), (1, 3, 17, 23)])
def test_output_has_the_input_resolution(net, shape):
    with torch.no_grad():
        out = net(torch.rand(shape))
    assert out.shape == (shape[0], 1, *shape[2:])
    assert torch.isfinite(out).all()


def test_wrong_channel_count_and_rank_are_clear_errors(net):
    with pytest.raises(ValueError, match="1 or 3 image channels, got 2"):
        net(torch.rand(1, 2, 32, 32))
    with pytest.raises(ValueError, match="B×C×H×W"):
        net(torch.rand(1, 32, 32))


def test_grey_equals_three_identical_channels(net):
    grey = torch.rand(1, 1, 40, 60)
    with torch.no_grad():
        assert torch.allclose(net(grey), net(grey.expand(-1, 3, -1, -1)), atol=1e-6)


def test_batch_of_two_equals_two_single_runs(net):
    # the SAM2LoRA reference mixes images when batch > 1; every image must get its own features and prompts
    net.eval()
    images = torch.rand(2, 3, 64, 64)
    boxes = torch.tensor([[5.0, 5.0, 40.0, 30.0], [20.0, 10.0, 60.0, 60.0]])
    with torch.no_grad():
        batched = net(images)
        single = torch.cat([net(images[i : i + 1]) for i in range(2)])
        batched_prompted, _ = net.forward_with_iou(images, boxes=boxes)
        single_prompted = torch.cat(
            [net.forward_with_iou(images[i : i + 1], boxes=boxes[i : i + 1])[0] for i in range(2)]
        )
    assert torch.allclose(batched, single, atol=1e-5)
    assert torch.allclose(batched_prompted, single_prompted, atol=1e-5)


def test_prompts_change_the_output(net):
    net.eval()
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        free = net(image)
        boxed, iou = net.forward_with_iou(image, boxes=torch.tensor([[4.0, 4.0, 30.0, 30.0]]))
        pointed, _ = net.forward_with_iou(
            image, point_coords=torch.tensor([[[10.0, 12.0], [50.0, 50.0]]]), point_labels=torch.tensor([[1, 0]])
        )
    assert boxed.shape == pointed.shape == free.shape and iou.shape == (1, 1)
    assert not torch.allclose(free, boxed) and not torch.allclose(free, pointed)


def test_coordinates_follow_the_resize(net):
    coords = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    mapped = net.to_input_coordinates(coords, height=64, width=32)
    if net.keep_aspect_ratio:  # long side 64 → 128: everything doubles
        assert torch.equal(mapped, coords * 2)
    else:  # stretched to 128×128: x ×4, y ×2
        assert torch.equal(mapped, torch.tensor([[40.0, 40.0, 120.0, 80.0]]))


def test_padding_region_is_cropped_away():
    # with aspect-preserving resize the padded rows must not leak into the output: a wide image's output equals the
    # output computed from the unpadded region only (nothing outside it is returned)
    net = SamSegmentationNet("sam_vit_test", checkpoint=None, keep_aspect_ratio=True).eval()
    image = torch.rand(1, 1, 32, 128)  # resized to 32×128 inside a 128×128 input (96 padded rows)
    processed = net.preprocess(image)
    assert torch.all(processed[..., 32:, :] == 0)
    assert processed.shape == (1, 3, 128, 128)


def test_three_outputs_use_the_multimask_tokens():
    net = SamSegmentationNet("sam_vit_test", checkpoint=None, num_outputs=3)
    with torch.no_grad():
        assert net(torch.rand(2, 1, 48, 48)).shape == (2, 3, 48, 48)


def test_decoder_helpers_on_the_bare_backbone():
    sam = build_backbone("sam2.1_hiera_test")
    features = encode_image(sam, torch.rand(2, 3, 128, 128))
    assert features.embedding.shape == (2, 32, 8, 8)
    assert [f.shape[-1] for f in features.high_res] == [32, 16]  # stride 4 and stride 8 skips
    sparse, dense = prompt_free_embeddings(sam, features)
    masks, iou = decode_masks(sam, features, sparse, dense)
    assert masks.shape == (2, 1, 32, 32) and iou.shape == (2, 1)


def _batches(n_batches, batch, size=64):
    data = []
    for _ in range(n_batches):
        label = torch.zeros(batch, 1, size, size)
        label[:, :, 16:40, 20:50] = 1
        data.append({"image": torch.rand(batch, 1, size, size) + label, "label": label})
    return data


@pytest.mark.parametrize("backbone", TEST_BACKBONES)
def test_supervised_trainer_runs_two_iterations(backbone):
    net = SamSegmentationNet(backbone, checkpoint=None)
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=_batches(2, batch=2),
        network=net,
        optimizer=optimiser,
        loss_function=CompositeSegmentationLoss(),
        inferer=SimpleInferer(),
    )
    trainer.run()
    assert trainer.state.iteration == 2
    loss = trainer.state.output[0]["loss"]
    pred = trainer.state.output[0]["pred"]
    assert pred.shape == (1, 64, 64) and torch.isfinite(torch.as_tensor(loss))


def test_supervised_evaluator_and_sliding_window():
    net = SamSegmentationNet("sam_vit_test", checkpoint=None)
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=_batches(1, batch=1, size=96),
        network=net,
        inferer=SlidingWindowInferer(roi_size=(64, 64), sw_batch_size=2, overlap=0.25),
    )
    evaluator.run()
    assert evaluator.state.output[0]["pred"].shape == (1, 96, 96)


def test_slice_inferer_segments_a_volume_slice_by_slice():
    net = SamSegmentationNet("sam_vit_test", checkpoint=None).eval()
    volume = torch.rand(1, 1, 40, 52, 7)
    inferer = SliceInferer(spatial_dim=2, roi_size=(40, 52), sw_batch_size=4, progress=False)
    with torch.no_grad():
        out = inferer(volume, net)
        slice3 = net(volume[..., 3])
    assert out.shape == (1, 1, 40, 52, 7)
    assert torch.allclose(out[..., 3], slice3, atol=1e-5)


@pytest.mark.slow
def test_full_size_sam2_forward_at_native_resolution():
    # one full-size random-weight pass (Hiera-T at 1024², about 5 s on 2 cores) keeps the real shapes honest
    net = SamSegmentationNet("sam2.1_hiera_t", checkpoint=None).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, 300, 400))
    assert out.shape == (1, 1, 300, 400) and torch.isfinite(out).all()


def test_frozen_batchnorm_statistics_do_not_drift_in_training_mode():
    # LiteMedSAM's TinyViT has BatchNorm layers; with the backbone frozen their running statistics must not change,
    # or the trained network and the one restored from an adapter checkpoint differ
    net = SamSegmentationNet("litemedsam", checkpoint=None)
    for param in net.parameters():
        param.requires_grad_(False)
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    assert before
    net(torch.rand(2, 3, 64, 64) * 3)
    after = net.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    # a BatchNorm that is itself trained keeps normal training behaviour
    bn = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.weight.requires_grad_(True)
    net.train()
    assert (
        bn.training
        and not next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d) and m is not bn).training
    )


def test_one_slice_of_a_volume_is_segmented_as_the_slice():
    """A volume bundle declares its network's input as a B×C×H×W×1 slice (MONAI Label then reports a 3D model):
    the logits are the slice's, with the trailing axis kept."""
    torch.manual_seed(0)
    network = SamSegmentationNet("sam_vit_test", checkpoint=None).eval()
    picture = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        flat, volume = network(picture), network(picture[..., None])
    assert volume.shape == (*flat.shape, 1) and torch.equal(volume[..., 0], flat)
