"""The one table of SAM-family module names (common.backbones.module_names) against the real module trees of each
encoder family: every layer name it gives exists once in every block, and the methods' targets are built from it."""

from __future__ import annotations

import re

import pytest

from common.backbones import build_backbone
from common.backbones.module_names import (
    DECODER_ATTENTION_PROJECTIONS,
    ENCODER_FAMILIES,
    decoder_name,
    encoder_family,
    encoder_layers,
    encoder_neck,
    in_network,
)
from common.networks import BALR_ADAPTER_TARGETS, CONV_LORA_TARGETS, S_SAM_SVD_TARGETS, SAM2LORA_TARGETS

#: one backbone of each family, random weights
FAMILY_BACKBONES = {
    "sam_vit": ("sam_vit_test", None),
    "hiera": ("sam2.1_hiera_test", None),
    "tiny_vit": ("litemedsam", 64),
}


def _names(backbone: str, size):
    model = build_backbone(backbone, checkpoint=None, **({"input_size": size} if size else {}))
    return model, [name for name, _ in model.named_modules()]


@pytest.mark.parametrize("family", sorted(FAMILY_BACKBONES))
def test_every_layer_name_exists_once_in_every_block(family):
    model, names = _names(*FAMILY_BACKBONES[family])
    assert encoder_family(model) == family
    # the transformer blocks (TinyViT's first stage holds convolution blocks, without attention)
    blocks = {n for n in names if re.fullmatch(ENCODER_FAMILIES[family]["blocks"], n) and f"{n}.attn" in names}
    assert len(blocks) >= 2, family
    for layer in ("qkv", "attn_out", "mlp_in", "mlp_out", "norms"):
        found = [n for n in names if re.fullmatch(encoder_layers(family, layer), n)]
        owners = {re.match(ENCODER_FAMILIES[family]["blocks"], n).group(0) for n in found}
        per_block = 2 if layer == "norms" else 1  # two LayerNorms a block
        assert owners == blocks and len(found) == per_block * len(blocks), (family, layer, len(found), len(blocks))
    assert any(re.fullmatch(encoder_neck(family), n) for n in names)
    decoder = decoder_name(model)
    assert hasattr(model, decoder)
    projections = [n for n in names if re.fullmatch(rf"{decoder}\.{DECODER_ATTENTION_PROJECTIONS}", n)]
    assert len(projections) == 28  # q/k/v/out of the two-way transformer's 7 attentions
    assert in_network(encoder_neck(family)) == rf"sam\.{encoder_neck(family)}"


def test_the_methods_targets_come_from_the_one_table():
    for family in ENCODER_FAMILIES:
        assert BALR_ADAPTER_TARGETS[family] == [encoder_layers(family, "attn_out", "mlp_out")]
        assert S_SAM_SVD_TARGETS[family][0] == encoder_layers(family, "qkv", "attn_out", "mlp_in", "mlp_out")
        assert SAM2LORA_TARGETS[family][0] == encoder_layers(family, "qkv")
        assert SAM2LORA_TARGETS[family][1].endswith(DECODER_ATTENTION_PROJECTIONS)
        assert encoder_layers(family, "qkv") in CONV_LORA_TARGETS
