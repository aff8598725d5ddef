"""SAM-family module names in one place.

Every method adapts layers it finds by regular expressions over module names, and those names depend only on the
image encoder's architecture family and on whether the model is SAM or SAM 2 (``mask_decoder`` against
``sam_mask_decoder``). The names live here, once; the methods compose their target patterns from them.

Coordinates: patterns are relative to the backbone (the SAM model itself, as :func:`common.adapters.inject_adapters`
sees it); :func:`in_network` turns one into the coordinates of a network that holds the backbone as ``sam`` (as
:func:`common.adapters.configure_trainable` sees it).
"""

from __future__ import annotations

from torch import nn

__all__ = [
    "DECODER_ATTENTION_PROJECTIONS",
    "ENCODER_FAMILIES",
    "decoder_name",
    "encoder_family",
    "encoder_layers",
    "encoder_neck",
    "in_network",
]

#: image-encoder family → where its blocks are, and the names of the layers of one block (regular expressions)
ENCODER_FAMILIES: dict[str, dict[str, str]] = {
    # SAM ViT-B/L/H
    "sam_vit": {"blocks": r"image_encoder\.blocks\.\d+", "qkv": r"attn\.qkv", "attn_out": r"attn\.proj",
                "mlp_in": r"mlp\.lin1", "mlp_out": r"mlp\.lin2", "norms": r"norm[12]",
                "neck": r"image_encoder\.neck\.[02]"},
    # LiteMedSAM's TinyViT (its convolutional first stage has no attention blocks)
    "tiny_vit": {"blocks": r"image_encoder\.layers\.\d+\.blocks\.\d+", "qkv": r"attn\.qkv", "attn_out": r"attn\.proj",
                 "mlp_in": r"mlp\.fc1", "mlp_out": r"mlp\.fc2", "norms": r"(attn|mlp)\.norm",
                 "neck": r"image_encoder\.neck\.[02]"},
    # SAM 2's Hiera
    "hiera": {"blocks": r"image_encoder\.trunk\.blocks\.\d+", "qkv": r"attn\.qkv", "attn_out": r"attn\.proj",
              "mlp_in": r"mlp\.layers\.0", "mlp_out": r"mlp\.layers\.1", "norms": r"norm[12]",
              "neck": r"image_encoder\.neck\.convs\.\d+\.conv"},
}  # fmt: skip

#: the q/k/v/out projections of every attention of the mask decoder's two-way transformer, relative to the decoder
DECODER_ATTENTION_PROJECTIONS = r"transformer\..*(q|k|v|out)_proj"


def encoder_family(sam: nn.Module) -> str:
    """The image encoder's architecture family, a key of :data:`ENCODER_FAMILIES`: ``"sam_vit"`` (SAM ViT-B/L/H),
    ``"tiny_vit"`` (LiteMedSAM) or ``"hiera"`` (SAM 2)."""
    encoder = sam.image_encoder
    if hasattr(encoder, "trunk"):
        return "hiera"
    return "tiny_vit" if hasattr(encoder, "layers") else "sam_vit"


def decoder_name(sam: nn.Module) -> str:
    """The mask decoder's attribute name: ``sam_mask_decoder`` in SAM 2, ``mask_decoder`` in SAM and LiteMedSAM."""
    return "sam_mask_decoder" if hasattr(sam, "sam_mask_decoder") else "mask_decoder"


def encoder_layers(family: str, *layers: str) -> str:
    """Pattern of the named ``layers`` (keys of :data:`ENCODER_FAMILIES`, e.g. ``"qkv"``, ``"mlp_out"``) of every
    encoder block of ``family``, relative to the backbone."""
    names = ENCODER_FAMILIES[family]
    return rf"{names['blocks']}\.({'|'.join(names[layer] for layer in layers)})"


def encoder_neck(family: str) -> str:
    """Pattern of the encoder neck's convolutions of ``family``, relative to the backbone."""
    return ENCODER_FAMILIES[family]["neck"]


def in_network(pattern: str, prefix: str = "sam") -> str:
    """A backbone-relative ``pattern`` in the coordinates of a network that holds the backbone as ``prefix``."""
    return rf"{prefix}\.{pattern}"
