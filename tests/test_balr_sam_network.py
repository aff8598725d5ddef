"""BALR-SAM parts: bottleneck adapters, CDEN, low-rank tensor attention, the network and its parameter budget."""

from __future__ import annotations

import copy

import pytest
import torch
from segment_anything.modeling import MaskDecoder, TwoWayTransformer
from segment_anything.modeling.transformer import Attention as SamAttention
from torch import nn

from common.adapters import (
    BottleneckAdapterLinear,
    BottleneckConfig,
    adapter_state_dict,
    load_adapter_state_dict,
    merge_adapters,
)
from common.backbones import build_backbone
from common.networks import BalrSamNet, DetailEnhancementNet, LowRankTensorAttention, replace_decoder_attention
from common.networks.low_rank_attention import is_decoder_attention


def attention_parameters(decoder: nn.Module) -> int:
    return sum(p.numel() for m in decoder.transformer.modules() if is_decoder_attention(m) for p in m.parameters())


# ---------------------------------------------------------------- bottleneck adapter
def test_bottleneck_adapter_starts_as_base_and_trains_only_its_parameters():
    base = nn.Linear(12, 10)
    layer = BottleneckAdapterLinear(copy.deepcopy(base), rank=3)
    x = torch.randn(4, 5, 12)
    assert torch.equal(layer(x), base(x))
    layer(x).square().sum().backward()
    assert layer.weight.grad is None and layer.bias.grad is None
    # the zero up-projection gets a gradient at once; everything before it only after it moved
    assert layer.adapter_up.grad.abs().sum() > 0
    with pytest.raises(NotImplementedError, match="non-linear"):
        merge_adapters(nn.Sequential(layer))


def test_bottleneck_config_validates_rank():
    with pytest.raises(ValueError, match="rank"):
        BottleneckConfig(rank=0, target_modules=["x"])


@pytest.mark.parametrize(
    "backbone, block_pattern, mlp_out",
    [
        ("sam_vit_test", "image_encoder.blocks.{}", "mlp.lin2"),
        ("sam2.1_hiera_test", "image_encoder.trunk.blocks.{}", "mlp.layers.1"),
    ],
)
def test_adapters_after_attention_and_on_mlp_branch_of_every_block(backbone, block_pattern, mlp_out):
    net = BalrSamNet(backbone, num_classes=1, adapter_rank=4)
    blocks = net.sam.get_submodule(block_pattern.format("").rstrip("."))
    for i in range(len(blocks)):
        block = net.sam.get_submodule(block_pattern.format(i))
        assert isinstance(block.attn.proj, BottleneckAdapterLinear)
        assert isinstance(block.get_submodule(mlp_out), BottleneckAdapterLinear)
    assert len(net.adapted_layers) == 2 * len(blocks)


@pytest.mark.slow
def test_adapters_in_every_litemedsam_attention_block():
    net = BalrSamNet("litemedsam", num_classes=1, adapter_rank=4)
    blocks = [n for n, _ in net.sam.named_modules() if n.endswith(".attn") and ".blocks." in n]
    assert len(blocks) == 10 and len(net.adapted_layers) == 2 * len(blocks)
    assert all(
        isinstance(net.sam.get_submodule(b[: -len("attn")] + "mlp.fc2"), BottleneckAdapterLinear) for b in blocks
    )


# ---------------------------------------------------------------- CDEN
@pytest.mark.parametrize("stride, size", [(16, 128), (4, 64), (8, 64)])
def test_cden_levels_match_the_decoder_grids_and_start_at_zero(stride, size):
    cden = DetailEnhancementNet(embedding_dim=32, embedding_stride=stride)
    out = cden(torch.randn(2, 3, size, size))
    h = size // stride
    assert out.embedding.shape == (2, 32, h, h)
    assert [s.shape for s in out.skips] == [(2, 4, 4 * h, 4 * h), (2, 8, 2 * h, 2 * h)]
    assert all(t.abs().max() == 0 for t in (out.embedding, *out.skips))
    with pytest.raises(ValueError, match="multiple"):
        cden(torch.randn(1, 3, size + 2, size + 2))


def test_cden_leaves_the_network_output_unchanged_at_init_then_learns():
    torch.manual_seed(0)
    with_cden = BalrSamNet("sam_vit_test", num_classes=2, adapter_rank=4).eval()
    without = BalrSamNet("sam_vit_test", num_classes=2, adapter_rank=4, use_cden=False).eval()
    without.load_state_dict(with_cden.state_dict(), strict=False)
    x = torch.rand(2, 1, 64, 64)
    assert torch.allclose(with_cden(x), without(x), atol=1e-6)
    with_cden.train()
    with_cden(x).square().mean().backward()
    assert with_cden.cden.fuse.weight.grad.abs().sum() > 0 and with_cden.cden.skip_fine.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------- tensor attention
def _random_attention(kind: str) -> nn.Module:
    torch.manual_seed(1)
    if kind == "sam":
        layer = SamAttention(64, num_heads=4, downsample_rate=2)
    else:
        from sam2.modeling.sam.transformer import Attention as Sam2Attention

        layer = Sam2Attention(64, num_heads=4, downsample_rate=2, kv_in_dim=48)
    for p in layer.parameters():
        nn.init.normal_(p, std=0.2)  # non-zero biases too, so the bias folding is exercised
    return layer


@pytest.mark.parametrize("kind", ["sam", "sam2"])
@pytest.mark.parametrize("share", [True, False])
def test_tensor_attention_equals_dense_attention_at_full_rank(kind, share):
    dense = _random_attention(kind).double()
    head_dim = dense.internal_dim // dense.num_heads
    low = LowRankTensorAttention.from_dense(dense, rank=2 * head_dim if share else head_dim, share_key_value=share)
    kv_dim = dense.k_proj.in_features
    q, k, v = torch.randn(2, 5, 64).double(), torch.randn(2, 30, kv_dim).double(), torch.randn(2, 30, kv_dim).double()
    assert torch.allclose(low(q, k, v), dense(q, k, v), atol=1e-8)
    # at a quarter of the head width it approximates, it does not reproduce
    quarter = LowRankTensorAttention.from_dense(dense, share_key_value=share)
    assert quarter.rank == head_dim // 4 and not torch.allclose(quarter(q, k, v), dense(q, k, v), atol=1e-3)


def test_decoder_attention_cut_by_at_least_75_percent_in_parameters_and_activations():
    # SAM's released decoder widths: 256 channels, 8 heads, cross-attention at half width; a 64×64 embedding
    decoder = MaskDecoder(
        transformer_dim=256,
        transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
    )
    dense = copy.deepcopy(decoder)
    names = replace_decoder_attention(decoder)
    assert len(names) == 7  # 2 layers × 3 attentions + the final token-to-image attention
    cut = 1 - attention_parameters(decoder) / attention_parameters(dense)
    assert cut >= 0.75

    # activations the attention layers keep for backward, beyond their inputs (which the residual stream owns)
    def created_bytes(model: nn.Module) -> int:
        image, pe = torch.randn(1, 256, 64, 64), torch.randn(1, 256, 64, 64)
        tokens = torch.randn(1, 6, 256, requires_grad=True)
        layers = [m for m in model.modules() if is_decoder_attention(m)]
        saved: dict[int, int] = {}
        inputs: set[int] = set()
        active: list[nn.Module] = []

        def enter(module, args, kwargs):  # SAM passes q, k, v as keywords
            active.append(module)
            inputs.update(t.data_ptr() for t in (*args, *kwargs.values()))

        def leave(module, args, output):
            active.pop()

        hooks = [m.register_forward_pre_hook(enter, with_kwargs=True) for m in layers]
        hooks += [m.register_forward_hook(leave) for m in layers]

        def pack(t):
            if active and t.data_ptr() not in inputs:
                saved[t.data_ptr()] = t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model.transformer(image, pe, tokens)
        for h in hooks:
            h.remove()
        return sum(saved.values())

    assert 1 - created_bytes(decoder) / created_bytes(dense) >= 0.75


# ---------------------------------------------------------------- network
def test_network_outputs_binary_logit_or_k_plus_one_channels_and_rejects_prompts():
    x = torch.rand(2, 1, 72, 60)
    assert BalrSamNet("sam_vit_test", num_classes=1, adapter_rank=4)(x).shape == (2, 1, 72, 60)
    net = BalrSamNet("sam2.1_hiera_test", num_classes=3, adapter_rank=4)
    assert net(x).shape == (2, 4, 72, 60)
    with pytest.raises(ValueError, match="prompt-free"):
        net(x, boxes=torch.tensor([[0, 0, 10, 10], [0, 0, 5, 5]]))
    with pytest.raises(TypeError, match="True or False"):
        BalrSamNet("sam_vit_test", use_cden="false")


def test_trainable_parts_and_adapter_checkpoint_round_trip():
    torch.manual_seed(0)
    net = BalrSamNet("sam_vit_test", num_classes=2, adapter_rank=4)
    groups = net.parameter_report.groups
    assert set(groups) == {"adapters", "class_tokens", "mask_decoder", "cden"} and all(groups.values())
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert not any(n.startswith("sam.prompt_encoder") or "iou_prediction_head" in n for n in trainable)
    assert not any(n.startswith("sam.image_encoder") and ".adapter_" not in n for n in trainable)
    with torch.no_grad():
        for p in net.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    state = adapter_state_dict(net)
    assert not any(k.endswith(("qkv.weight", "proj.weight")) and "image_encoder" in k for k in state)
    torch.manual_seed(1)
    fresh = BalrSamNet("sam_vit_test", num_classes=2, adapter_rank=4)
    fresh.sam.load_state_dict(net.sam.state_dict())  # the same "pretrained" base
    load_adapter_state_dict(fresh, state)
    x = torch.rand(1, 1, 64, 64)
    assert torch.allclose(net.eval()(x), fresh.eval()(x), atol=1e-6)


def _meta_report(backbone: str, rank: int):
    with torch.device("meta"):
        return BalrSamNet(build_backbone(backbone, checkpoint=None), num_classes=1, adapter_rank=rank).parameter_report


@pytest.mark.parametrize(
    "backbone, depth, width",
    [("sam_vit_b", 12, 768), ("sam_vit_l", 24, 1024), ("sam_vit_h", 32, 1280)],
)
def test_trainable_counts_per_backbone_follow_the_arithmetic(backbone, depth, width):
    report = _meta_report(backbone, rank=56)
    # two adapters per block: Down (r×d + r), Up (d×r + d), scale (1)
    assert report.groups["adapters"] == 2 * depth * (2 * width * 56 + 56 + width + 1)
    # CDEN: stem 3·3·3·32 + 3 depthwise-separable levels + GroupNorm affine + fusion 448→256 + skips 64→32, 128→64
    assert report.groups["cden"] == 172_576
    assert report.groups["class_tokens"] == 256


def test_default_rank_lands_vit_h_near_the_papers_share():
    report = _meta_report("sam_vit_h", rank=56)  # the bundle's default
    assert 11.5e6 <= report.trainable <= 12.2e6  # paper: 11.7M
    assert 0.017 <= report.trainable_share <= 0.019  # paper: 1.8%
