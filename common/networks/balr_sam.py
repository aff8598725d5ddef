"""BALR-SAM network: boundary-aware low-rank adaptation of SAM, prompt-free, binary or multi-class.

BALR-SAM (Liu et al., arXiv 2509.24204) has no published code; its abstract fixes three parts, and every detail
below is this project's design (``docs/README.md`` of the bundle lists and justifies each choice):

1. a Complementary Detail Enhancement Network beside the frozen encoder (:mod:`.detail_enhancement`);
2. low-rank bottleneck adapters in every encoder block, after self-attention and on the MLP residual branch
   (:class:`common.adapters.BottleneckAdapterLinear` through the shared adapter mechanism);
3. low-rank tensor attention in the mask decoder (:mod:`.low_rank_attention`).
"""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

from common.adapters import BottleneckConfig, configure_trainable, inject_adapters
from common.backbones import DEFAULT_CHECKPOINT
from common.backbones.forward import (
    ImageFeatures,
    encoder_family,
    mask_decoder_of,
    prompt_encoder_of,
    run_decoder_transformer,
)
from common.backbones.module_names import ENCODER_FAMILIES, decoder_name, encoder_layers, in_network

from .detail_enhancement import DetailEnhancementNet
from .low_rank_attention import replace_decoder_attention
from .sam_segmentation_net import SamSegmentationNet, class_head_output_rule

__all__ = ["BALR_ADAPTER_TARGETS", "BalrSamNet"]

logger = logging.getLogger(__name__)

#: per encoder family: each block's attention output projection (adapter after MHSA) and the MLP's last linear
#: (adapter on the MLP residual branch)
BALR_ADAPTER_TARGETS = {family: [encoder_layers(family, "attn_out", "mlp_out")] for family in ENCODER_FAMILIES}


class BalrSamNet(SamSegmentationNet):
    """BALR-SAM for MONAI: prompt-free segmentation with a frozen SAM encoder, block adapters, CDEN and a
    low-rank-attention decoder.

    Decoding is prompt-free with learned class tokens: T tokens (T = 1 for a binary task, else K+1 with token 0 =
    background) start as the pretrained single-mask token plus Gaussian noise, run through the decoder's two-way
    transformer with the pretrained IoU token and the "no mask" dense embedding (no sparse prompt), and share the
    first hypernetwork MLP; the IoU head is unused. ``forward`` returns logits ``B×T×H×W``: one sigmoid channel
    for binary tasks, K+1 softmax channels otherwise, so MONAI's ``DiceCELoss`` and ``AsDiscreted`` apply directly.

    Trainable: the bottleneck adapters, CDEN, the class tokens and the mask decoder (two-way transformer with its
    low-rank attention, up-sampling, first hypernetwork MLP, IoU token; SAM2's ``conv_s0``/``conv_s1``). Frozen:
    the image encoder and the prompt encoder.

    Args:
        backbone, checkpoint, input_size: see ``SamSegmentationNet`` (paper's numbers imply SAM ViT-H at 1024).
        num_classes: K foreground classes.
        adapter_rank: bottleneck width of the block adapters (48 lands ViT-H near the paper's 11.7M / 1.8%).
        attention_rank: per-head rank of the decoder's tensor attention (default: head width / 4 per layer).
        share_key_value: one key/value factor per head in the tensor attention (see ``LowRankTensorAttention``).
        use_adapters, use_cden, use_tensor_attention: ablation switches for the three parts.
        token_init_noise: class tokens start as the mask token plus Gaussian noise of this many times its
            standard deviation (distinct tokens give distinct masks from the first step).
    """

    def __init__(
        self,
        backbone: str | nn.Module = "sam_vit_h",
        checkpoint: str | os.PathLike | None = DEFAULT_CHECKPOINT,
        num_classes: int = 1,
        adapter_rank: int = 48,
        attention_rank: int | None = None,
        share_key_value: bool = True,
        use_adapters: bool = True,
        use_cden: bool = True,
        use_tensor_attention: bool = True,
        input_size: int | None = None,
        token_init_noise: float = 1.0,
    ) -> None:
        super().__init__(backbone, checkpoint=checkpoint, input_size=input_size, num_outputs=1)
        for name, flag in (
            ("use_adapters", use_adapters),
            ("use_cden", use_cden),
            ("use_tensor_attention", use_tensor_attention),
            ("share_key_value", share_key_value),
        ):
            if not isinstance(flag, bool):
                # `--use_cden false` on the monai.bundle command line arrives as the (truthy) string 'false'
                raise TypeError(f"{name} must be True or False, got {flag!r} (on the command line write True/False)")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.family = encoder_family(self.sam)
        decoder = mask_decoder_of(self.sam)
        self.decoder_prefix = in_network(decoder_name(self.sam))
        self.adapted_layers = (
            inject_adapters(
                self.sam, BottleneckConfig(rank=adapter_rank, target_modules=BALR_ADAPTER_TARGETS[self.family])
            )
            if use_adapters
            else []
        )
        self.tensor_attention_layers = (
            replace_decoder_attention(decoder, rank=attention_rank, share_key_value=share_key_value)
            if use_tensor_attention
            else []
        )
        width = decoder.transformer_dim
        self.cden: DetailEnhancementNet | None = None
        if use_cden:
            grid = prompt_encoder_of(self.sam).image_embedding_size[0]
            self.cden = DetailEnhancementNet(width, DetailEnhancementNet.stride_for(self.input_size, grid))
        num_tokens = 1 if num_classes == 1 else num_classes + 1
        token = decoder.mask_tokens.weight[:1].detach()
        tokens = token.repeat(num_tokens, 1)
        if num_tokens > 1:
            tokens = tokens + token_init_noise * token.std() * torch.randn_like(tokens)
        self.class_tokens = nn.Parameter(tokens)
        p = self.decoder_prefix
        groups = {
            "class_tokens": ["class_tokens"],
            "mask_decoder": [
                rf"{p}\.(transformer|output_upscaling|iou_token|conv_s0|conv_s1)",
                rf"{p}\.output_hypernetworks_mlps\.0",
            ],
        }
        if use_cden:
            groups["cden"] = ["cden"]
        self.parameter_report = configure_trainable(self, groups)
        logger.info("BALR-SAM on %s: %s", self.spec.name, self.parameter_report)

    @property
    def output_rule(self) -> str:
        """``"softmax"`` over K+1 logits (channel 0 background) for K > 1 classes, else one sigmoid."""
        return class_head_output_rule(self.num_classes)

    @property
    def num_tokens(self) -> int:
        return self.class_tokens.shape[0]

    def encode(self, image: torch.Tensor) -> ImageFeatures:
        """Frozen encoder (with its adapters) plus CDEN: the detail map is added to the embedding and the two finer
        levels are carried as high-resolution skips (summed with SAM2's own where the backbone has them)."""
        features = super().encode(image)
        if self.cden is None:
            return features
        detail = self.cden(image)
        skips = detail.skips
        if features.high_res:
            skips = [ours + own for ours, own in zip(skips, features.high_res)]
        return ImageFeatures(embedding=features.embedding + detail.embedding, high_res=skips)

    def decode(
        self, features: ImageFeatures, sparse: torch.Tensor, dense: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class-token logits ``B×T×h×w`` (low resolution) and an empty ``B×0`` IoU tensor (no IoU head)."""
        if sparse.shape[1]:
            raise ValueError("BALR-SAM is prompt-free: boxes and points are not accepted")
        decoder = mask_decoder_of(self.sam)
        batch = features.embedding.shape[0]
        tokens = torch.cat([decoder.iou_token.weight, self.class_tokens], dim=0).unsqueeze(0).expand(batch, -1, -1)
        pe = prompt_encoder_of(self.sam).get_dense_pe()
        hidden, upscaled = run_decoder_transformer(decoder, features.embedding, pe, dense, tokens, features.high_res)
        hyper = decoder.output_hypernetworks_mlps[0](hidden[:, 1 : 1 + self.num_tokens])  # one MLP for all tokens
        b, c, h, w = upscaled.shape
        masks = (hyper @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
        return masks, masks.new_zeros((batch, 0))
