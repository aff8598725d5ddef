"""LoRA: shapes, registration, zero change at init, training, merge/unmerge, trainable counts, adapter-only state."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from common.adapters import (
    BottleneckConfig,
    ConvLoraConfig,
    LoraConfig,
    LoraLinear,
    adapter_layers,
    adapter_state_dict,
    configure_trainable,
    inject_adapters,
    load_adapter_checkpoint,
    load_adapter_state_dict,
    merge_adapters,
    merge_and_unload,
    name_matches,
    param_matches,
    save_adapter_checkpoint,
    unmerge_adapters,
)
from common.backbones import CheckpointError, build_backbone
from common.networks import SamSegmentationNet

SAM_TARGETS = [r"image_encoder\..*attn\.qkv", r"mask_decoder\.transformer\..*(q|k|v|out)_proj"]
SAM2_TARGETS = [r"image_encoder\.trunk\.blocks\.\d+\.attn\.qkv", r"sam_mask_decoder\.transformer\..*(q|k|v|out)_proj"]


def _lora_sam(rank=4, targets=SAM_TARGETS, name="sam_vit_test"):
    model = build_backbone(name, checkpoint=None)
    names = inject_adapters(model, LoraConfig(rank=rank, alpha=2 * rank, target_modules=targets))
    return model, names


def test_layer_shapes_and_init():
    base = nn.Linear(12, 30)
    layer = LoraLinear(base, rank=3, alpha=6)
    assert layer.lora_A.shape == (3, 12) and layer.lora_B.shape == (30, 3)
    assert layer.scaling == 2.0
    assert torch.count_nonzero(layer.lora_B) == 0 and torch.count_nonzero(layer.lora_A) > 0
    x = torch.randn(5, 7, 12)
    assert torch.equal(layer(x), base(x))  # B = 0: exactly the base layer before training
    assert layer.weight is base.weight and not layer.weight.requires_grad


def test_update_formula():
    base = nn.Linear(6, 4)
    layer = LoraLinear(base, rank=2, alpha=3)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 6)
    expected = base(x) + (x @ layer.lora_A.t() @ layer.lora_B.t()) * 1.5
    assert torch.allclose(layer(x), expected, atol=1e-6)


def test_injection_targets_and_key_names():
    model, names = _lora_sam()
    # 2 encoder blocks + decoder: 2 layers × 3 attentions × 4 projections + final attention 4 = 28
    assert len([n for n in names if n.startswith("image_encoder")]) == 2
    assert len([n for n in names if n.startswith("mask_decoder")]) == 28
    keys = model.state_dict().keys()
    # base keys keep the released names; adapter keys sit beside them, no wrapper prefix
    assert "image_encoder.blocks.0.attn.qkv.weight" in keys
    assert "image_encoder.blocks.0.attn.qkv.lora_A" in keys
    assert not any("base_layer" in k or "base_model" in k for k in keys)
    with pytest.raises(ValueError, match="no module"):
        inject_adapters(model, LoraConfig(target_modules=["does_not_exist"]))
    # injecting twice does not wrap twice
    with pytest.raises(ValueError, match="already adapted"):
        inject_adapters(model, LoraConfig(rank=2, target_modules=SAM_TARGETS))
    assert len(list(adapter_layers(model))) == 30


def test_unsupported_target_type_is_an_error():
    model = build_backbone("sam_vit_test", checkpoint=None)
    with pytest.raises(ValueError, match="Conv2d"):
        inject_adapters(model, LoraConfig(target_modules=[r"image_encoder\.neck\.0"]))


@pytest.mark.parametrize("rank", [0, -2, 2.5, "abc", True])
def test_a_rank_that_is_not_a_whole_number_of_at_least_one_is_refused_by_every_config(rank):
    for config in (LoraConfig, ConvLoraConfig, BottleneckConfig):
        with pytest.raises(ValueError, match=f"rank must be a whole number >= 1, got {rank!r}"):
            config(rank=rank)


def test_name_patterns():
    assert name_matches(["attn.qkv"], "image_encoder.blocks.3.attn.qkv")
    assert name_matches(["attn.qkv"], "attn.qkv")
    assert not name_matches(["attn.qkv"], "image_encoder.blocks.3.attn.qkv_extra")
    assert not name_matches(["qkv"], "image_encoder.blocks.3.attn.xqkv")
    assert param_matches(["norm1"], "blocks.0.norm1.weight")
    assert param_matches(["image_encoder.pos_embed"], "image_encoder.pos_embed")
    assert not param_matches(["norm1"], "blocks.0.norm10.weight")


def test_parameters_registered_and_survive_device_and_dtype_moves():
    model, _ = _lora_sam()
    model = model.to(torch.float64)  # a move that copies tensors, like .to("cuda")
    named = dict(model.named_parameters())
    lora = {n: p for n, p in named.items() if ".lora_" in n}
    assert len(lora) == 2 * 30
    assert all(p.dtype == torch.float64 and p.is_leaf for p in lora.values())
    state = model.state_dict()
    assert all(n in state for n in lora)
    # modules built directly on another dtype create their adapter there too
    layer = LoraLinear(nn.Linear(4, 4).to(torch.float64), rank=2)
    assert layer.lora_A.dtype == torch.float64 and layer.lora_B.dtype == torch.float64


def test_adapters_change_after_an_optimiser_step_and_frozen_weights_do_not():
    net = SamSegmentationNet("sam_vit_test", checkpoint=None)
    inject_adapters(net, LoraConfig(rank=4, alpha=8, target_modules=[r"sam\." + t for t in SAM_TARGETS]))
    configure_trainable(net)
    before = copy.deepcopy(net.state_dict())
    optimiser = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    target = (torch.rand(2, 1, 64, 64) > 0.5).float()
    loss = nn.functional.binary_cross_entropy_with_logits(net(torch.rand(2, 3, 64, 64)), target)
    loss.backward()
    optimiser.step()
    after = net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert {k for k in changed if k.endswith("lora_B")} == {k for k in before if k.endswith("lora_B")}
    assert all(".lora_" in k for k in changed), sorted(k for k in changed if ".lora_" not in k)


@pytest.mark.parametrize("name,targets", [("sam_vit_test", SAM_TARGETS), ("sam2.1_hiera_test", SAM2_TARGETS)])
def test_merge_and_unmerge_match_unmerged_outputs(name, targets):
    net = SamSegmentationNet(name, checkpoint=None).eval()
    inject_adapters(net, LoraConfig(rank=4, alpha=8, target_modules=[r"sam\." + t for t in targets]))
    with torch.no_grad():
        for _, layer in adapter_layers(net):
            layer.lora_B.normal_(std=0.05)
    image = torch.rand(2, 3, 96, 80)
    original_weights = {n: l.weight.clone() for n, l in adapter_layers(net)}
    with torch.no_grad():
        unmerged = net(image)
        merge_adapters(net)
        merged = net(image)
        unmerge_adapters(net)
        restored = net(image)
    assert (merged - unmerged).abs().max() < 1e-5
    assert torch.equal(restored, unmerged)
    assert all(torch.equal(l.weight, original_weights[n]) for n, l in adapter_layers(net))
    with torch.no_grad():
        plain = merge_and_unload(net)(image)
    assert not list(adapter_layers(net))
    assert (plain - unmerged).abs().max() < 1e-5


def test_trainable_counts_follow_the_lora_arithmetic():
    model, names = _lora_sam(rank=4)
    report = configure_trainable(model)
    expected = sum(4 * (m.in_features + m.out_features) for _, m in adapter_layers(model))
    assert report.trainable == report.groups["adapters"] == expected
    assert report.total == sum(p.numel() for p in model.parameters())
    report = configure_trainable(model, {"encoder_norms": [r"image_encoder\.blocks\.\d+\.norm[12]"]})
    assert report.groups["encoder_norms"] == 2 * 2 * 2 * 32  # 2 blocks × 2 norms × (weight + bias) × width
    assert report.trainable == expected + report.groups["encoder_norms"]
    with pytest.raises(ValueError, match="match no parameter"):
        configure_trainable(model, {"typo": ["no_such_module"]})


@pytest.mark.slow
def test_sam2lora_share_on_hiera_large_is_between_3_and_5_percent():
    model, names = _lora_sam(rank=64, targets=SAM2_TARGETS, name="sam2.1_hiera_l")
    assert len(names) == 48 + 28  # every Hiera-L block + the 28 decoder attention projections
    report = configure_trainable(model)
    # methods.md: r = 64 on Hiera-L gives 7.69M trainable parameters
    assert report.trainable == 7_693_312
    assert 0.03 < report.trainable_share < 0.05


def test_adapter_only_round_trip_onto_a_fresh_backbone(tmp_path):
    base = build_backbone("sam_vit_test", checkpoint=None)
    base_path = tmp_path / "base.pth"
    torch.save(base.state_dict(), base_path)

    trained, _ = _lora_sam()
    trained.load_state_dict(base.state_dict(), strict=False)
    configure_trainable(trained, {"decoder_norms": [r"mask_decoder\.transformer\..*norm.*"]})
    with torch.no_grad():
        for name, param in trained.named_parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.1)
    state = adapter_state_dict(trained)
    assert all(".lora_" in k or "norm" in k for k in state)
    assert not any(k.endswith("qkv.weight") for k in state)
    path = save_adapter_checkpoint(trained, tmp_path / "model.pt")
    assert path.stat().st_size < 200_000

    fresh = build_backbone("sam_vit_test", checkpoint=base_path)
    inject_adapters(fresh, LoraConfig(rank=4, alpha=8, target_modules=SAM_TARGETS))
    configure_trainable(fresh, {"decoder_norms": [r"mask_decoder\.transformer\..*norm.*"]})
    load_adapter_checkpoint(fresh, path)
    for key, value in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_adapter_state_that_does_not_fit_is_refused():
    model, _ = _lora_sam(rank=4)
    configure_trainable(model)
    other, _ = _lora_sam(rank=2)
    configure_trainable(other)
    with pytest.raises(CheckpointError, match="mis-shaped"):
        load_adapter_state_dict(model, adapter_state_dict(other))
    with pytest.raises(CheckpointError, match="missing"):
        load_adapter_state_dict(model, {})
    with pytest.raises(CheckpointError, match="unknown keys"):
        load_adapter_state_dict(model, {"not.a.key": torch.zeros(1)}, strict=False)


def test_batchnorm_statistics_of_trained_modules_are_saved():
    head = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    head(torch.randn(8, 4))
    state = adapter_state_dict(head)
    assert {"1.running_mean", "1.running_var", "1.num_batches_tracked", "0.weight"} <= set(state)
