"""S-SAM network: exact start, one channel per label name, trainable set, options, all backbone families."""

from __future__ import annotations

import copy
import math
import zlib

import pytest
import torch

from common.adapters import SvdLayer, adapter_state_dict
from common.backbones import build_backbone
from common.backbones.forward import encode_image
from common.networks import SSamNet
from common.text_encoders import TextEncoder


class _RandomText(TextEncoder):
    """Fixed random vectors per name: network tests need distinct embeddings, not language."""

    def __init__(self, dim: int = 16):
        self.dim, self.description = dim, "random test vectors"

    def embed(self, texts):
        return torch.stack(
            [torch.randn(self.dim, generator=torch.Generator().manual_seed(zlib.crc32(t.encode()))) for t in texts]
        )


def _net(backbone="sam_vit_test", **kwargs):
    kwargs.setdefault("label_names", {"1": "liver", "2": "tumor"})
    return SSamNet(backbone, checkpoint=None, text_encoder=_RandomText(), input_size=None, **kwargs)


def test_one_logit_channel_per_label_name():
    net = _net(label_names={"2": "tumor", "1": "liver", "3": "vessel"}).eval()
    assert net.label_names == ["liver", "tumor", "vessel"]  # channel order = label values
    with torch.no_grad():
        out = net(torch.rand(2, 1, 40, 52))
    assert out.shape == (2, 3, 40, 52)
    with pytest.raises(ValueError, match="1..K"):
        _net(label_names={"1": "liver", "3": "tumor"})
    with pytest.raises(ValueError, match="label names only"):
        net(torch.rand(1, 1, 40, 52), boxes=torch.tensor([[0.0, 0.0, 5.0, 5.0]]))


def test_each_class_is_decoded_with_its_own_prompt():
    net = _net().eval()
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        both = net(image)
        net.text_affine.text_embeddings[1] = net.text_affine.text_embeddings[0]
        same = net(image)
    assert not torch.allclose(both[:, 0], both[:, 1])
    assert torch.allclose(same[:, 0], same[:, 1], atol=1e-5) and torch.allclose(same[:, 0], both[:, 0], atol=1e-5)


def test_adapted_encoder_starts_exactly_as_the_base_encoder():
    torch.manual_seed(0)
    base = build_backbone("sam_vit_test", checkpoint=None)
    reference = copy.deepcopy(base).eval()
    net = SSamNet(base, label_names=["a"], text_encoder=_RandomText()).eval()
    assert len(net.adapted_layers) == 2 * 4 + 2 and all(
        isinstance(net.sam.get_submodule(n), SvdLayer) for n in net.adapted_layers
    )
    x = net.preprocess(torch.rand(2, 3, 50, 64))
    with torch.no_grad():
        assert torch.allclose(net.encode(x).embedding, encode_image(reference, x).embedding, atol=1e-5)


def test_only_the_s_sam_parameters_train_and_receive_gradients():
    net = _net().train()
    groups = net.parameter_report.groups
    assert set(groups) == {
        "adapters", "encoder_layernorms", "decoder_layernorms", "pos_embed", "text_affine", "logit_calibration"
    }
    net(torch.rand(2, 1, 40, 40)).sigmoid().mean().backward()
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    with_grad = {n for n, p in net.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == trainable
    assert all(
        n.endswith((".scale", ".shift")) or "norm" in n or "pos_embed" in n or "text_affine" in n
        or n == "logit_calibration.offset"
        for n in trainable
    )
    assert not any(
        "prompt_encoder" in n or "hypernetworks" in n or n.endswith(".weight") and "qkv" in n for n in trainable
    )
    state = adapter_state_dict(net)
    assert not any(k.endswith(("svd_u", "svd_s", "svd_vh")) for k in state)


@pytest.mark.parametrize("option", ["use_dense_prompt", "use_image_pe"])
def test_reference_decoder_options_change_the_output(option):
    torch.manual_seed(0)
    image = torch.rand(1, 3, 64, 64)
    torch.manual_seed(1)
    reference = _net().eval()
    torch.manual_seed(1)
    changed = _net(**{option: True}).eval()
    with torch.no_grad():
        assert not torch.allclose(reference(image), changed(image), atol=1e-4)
    with pytest.raises(TypeError, match="True or False"):
        _net(**{option: "false"})


@pytest.mark.parametrize("backbone", ["sam2.1_hiera_test", "litemedsam"])
def test_other_backbone_families(backbone):
    # a fixed seed: some random LiteMedSAM initialisations drive activations into denormal floats (~50x slower on CPU)
    torch.manual_seed(0)
    net = _net(backbone).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, 64, 64))
    assert out.shape == (1, 2, 64, 64)
    assert net.parameter_report.groups["adapters"] > 0 and net.parameter_report.groups["encoder_layernorms"] > 0


@pytest.mark.slow
def test_trainable_share_on_sam_vit_b_at_256_matches_the_paper_arithmetic():
    net = SSamNet("sam_vit_b", checkpoint=None, label_names=["liver", "tumor"], text_encoder=_RandomText(384))
    groups = net.parameter_report.groups
    # methods.md: SVD 12 blocks x 4 layers x 768 x 2 + neck (256 + 256) x 2; 12 x 3,072 encoder LayerNorm values;
    # 4,608 decoder LayerNorm values; a 16 x 16 x 768 position embedding at 256 input
    assert groups["adapters"] == 12 * 4 * 768 * 2 + (256 + 256) * 2 == 74_752
    assert groups["encoder_layernorms"] == 36_864 and groups["decoder_layernorms"] == 4_608
    assert groups["pos_embed"] == 196_608
    assert groups["text_affine"] == 384 * 256 + 256 + 2 * 256  # Linear(384 -> 256) + BatchNorm1d(256)
    share = net.parameter_report.trainable / net.parameter_report.total
    assert 0.003 <= share <= 0.006  # paper: 0.4 %


@pytest.mark.slow
def test_prompt_options_benchmark_runs_on_real_slices(shared_data, tmp_path):
    import json

    from bundle_helpers import write_hippocampus_datalist

    from common.benchmark.experiments.s_sam_prompt_options import main

    write_hippocampus_datalist(shared_data / "msd_hippocampus", tmp_path / "data")
    args = ["--dataset_dir", str(tmp_path / "data"), "--output_dir", str(tmp_path / "out")]
    args += ["--num_volumes", "4", "--slices_per_volume", "2", "--held_out_fraction", "0.25"]
    assert main([*args, "--iterations", "1", "--train_seeds", "0", "1"]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert [(r["use_dense_prompt"], r["use_image_pe"]) for r in results] == [
        (False, False),
        (False, True),
        (True, False),
        (True, True),
    ]
    for r in results:
        assert set(r["held_out_dice"]) == {"anterior hippocampus", "posterior hippocampus"}
        # NaN where a class is absent from the held-out slices and never predicted
        assert all(0.0 <= d <= 1.0 or d != d for d in r["held_out_dice"].values())
        assert [s["seed"] for s in r["per_seed"]] == [0, 1]
    assert (tmp_path / "out" / "results.md").read_text().count("\n") == 2 + 4


def test_logit_calibration_starts_each_class_at_the_prior_once_and_is_kept_by_checkpoints():
    from common.adapters import adapter_state_dict, load_adapter_state_dict
    from common.networks import LogitCalibration

    calibration = LogitCalibration(2, prior=0.01)
    logits = torch.stack([torch.full((3, 8, 8), -22.0), torch.full((3, 8, 8), -10.0)], dim=1)
    logits += torch.randn_like(logits)
    assert torch.equal(calibration.eval()(logits), logits)  # evaluation alone never calibrates
    shifted = calibration.train()(logits)
    assert torch.allclose(shifted.mean(dim=(0, 2, 3)), torch.full((2,), math.log(0.01 / 0.99)), atol=1e-4)
    offset = calibration.offset.detach().clone()
    calibration(logits + 5.0)  # the second batch does not move it again
    assert torch.equal(calibration.offset.detach(), offset) and bool(calibration.calibrated)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        LogitCalibration(2, prior=1.0)

    # in S-SAM: trained with the offset, saved adapter-only, restored without re-calibration
    torch.manual_seed(0)
    net = _net(logit_prior=0.05).train()
    assert net.parameter_report.groups["logit_calibration"] == 2
    image = torch.rand(2, 3, 32, 32)
    out = net(image)
    assert torch.allclose(out.mean(dim=(0, 2, 3)), torch.full((2,), math.log(0.05 / 0.95)), atol=0.05)
    state = adapter_state_dict(net)
    assert {"logit_calibration.offset", "logit_calibration.calibrated"} <= set(state)
    restored = _net(logit_prior=0.05)
    load_adapter_state_dict(restored, state)
    restored.train()(image)
    assert torch.equal(restored.logit_calibration.offset, net.logit_calibration.offset)
    assert _net(logit_prior=None).logit_calibration is None  # the reference: no offset
