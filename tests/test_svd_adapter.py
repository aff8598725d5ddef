"""Singular-value tuning layer (S-SAM): exact start, gradients, merge, checkpoints without factors, caching."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from common.adapters import (
    SvdConfig,
    SvdLayer,
    adapter_state_dict,
    auxiliary_loss,
    configure_trainable,
    inject_adapters,
    load_adapter_state_dict,
    merge_adapters,
    unmerge_adapters,
)
from common.backbones import build_backbone

S_SAM_TARGETS = [
    r"image_encoder\.blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.lin1|mlp\.lin2)",
    r"image_encoder\.neck\.[02]",
]


@pytest.mark.parametrize("base", [nn.Linear(24, 40), nn.Conv2d(8, 16, 3, padding=1), nn.Conv2d(16, 8, 1)])
def test_reproduces_the_base_layer_at_init(base):
    layer = SvdLayer(base)
    x = torch.randn(2, 24) if isinstance(base, nn.Linear) else torch.randn(2, base.in_channels, 7, 7)
    assert (layer(x) - base(x)).abs().max() < 1e-5
    assert layer.scale.shape == layer.shift.shape == (min(base.weight.shape[0], base.weight[0].numel()),)


def test_gradients_reach_scale_and_shift_only():
    model = build_backbone("sam_vit_test")
    inject_adapters(model, SvdConfig(target_modules=S_SAM_TARGETS))
    configure_trainable(model)
    model.image_encoder(torch.rand(1, 3, 128, 128)).square().mean().backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad and all(n.endswith((".scale", ".shift")) for n in with_grad)
    assert len([n for n in with_grad if n.endswith(".scale")]) == 2 * 4 + 2  # 2 blocks × 4 linears + 2 neck convs


def test_merge_equals_unmerged_and_unmerge_restores():
    model = build_backbone("sam_vit_test").eval()
    inject_adapters(model, SvdConfig(target_modules=S_SAM_TARGETS))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".scale"):
                param.uniform_(0.5, 1.5)
            elif name.endswith(".shift"):
                param.normal_(std=0.05)
        image = torch.rand(1, 3, 128, 128)
        unmerged = model.image_encoder(image)
        merge_adapters(model)
        merged = model.image_encoder(image)
        unmerge_adapters(model)
        restored = model.image_encoder(image)
    assert (merged - unmerged).abs().max() < 1e-5 and torch.equal(restored, unmerged)


def test_checkpoint_holds_no_factors_and_applies_to_a_fresh_model():
    base = build_backbone("sam_vit_test")
    trained = build_backbone("sam_vit_test")
    trained.load_state_dict(base.state_dict())
    inject_adapters(trained, SvdConfig(target_modules=S_SAM_TARGETS))
    configure_trainable(trained)
    with torch.no_grad():
        for name, param in trained.named_parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.1)
    state = adapter_state_dict(trained)
    assert state and all(k.endswith((".scale", ".shift")) for k in state)
    assert not any("svd_" in k for k in trained.state_dict())  # factors are never written

    fresh = build_backbone("sam_vit_test")
    inject_adapters(fresh, SvdConfig(target_modules=S_SAM_TARGETS))  # factorised from fresh random weights...
    fresh.load_state_dict(base.state_dict(), strict=False)  # ...and again once the base weights are loaded
    configure_trainable(fresh)
    load_adapter_state_dict(fresh, state)
    image = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        assert (fresh.image_encoder(image) - trained.image_encoder(image)).abs().max() < 1e-5


def test_effective_weight_is_cached_in_eval_and_refreshed_after_changes():
    layer = SvdLayer(nn.Linear(6, 5)).eval()
    with torch.no_grad():
        first = layer.effective_weight()
        assert layer.effective_weight() is first  # cached
        layer.shift.add_(0.1)
        second = layer.effective_weight()
    assert second is not first and not torch.equal(second, first)
    layer.train()
    assert layer.effective_weight().requires_grad  # training builds it with gradients every call


def test_relu_keeps_singular_values_non_negative_and_regulariser():
    layer = SvdLayer(nn.Linear(4, 4), regularization_weight=0.5)
    with torch.no_grad():
        layer.scale.fill_(-1.0)
    assert torch.allclose(layer.effective_weight(), torch.zeros(4, 4))
    assert auxiliary_loss(layer).item() == pytest.approx(0.5 * 4 * 2.0)
    assert SvdLayer(nn.Linear(4, 4)).auxiliary_loss() is None
