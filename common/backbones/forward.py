"""One calling convention for the image encoder and mask decoder of every backbone family.

SAM (and LiteMedSAM) and SAM2 expose the same parts with different signatures: SAM2's encoder returns an FPN and
its decoder takes high-resolution skip features; SAM's decoder repeats the image embedding once per prompt, so a
batch of B images with one prompt set each has to be decoded image by image. Networks call :func:`encode_image`
and :func:`decode_masks` and never touch those differences.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = [
    "ImageFeatures",
    "decode_masks",
    "encode_image",
    "encoder_family",
    "mask_decoder_of",
    "prompt_embeddings",
    "prompt_encoder_of",
    "prompt_free_embeddings",
]


@dataclass
class ImageFeatures:
    """Encoder output for a batch.

    Attributes:
        embedding: ``B×C×h×w`` image embedding at stride 16 (C = decoder width, 256 for released models).
        high_res: SAM2 only: the stride-4 and stride-8 features already projected by ``conv_s0``/``conv_s1``
            (``B×C/8×4h×4w`` and ``B×C/4×2h×2w``); empty for SAM.
    """

    embedding: torch.Tensor
    high_res: list[torch.Tensor] = field(default_factory=list)


def mask_decoder_of(sam: nn.Module) -> nn.Module:
    """The mask decoder module (``mask_decoder`` in SAM, ``sam_mask_decoder`` in SAM2)."""
    return sam.sam_mask_decoder if hasattr(sam, "sam_mask_decoder") else sam.mask_decoder


def prompt_encoder_of(sam: nn.Module) -> nn.Module:
    """The prompt encoder module (``prompt_encoder`` in SAM, ``sam_prompt_encoder`` in SAM2)."""
    return sam.sam_prompt_encoder if hasattr(sam, "sam_prompt_encoder") else sam.prompt_encoder


def encode_image(sam: nn.Module, image: torch.Tensor) -> ImageFeatures:
    """Run the image encoder on a normalised ``B×3×S×S`` batch (S = the backbone's input size)."""
    if not hasattr(sam, "forward_image"):
        return ImageFeatures(embedding=sam.image_encoder(image))
    backbone_out = sam.forward_image(image)
    _, vision_feats, _, feat_sizes = sam._prepare_backbone_features(backbone_out)
    if sam.directly_add_no_mem_embed:
        # a single image is a first frame with no memory: SAM2 adds its learned "no memory" embedding
        vision_feats[-1] = vision_feats[-1] + sam.no_mem_embed
    batch = image.shape[0]
    maps = [f.permute(1, 2, 0).reshape(batch, -1, *size) for f, size in zip(vision_feats, feat_sizes)]
    return ImageFeatures(embedding=maps[-1], high_res=maps[:-1] if sam.use_high_res_features_in_sam else [])


def encoder_family(sam: nn.Module) -> str:
    """The image encoder's architecture family, which fixes its module names: ``"sam_vit"`` (SAM ViT-B/L/H),
    ``"tiny_vit"`` (LiteMedSAM) or ``"hiera"`` (SAM2)."""
    encoder = sam.image_encoder
    if hasattr(encoder, "trunk"):
        return "hiera"
    return "tiny_vit" if hasattr(encoder, "layers") else "sam_vit"


def prompt_free_embeddings(sam: nn.Module, features: ImageFeatures) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse (``B×0×C``) and dense (``B×C×h×w``) prompt embeddings meaning "no prompt".

    These are what the prompt encoder itself returns when called with no points, boxes or masks, but with the
    batch size of ``features`` (the official prompt encoders assume batch 1 in that case).
    """
    prompt_encoder = prompt_encoder_of(sam)
    emb = features.embedding
    sparse = emb.new_zeros((emb.shape[0], 0, emb.shape[1]))
    dense = prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(emb.shape[0], -1, *emb.shape[-2:])
    return sparse, dense


def prompt_embeddings(
    sam: nn.Module,
    features: ImageFeatures,
    boxes: torch.Tensor | None = None,
    point_coords: torch.Tensor | None = None,
    point_labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse and dense prompt embeddings for one box and/or one point set per image.

    Args:
        boxes: ``B×4`` (x0, y0, x1, y1) in backbone-input pixels (x = column).
        point_coords: ``B×N×2`` (x, y) in backbone-input pixels.
        point_labels: ``B×N``: 1 positive, 0 negative, -1 padding.

    Returns:
        sparse ``B×T×C`` and dense ``B×C×h×w`` embeddings; without any prompt, :func:`prompt_free_embeddings`.
    """
    if boxes is None and point_coords is None:
        return prompt_free_embeddings(sam, features)
    if (point_coords is None) != (point_labels is None):
        raise ValueError("point_coords and point_labels must be given together")
    points = None if point_coords is None else (point_coords.float(), point_labels.int())
    sparse, dense = prompt_encoder_of(sam)(points=points, boxes=None if boxes is None else boxes.float(), masks=None)
    return sparse, dense


def decode_masks(
    sam: nn.Module,
    features: ImageFeatures,
    sparse: torch.Tensor,
    dense: torch.Tensor,
    multimask_output: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the mask decoder with one prompt set per image.

    Args:
        sam: the backbone model.
        features: output of :func:`encode_image` for B images.
        sparse: ``B×N×C`` sparse prompt tokens (N may be 0).
        dense: ``B×C×h×w`` dense prompt embedding.
        multimask_output: return SAM's three ambiguity masks instead of one.

    Returns:
        low-resolution mask logits ``B×M×4h×4w`` (M = 1 or 3) and predicted IoU ``B×M``.
    """
    decoder = mask_decoder_of(sam)
    image_pe = prompt_encoder_of(sam).get_dense_pe()
    if hasattr(sam, "sam_mask_decoder"):
        masks, iou, _, _ = decoder(
            image_embeddings=features.embedding,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            repeat_image=False,
            high_res_features=features.high_res or None,
        )
        return masks, iou
    # segment_anything repeats the image embedding once per prompt set; decode image by image so that each image
    # is paired with its own prompts (a batched call would pair every image with every prompt set).
    outputs = [
        decoder(
            image_embeddings=features.embedding[i : i + 1],
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse[i : i + 1],
            dense_prompt_embeddings=dense[i : i + 1],
            multimask_output=multimask_output,
        )
        for i in range(features.embedding.shape[0])
    ]
    return torch.cat([m for m, _ in outputs]), torch.cat([q for _, q in outputs])
