"""Conv-LoRA layer: grids, routing, balance loss, gradients, parameter overhead, injection into SAM blocks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from common.adapters import (
    ConvLoraConfig,
    ConvLoraLinear,
    adapter_layers,
    auxiliary_loss,
    coefficient_of_variation_squared,
    configure_trainable,
    inject_adapters,
)
from common.backbones import build_backbone


def _layer(**kwargs):
    torch.manual_seed(0)
    return ConvLoraLinear(nn.Linear(16, 48), rank=3, alpha=6, **kwargs)


@pytest.mark.parametrize("shape", [(2, 4, 4, 16), (5, 6, 3, 16), (3, 9, 16), (1, 14, 14, 16)])
def test_shapes_on_global_windowed_non_square_and_token_grids(shape):
    layer = _layer()
    out = layer(torch.randn(shape))
    assert out.shape == (*shape[:-1], 48)
    assert layer.last_expert_index.shape == (shape[0],)


def test_tokens_without_a_square_grid_are_an_error():
    with pytest.raises(ValueError, match="grid"):
        _layer()(torch.randn(2, 10, 16))


def test_zero_change_at_init_and_parameter_registration():
    layer = _layer()
    x = torch.randn(2, 4, 4, 16)
    assert torch.allclose(layer(x), nn.functional.linear(x, layer.weight, layer.bias), atol=1e-6)
    names = {n for n, _ in layer.named_parameters()}
    assert {"lora_A", "lora_B", "gate", "noise", "experts.0.weight", "experts.7.bias"} <= names
    assert not layer.weight.requires_grad
    assert all(torch.count_nonzero(conv.bias) == 0 for conv in layer.experts)


def test_top1_routing_sends_each_sample_through_exactly_its_expert():
    layer = _layer(expert_scales=(1, 2))
    layer.eval()  # no noise: deterministic routing
    with torch.no_grad():
        layer.lora_B.normal_()
        layer.gate.copy_(torch.tensor([[5.0, -5.0], [0.0, 0.0], [0.0, 0.0]]))
    x = torch.randn(4, 4, 4, 16)
    out = layer(x)
    index = layer.last_expert_index
    z = (x @ layer.lora_A.t()).permute(0, 3, 1, 2)
    pooled = z.mean(dim=(2, 3))
    assert torch.equal(index, (pooled @ layer.gate).argmax(1))
    for i in range(4):
        grid = z[i : i + 1]
        scale = layer.expert_scales[index[i]]
        y = nn.functional.interpolate(grid, scale_factor=scale, mode="bicubic") if scale != 1 else grid
        y = nn.functional.gelu(layer.experts[index[i]](y))
        y = nn.functional.interpolate(y, size=(4, 4), mode="bicubic") if scale != 1 else y
        expected = (
            nn.functional.linear(x[i], layer.weight, layer.bias)
            + ((grid + y).permute(0, 2, 3, 1)[0] @ layer.lora_B.t()) * layer.scaling
        )
        assert torch.allclose(out[i], expected, atol=1e-5)


@pytest.mark.parametrize("scale_by_gate", [False, True])
def test_export_runs_every_expert_and_keeps_the_routed_one_exactly(scale_by_gate, monkeypatch):
    """Traced or exported, the experts run densely (no data-dependent indexing): the same values as the sparse path
    that training and inference run for the same routing; outside export only the routed experts run."""
    from common.adapters import conv_lora

    layer = _layer(scale_by_gate=scale_by_gate)
    with torch.no_grad():
        for conv in layer.experts:
            conv.weight.normal_()
            conv.bias.normal_()
    grid = torch.randn(6, 3, 5, 5)
    index = torch.tensor([0, 7, 3, 3, 1, 5])
    gate = torch.rand(6)
    calls = []
    expert = layer._expert
    monkeypatch.setattr(layer, "_expert", lambda number, x: (calls.append(number), expert(number, x))[1])
    layer.eval()
    sparse = layer._experts(grid, index, gate)
    assert sorted(calls) == [0, 1, 3, 5, 7]  # each routed expert once, on its own samples
    monkeypatch.setattr(conv_lora, "_exporting", lambda: True)
    dense = layer._experts(grid, index, gate)
    assert len(calls) == 5 + layer.num_experts
    assert torch.allclose(dense, sparse, atol=1e-6) and sparse.abs().sum() > 0


def test_padding_tokens_are_left_out_of_routing():
    layer = _layer()
    layer.eval()
    captured = []
    original = layer._route
    layer._route = lambda pooled: (captured.append(pooled), original(pooled))[1]
    x = torch.randn(1, 4, 4, 16)
    padded = torch.zeros(1, 6, 6, 16)
    padded[:, :4, :4] = x  # a window padded with zero tokens, as SAM pads windows
    layer(x)
    layer(padded)
    assert torch.allclose(captured[0], captured[1], atol=1e-6)


def test_balance_loss_is_positive_and_differentiable_and_experts_get_gradients():
    layer = _layer()
    layer.train()
    with torch.no_grad():
        layer.lora_B.normal_()
    out = layer(torch.randn(16, 4, 4, 16))
    assert layer.balance_loss.item() > 0
    (out.square().mean() + layer.balance_loss).backward()
    assert layer.noise.grad.abs().sum() > 0 and layer.gate.grad.abs().sum() > 0  # through the smooth load
    used = set(layer.last_expert_index.tolist())
    assert used and all(layer.experts[e].weight.grad.abs().sum() > 0 for e in used)
    assert layer.lora_A.grad.abs().sum() > 0
    layer.eval()
    layer(torch.randn(2, 4, 4, 16))
    assert layer.balance_loss.item() == 0  # no balance loss outside training


def test_scale_by_gate_lets_the_task_loss_reach_the_gate():
    for scale_by_gate, expected in ((False, False), (True, True)):
        layer = _layer(scale_by_gate=scale_by_gate)
        with torch.no_grad():
            layer.lora_B.normal_()
            layer.gate.normal_()
        layer(torch.randn(8, 4, 4, 16)).square().mean().backward()  # task loss only, no balance term
        assert (layer.gate.grad is not None and layer.gate.grad.abs().sum() > 0) == expected


def test_scale_by_gate_rejects_a_string():
    # `--scale_by_gate false` on the monai.bundle command line is the string 'false', which is truthy
    with pytest.raises(TypeError, match="True or False"):
        ConvLoraConfig(target_modules=["qkv"], scale_by_gate="false")


def test_coefficient_of_variation():
    assert coefficient_of_variation_squared(torch.tensor([2.0, 2.0, 2.0])).item() == pytest.approx(0.0)
    assert coefficient_of_variation_squared(torch.tensor([0.0, 4.0])).item() == pytest.approx(8.0 / 4.0)
    assert coefficient_of_variation_squared(torch.tensor([3.0])).item() == 0.0


def test_conv_lora_cannot_be_merged():
    with pytest.raises(NotImplementedError, match="cannot be merged"):
        _layer().merge()


def test_injection_into_sam_blocks_and_auxiliary_loss():
    sam = build_backbone("sam_vit_test", input_size=96)  # 6×6 tokens, 4×4 windows: padded windows and a global block
    names = inject_adapters(sam, ConvLoraConfig(rank=3, target_modules=[r"image_encoder\..*attn\.qkv"]))
    assert names == ["image_encoder.blocks.0.attn.qkv", "image_encoder.blocks.1.attn.qkv"]
    configure_trainable(sam)
    sam.train()
    embedding = sam.image_encoder(torch.rand(2, 3, 96, 96))
    assert embedding.shape == (2, 32, 6, 6)
    windowed, global_ = (layer for _, layer in adapter_layers(sam))
    assert windowed.last_expert_index.shape == (2 * 4,)  # 4 padded windows per image
    assert global_.last_expert_index.shape == (2,)
    total = auxiliary_loss(sam)
    assert total.item() > 0 and total.requires_grad


@pytest.mark.slow
def test_parameter_overhead_over_lora_at_vit_h_rank_3():
    sam = build_backbone("sam_vit_h", checkpoint=None)
    inject_adapters(sam, ConvLoraConfig(rank=3, target_modules=[r"image_encoder\..*attn\.qkv"]))
    lora_part = moe_part = 0
    for _, layer in adapter_layers(sam):
        lora_part += layer.lora_A.numel() + layer.lora_B.numel()
        moe_part += sum(
            p.numel() for n, p in layer.named_parameters() if n.split(".")[0] in ("gate", "noise", "experts")
        )
    assert lora_part == 32 * 3 * (1280 + 3840) == 491_520  # plain LoRA on the same 32 qkv layers
    assert moe_part == 32 * (2 * 3 * 8 + 8 * (3 * 3 * 9 + 3)) == 23_040
    assert 0.03 < moe_part / lora_part < 0.06  # +4.7 %, as the paper's arithmetic
