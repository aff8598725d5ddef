"""Segment Anything (ViT-B/L/H and a tiny test variant) built from the official ``segment_anything`` classes."""

from __future__ import annotations

from functools import partial

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

__all__ = ["SAM_VIT_ARCHITECTURES", "build_sam_vit"]

_PATCH_SIZE = 16

# Architecture hyper-parameters of the released models (segment_anything.build_sam), plus a tiny variant that
# keeps windowed and global attention blocks, relative positions and the full decoder structure.
SAM_VIT_ARCHITECTURES: dict[str, dict] = {
    "sam_vit_b": dict(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
    "sam_vit_l": dict(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "sam_vit_h": dict(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
    "sam_vit_test": dict(
        embed_dim=32,
        depth=2,
        num_heads=2,
        global_attn_indexes=(1,),
        window_size=4,
        prompt_embed_dim=32,
        decoder_mlp_dim=64,
        decoder_num_heads=2,
    ),
}


def build_sam_vit(
    name: str,
    input_size: int = 1024,
    embed_dim: int = 768,
    depth: int = 12,
    num_heads: int = 12,
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11),
    window_size: int = 14,
    prompt_embed_dim: int = 256,
    decoder_mlp_dim: int = 2048,
    decoder_num_heads: int = 8,
) -> Sam:
    """Build ``segment_anything.modeling.Sam`` with random weights for a square ``input_size`` input.

    ``input_size`` must be a multiple of 16; the image embedding is ``input_size/16`` squared.
    """
    if input_size % _PATCH_SIZE:
        raise ValueError(f"{name}: input_size must be a multiple of {_PATCH_SIZE}, got {input_size}")
    grid = input_size // _PATCH_SIZE
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=depth,
            embed_dim=embed_dim,
            img_size=input_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=num_heads,
            patch_size=_PATCH_SIZE,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=global_attn_indexes,
            window_size=window_size,
            out_chans=prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(input_size, input_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2, embedding_dim=prompt_embed_dim, mlp_dim=decoder_mlp_dim, num_heads=decoder_num_heads
            ),
            transformer_dim=prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=prompt_embed_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
