"""Conv-LoRA network: Conv-LoRA in the image encoder, a trainable prompt-free mask decoder, binary or multi-class."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from common.adapters import ConvLoraConfig, auxiliary_loss, configure_trainable, inject_adapters
from common.backbones import DEFAULT_CHECKPOINT
from common.backbones.forward import (
    ImageFeatures,
    mask_decoder_of,
    prompt_encoder_of,
    prompt_free_embeddings,
    run_decoder_transformer,
)
from common.backbones.module_names import ENCODER_FAMILIES, decoder_name, encoder_layers, in_network

from .sam_segmentation_net import SamSegmentationNet, class_head_output_rule

__all__ = ["ConvLoraSamNet", "CONV_LORA_TARGETS"]

#: the fused qkv of every image-encoder block (SAM ViT, LiteMedSAM's TinyViT and SAM2's Hiera all name it so)
CONV_LORA_TARGETS = [encoder_layers(family, "qkv") for family in ENCODER_FAMILIES]


class ConvLoraSamNet(SamSegmentationNet):
    """Conv-LoRA SAM (Zhong et al., ICLR 2024) for MONAI, prompt-free.

    * Binary (``num_classes=1``): the decoder's first mask token gives one mask; ``forward`` returns logits
      ``B×1×H×W``.
    * Multi-class (``num_classes=K > 1``): ``num_queries`` mask tokens (copies of the pretrained mask token 0) share
      the first hypernetwork MLP; a class head ``Linear(C → K+1)`` (last = "no object") scores each token. Training
      matches tokens to ground-truth class masks (``common.losses.MaskClassificationLoss``, which reads
      ``last_class_logits`` and ``last_mask_logits``); ``forward`` returns ``B×(K+1)×H×W`` softmax logits (the
      output convention of every multi-class head here): their softmax is the semantic scores
      ``Σ_q softmax(class_q)[:K] · sigmoid(mask_q)`` with channel 0 = 1 − max over classes ("background"), made to
      sum to one, so ``AsDiscreted(argmax=True)`` yields the label map and a softmax the probabilities.

    Trainable: every Conv-LoRA parameter, the whole mask decoder except the IoU head (and the class head and query
    tokens in the multi-class case); the prompt encoder and the image encoder stay frozen.

    Args:
        backbone, checkpoint, input_size: see ``SamSegmentationNet`` (paper: SAM ViT-H at 1024).
        num_classes: K foreground classes.
        num_queries: mask tokens in the multi-class decoder (default 10).
        lora_rank, lora_alpha: Conv-LoRA rank and alpha (paper: 3, 32).
        expert_scales: resize factors of the experts (paper: 1..8).
        scale_by_gate: scale the chosen expert by its gate probability (False = reference behaviour).
        balance_weight: weight of each layer's balance loss (paper: 0.01).
        lora_targets: module-name patterns relative to the backbone (default: every encoder ``attn.qkv``).
        query_init_noise: the multi-class queries start as the pretrained mask token plus Gaussian noise of this
            many times the token's standard deviation (0 = identical copies, which learn more slowly: identical
            queries give identical predictions, so matching cannot tell them apart at the start).
    """

    def __init__(
        self,
        backbone: str | nn.Module = "sam_vit_h",
        checkpoint: str | os.PathLike | None = DEFAULT_CHECKPOINT,
        num_classes: int = 1,
        num_queries: int = 10,
        lora_rank: int = 3,
        lora_alpha: float = 32.0,
        expert_scales: Sequence[float] = (1, 2, 3, 4, 5, 6, 7, 8),
        scale_by_gate: bool = False,
        balance_weight: float = 0.01,
        lora_targets: Sequence[str] | None = None,
        input_size: int | None = None,
        query_init_noise: float = 1.0,
    ) -> None:
        super().__init__(backbone, checkpoint=checkpoint, input_size=input_size, num_outputs=1)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.adapted_layers = inject_adapters(
            self.sam,
            ConvLoraConfig(
                rank=lora_rank,
                alpha=lora_alpha,
                expert_scales=tuple(expert_scales),
                scale_by_gate=scale_by_gate,
                balance_weight=balance_weight,
                target_modules=list(lora_targets or CONV_LORA_TARGETS),
            ),
        )
        decoder = mask_decoder_of(self.sam)
        self.decoder_prefix = in_network(decoder_name(self.sam))
        p = self.decoder_prefix
        # the decoder parts that shape the mask (SAM2's conv_s0/conv_s1/obj_score_token where present); not the IoU
        # head, nor the three multimask hypernetworks this prompt-free single-mask decoder never uses
        extra = {
            "mask_decoder": [
                rf"{p}\.(transformer|output_upscaling|mask_tokens|iou_token|obj_score_token|conv_s0|conv_s1)",
                rf"{p}\.output_hypernetworks_mlps\.0",
            ]
        }
        if num_classes > 1:
            width = decoder.transformer_dim
            # queries start near the pretrained single-mask token (each begins close to SAM's own mask query), made
            # distinct by noise so that they can specialise from the first step
            token = decoder.mask_tokens.weight[:1].detach()
            queries = token.repeat(num_queries, 1)
            queries = queries + query_init_noise * token.std() * torch.randn_like(queries)
            self.query_tokens = nn.Parameter(queries)
            self.class_head = nn.Linear(width, num_classes + 1)
            extra["multiclass_head"] = ["query_tokens", "class_head"]
        self.parameter_report = configure_trainable(self, extra)
        self.last_class_logits: torch.Tensor | None = None
        self.last_mask_logits: torch.Tensor | None = None

    @property
    def output_rule(self) -> str:
        """``"softmax"`` over K+1 logits (channel 0 background) for K > 1 classes, else one sigmoid."""
        return class_head_output_rule(self.num_classes)

    def auxiliary_loss(self) -> torch.Tensor:
        """Sum of the Conv-LoRA balance losses of the last forward (what the training loss adds)."""
        return auxiliary_loss(self)

    def forward(
        self,
        image: torch.Tensor,
        boxes: torch.Tensor | None = None,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """As :meth:`SamSegmentationNet.forward`; in training the output also carries a zero-weighted balance loss.

        The gates learn only through the balance loss, which the training loss reads from the layers rather than
        from this output. ``DistributedDataParallel(find_unused_parameters=True)`` would mark them unused when the
        forward ends and then fail when their gradient arrives; the zero term puts them in the output's graph
        without changing any value or gradient.
        """
        output = super().forward(image, boxes, point_coords, point_labels)
        if self.training and torch.is_grad_enabled():
            output = output + 0.0 * self.auxiliary_loss().to(output)
        return output

    def _query_decode(
        self, features: ImageFeatures, sparse: torch.Tensor, dense: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask logits ``B×N×h×w`` and class logits ``B×N×(K+1)`` of the N query tokens."""
        decoder = mask_decoder_of(self.sam)
        batch = features.embedding.shape[0]
        tokens = torch.cat([decoder.iou_token.weight, self.query_tokens], dim=0).unsqueeze(0).expand(batch, -1, -1)
        tokens = torch.cat([tokens, sparse], dim=1)
        pe = prompt_encoder_of(self.sam).get_dense_pe()
        # SAM2's stride-4/8 features join the up-sampling path, as in its own decoder
        hidden, upscaled = run_decoder_transformer(decoder, features.embedding, pe, dense, tokens, features.high_res)
        queries = hidden[:, 1 : 1 + self.query_tokens.shape[0]]
        b = upscaled.shape[0]
        hyper = decoder.output_hypernetworks_mlps[0](queries)  # one MLP shared by all queries
        masks = (hyper @ upscaled.flatten(2)).view(b, -1, *upscaled.shape[-2:])
        return masks, self.class_head(queries)

    def forward_with_iou(
        self,
        image: torch.Tensor,
        boxes: torch.Tensor | None = None,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Binary: logits ``B×1×H×W`` and IoU ``B×1``. Multi-class: softmax logits ``B×(K+1)×H×W`` (see the class
        docstring) and an empty ``B×0`` IoU tensor."""
        if self.num_classes == 1:
            return super().forward_with_iou(image, boxes, point_coords, point_labels)
        if boxes is not None or point_coords is not None:
            raise ValueError("the multi-class Conv-LoRA decoder is prompt-free")
        height, width = image.shape[-2:]
        features = self.encode(self.preprocess(image))
        masks, classes = self._query_decode(features, *prompt_free_embeddings(self.sam, features))
        # kept in float32 whatever precision the decoder ran in: the matching loss reads them (a bfloat16 autocast
        # would otherwise hand it bfloat16 logits outside the float32 loss)
        self.last_mask_logits = masks.float()
        self.last_class_logits = classes.float()
        semantic = torch.einsum("bqk,bqhw->bkhw", classes.softmax(-1)[..., :-1], masks.sigmoid())
        semantic = self.postprocess(semantic, height, width).clamp(0, 1)
        background = 1 - semantic.amax(dim=1, keepdim=True)
        scores = torch.cat([background, semantic], dim=1)
        # log-scores: a softmax of them gives the scores normalised to sum to one (the argmax is the scores'), so this
        # head answers in the same convention as BALR-SAM's K+1 logits and output_rule "softmax" reads it truthfully
        logits = scores.clamp_min(torch.finfo(scores.dtype).tiny).log()
        # no IoU head in the multi-class decoder: the IoU slot of the interface stays empty
        return logits, classes.new_zeros((image.shape[0], 0))
