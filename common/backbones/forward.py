"""One calling convention for the image encoder and mask decoder of every backbone family.

SAM (and LiteMedSAM) and SAM2 expose the same parts with different signatures: SAM2's encoder returns an FPN and
its decoder takes high-resolution skip features; SAM's decoder repeats the image embedding once per prompt, so a
batch of B images with one prompt set each has to be decoded image by image. Networks call :func:`encode_image`
and :func:`decode_masks` and never touch those differences.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .module_names import decoder_name, encoder_family

__all__ = [
    "ImageFeatures",
    "decode_masks",
    "decode_with_skips",
    "encode_image",
    "encoder_family",
    "mask_decoder_of",
    "prompt_embeddings",
    "prompt_encoder_of",
    "prompt_free_embeddings",
    "run_decoder_transformer",
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
    return getattr(sam, decoder_name(sam))


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
    # segment_anything's own forward repeats the image embedding once per prompt set (B images × B prompt sets);
    # the same computation with each image paired with its own prompts, in one batched pass:
    return decode_with_skips(decoder, features.embedding, image_pe, sparse, dense, [], multimask_output)


def decode_with_skips(
    decoder: nn.Module,
    image_embedding: torch.Tensor,
    image_pe: torch.Tensor,
    sparse: torch.Tensor,
    dense: torch.Tensor,
    skips: list[torch.Tensor],
    multimask_output: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's (v1) mask prediction with high-resolution skips added in the up-sampling path, batched.

    Same computation as ``segment_anything.modeling.MaskDecoder.predict_masks`` (output tokens + prompt tokens →
    two-way transformer → up-sampling → hypernetwork masks, IoU head), except that ``skips[1]`` is added after the
    first transposed convolution and ``skips[0]`` after the second, as SAM2 does, and that each image is paired
    with its own prompts (``image_embedding``, ``sparse`` and ``dense`` share the batch size B).

    Returns:
        mask logits ``B×M×4h×4w`` and IoU predictions ``B×M`` (M = 1, or 3 with ``multimask_output``).
    """
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat([output_tokens.unsqueeze(0).expand(image_embedding.shape[0], -1, -1), sparse], dim=1)
    hidden, upscaled = run_decoder_transformer(decoder, image_embedding, image_pe, dense, tokens, skips)
    iou_token_out = hidden[:, 0, :]
    mask_tokens_out = hidden[:, 1 : 1 + decoder.num_mask_tokens, :]
    hyper = torch.stack(
        [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1
    )
    b, c, h, w = upscaled.shape
    masks = (hyper @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
    iou = decoder.iou_prediction_head(iou_token_out)
    selected = slice(1, None) if multimask_output else slice(0, 1)
    return masks[:, selected], iou[:, selected]


def run_decoder_transformer(
    decoder: nn.Module,
    image_embedding: torch.Tensor,
    image_pe: torch.Tensor,
    dense: torch.Tensor,
    tokens: torch.Tensor,
    skips: list[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The body of a SAM / SAM2 mask decoder, batched with one token set per image: the two-way transformer on
    ``image_embedding + dense`` and ``tokens`` (``B×T×C``), then the up-sampling, with ``skips[1]`` added after the
    first transposed convolution and ``skips[0]`` after the second when given (SAM2's high-resolution path).

    Returns:
        the transformed tokens ``B×T×C`` and the up-sampled image features ``B×C/8×4h×4w``.
    """
    src = image_embedding + dense
    pos = image_pe.expand(image_embedding.shape[0], -1, -1, -1)
    b, c, h, w = src.shape
    hidden, src = decoder.transformer(src, pos, tokens)
    src = src.transpose(1, 2).reshape(b, c, h, w)
    if not skips:
        return hidden, decoder.output_upscaling(src)
    deconv1, norm1, act1, deconv2, act2 = decoder.output_upscaling
    upscaled = act1(norm1(deconv1(src) + _match(skips[1], h * 2, w * 2)))
    return hidden, act2(deconv2(upscaled) + _match(skips[0], h * 4, w * 4))


def _match(feature: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bring a skip feature to the decoder's grid (identity when the strides line up, as for LiteMedSAM)."""
    if feature.shape[-2:] == (height, width):
        return feature
    return F.interpolate(feature, size=(height, width), mode="bilinear", align_corners=False)
