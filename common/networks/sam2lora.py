"""SAM2LoRA network: LoRA on the image encoder's attention and the mask decoder's attention projections of SAM 2.1
(or LiteMedSAM), multi-scale skips in the decoder, automatic or point/box prompted."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from common.adapters import LoraConfig, configure_trainable, inject_adapters
from common.backbones import DEFAULT_CHECKPOINT
from common.backbones.forward import ImageFeatures, decode_with_skips, mask_decoder_of, prompt_encoder_of
from common.backbones.module_names import (
    DECODER_ATTENTION_PROJECTIONS,
    ENCODER_FAMILIES,
    encoder_family,
    encoder_layers,
)

from .encoder_skip_fusion import SKIP_TAPS, EncoderSkipFusion
from .sam_segmentation_net import SamSegmentationNet

__all__ = ["Sam2LoraNet", "SAM2LORA_TARGETS"]

# The paper's placement, per backbone family (module names relative to the backbone, i.e. without "sam.").
# Every encoder block's fused qkv + q/k/v/out of the two-way transformer's 7 attentions (28 Linears); the paper's
# Hiera, and the same on SAM-style backbones (SAM ViT blocks, LiteMedSAM's TinyViT blocks).
SAM2LORA_TARGETS: dict[str, list[str]] = {
    family: [
        encoder_layers(family, "qkv"),
        rf"{'sam_mask_decoder' if family == 'hiera' else 'mask_decoder'}\.{DECODER_ATTENTION_PROJECTIONS}",
    ]
    for family in ENCODER_FAMILIES
}


class Sam2LoraNet(SamSegmentationNet):
    """SAM2LoRA (Mandal et al., 2025) as a MONAI-ready network.

    ``forward(image, boxes=None, point_coords=None, point_labels=None)`` (inherited) returns mask logits ``B×1×H×W``
    at the input resolution; without prompts it runs in automatic (prompt-free) mode, the bundle default. Prompts are
    in the image's own pixel coordinates, one box (``B×4``) and/or one point set (``B×N×2`` + ``B×N``) per image. The
    IoU head's predictions of the last forward are kept in ``last_iou_prediction`` (``B×1``) for the IoU-L1 term.

    Trainable: LoRA on ``lora_targets`` (default :data:`SAM2LORA_TARGETS`: every encoder ``attn.qkv`` and every
    decoder attention projection) and, for LiteMedSAM, the two zero-initialised skip projections of
    :class:`EncoderSkipFusion`. SAM2 already feeds its stride-4/8 features to the decoder (``conv_s0/conv_s1``,
    frozen, as in the paper).

    Args:
        backbone: ``sam2.1_hiera_t/s/b+/l``, ``litemedsam`` or a test variant.
        checkpoint: base weights (see ``common.backbones.build_backbone``); ``None`` = random.
        lora_rank, lora_alpha, lora_dropout: LoRA hyper-parameters (paper: 64, 128, 0.1).
        lora_targets: module-name patterns relative to the backbone (default: the paper's placement).
        multiscale_fusion: add encoder skips for backbones without SAM2's high-resolution path (default: on for
            LiteMedSAM; SAM2 has its own path; plain SAM ViT has no multi-scale stages to tap).
        input_size: backbone input size (default: native).
        num_classes: structures segmented at once (1 vessel; 2 optic disc and cup), one sigmoid output each (SAM's
            single-mask token for 1, its multimask tokens for 2 or 3; see ``SamSegmentationNet``'s ``num_outputs``).
        output_rule: ``"sigmoid_argmax"`` (separate structures, e.g. two hippocampus parts) or ``"sigmoid_sum"``
            (nested ones: optic disc ⊃ cup); ``common.data.sigmoid_rule(label_groups)`` picks it from the label
            groups.
    """

    def __init__(
        self,
        backbone: str | nn.Module = "sam2.1_hiera_l",
        checkpoint: str | os.PathLike | None = DEFAULT_CHECKPOINT,
        lora_rank: int = 64,
        lora_alpha: float = 128.0,
        lora_dropout: float = 0.1,
        lora_targets: Sequence[str] | None = None,
        multiscale_fusion: bool | None = None,
        input_size: int | None = None,
        num_classes: int = 1,
        output_rule: str = "sigmoid_argmax",
    ) -> None:
        super().__init__(backbone, checkpoint=checkpoint, input_size=input_size, num_outputs=num_classes)
        if output_rule not in ("sigmoid_argmax", "sigmoid_sum"):
            # its outputs are SAM's mask tokens, each its own sigmoid: a softmax over them would mean nothing
            raise ValueError(f"output_rule must be 'sigmoid_argmax' or 'sigmoid_sum', got {output_rule!r}")
        self.output_rule = output_rule
        targets = list(lora_targets) if lora_targets is not None else SAM2LORA_TARGETS[encoder_family(self.sam)]
        self.lora_targets = targets
        self.adapted_layers = inject_adapters(
            self.sam, LoraConfig(rank=lora_rank, alpha=lora_alpha, dropout=lora_dropout, target_modules=targets)
        )
        taps = SKIP_TAPS.get(self.spec.name.removesuffix("_test"))
        if multiscale_fusion is None:
            multiscale_fusion = taps is not None
        if multiscale_fusion and self.spec.family == "sam2":
            multiscale_fusion = False  # SAM2's decoder already receives its stride-4 and stride-8 features
        elif multiscale_fusion and taps is None:
            raise ValueError(
                f"no multi-scale encoder stages are known for {self.spec.name}; set multiscale_fusion=False"
            )
        decoder_dim = mask_decoder_of(self.sam).transformer_dim
        self.skip_fusion = (
            EncoderSkipFusion(self.sam, taps, decoder_dim, self.input_size) if multiscale_fusion else None
        )
        self.parameter_report = configure_trainable(
            self, {"skip_fusion": ["skip_fusion"]} if self.skip_fusion else None
        )

    def decode(
        self, features: ImageFeatures, sparse: torch.Tensor, dense: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-resolution logits and IoU for given prompt embeddings, with encoder skips when configured."""
        if self.skip_fusion is None:
            return super().decode(features, sparse, dense)
        masks, iou = decode_with_skips(
            mask_decoder_of(self.sam),
            features.embedding,
            prompt_encoder_of(self.sam).get_dense_pe(),
            sparse,
            dense,
            self.skip_fusion(),
            multimask_output=self.num_outputs > 1,
        )
        return masks[:, : self.num_outputs], iou[:, : self.num_outputs]
