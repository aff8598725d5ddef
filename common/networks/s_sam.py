"""S-SAM network: singular-value-tuned SAM prompted by class names, one decoder pass per class."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from common.adapters import SvdConfig, auxiliary_loss, configure_trainable, inject_adapters
from common.backbones import DEFAULT_CHECKPOINT
from common.backbones.forward import (
    ImageFeatures,
    encoder_family,
    mask_decoder_of,
    prompt_encoder_of,
    run_decoder_transformer,
)
from common.backbones.module_names import ENCODER_FAMILIES, decoder_name, encoder_layers, encoder_neck, in_network
from common.text_encoders import TextEncoder, build_text_encoder

from .logit_calibration import LogitCalibration
from .sam_segmentation_net import SamSegmentationNet
from .text_affine import TextAffineLayer

__all__ = ["SSamNet", "S_SAM_SVD_TARGETS", "s_sam_trainable_groups"]

logger = logging.getLogger(__name__)

#: linear layers of every encoder block and the neck convolutions, per backbone family (module names in the model)
S_SAM_SVD_TARGETS = {
    family: [encoder_layers(family, "qkv", "attn_out", "mlp_in", "mlp_out"), encoder_neck(family)]
    for family in ENCODER_FAMILIES
}


def s_sam_trainable_groups(sam: nn.Module, prefix: str = "sam") -> dict[str, list[str]]:
    """The parameters S-SAM trains besides the SVD scales and shifts, as ``configure_trainable`` groups: the encoder
    blocks' LayerNorms, the mask decoder transformer's LayerNorms, and the absolute position embedding (ViT, Hiera;
    TinyViT has none)."""
    family = encoder_family(sam)
    decoder = decoder_name(sam)
    groups = {
        "decoder_layernorms": [
            in_network(rf"{decoder}\.transformer\.(layers\.\d+\.norm[1-4]|norm_final_attn)", prefix)
        ],
        "encoder_layernorms": [in_network(encoder_layers(family, "norms"), prefix)],
    }
    # the absolute position embedding (ViT, Hiera; TinyViT has none)
    if family == "sam_vit":
        groups["pos_embed"] = [in_network(r"image_encoder\.pos_embed", prefix)]
    elif family == "hiera":
        groups["pos_embed"] = [in_network(r"image_encoder\.trunk\.pos_embed(_window)?", prefix)]
    return groups


class SSamNet(SamSegmentationNet):
    """S-SAM (Paranjape et al., 2024) for MONAI: SAM with singular-value tuning, prompted by label names.

    Each class name is embedded once by a frozen text encoder; the Text Affine Layer maps it to one sparse prompt
    token; the mask decoder runs once per class on the same image embedding (batched as B·K decoder calls) and its
    single-mask output gives that class's logits. ``forward`` returns ``B×K×H×W`` logits (independent sigmoids per
    class; the bundles turn them into a label map with a 0.5 background threshold).

    Trainable (everything else frozen, prompt encoder included): the SVD ``scale``/``shift`` of every encoder
    block's attention and MLP linears and of the neck convolutions, the encoder blocks' LayerNorms, the decoder
    transformer's LayerNorms, the position embedding (built for ``input_size``), the Text Affine Layer, and (not
    in the paper) one logit offset per class (:class:`LogitCalibration`).

    Args:
        backbone, checkpoint, input_size: see ``SamSegmentationNet`` (paper: SAM ViT-B at 256).
        label_names: ``{"1": "liver", "2": "tumor"}`` (label value → name; channel order = sorted values) or a list of
            names in channel order.
        text_encoder: a :class:`common.text_encoders.TextEncoder` or a name for ``build_text_encoder``.
        text_encoder_weights: weights path for named encoders that need one (CLIP, precomputed).
        use_dense_prompt: add SAM's "no mask" dense embedding to the image embedding (the reference adds nothing).
        use_image_pe: give the decoder's two-way transformer the image positional encoding (the reference passes
            none when prompting with text only; without it the keys carry no position).
        svd_targets: module-name patterns to adapt (default :data:`S_SAM_SVD_TARGETS` for the backbone family).
        regularization_weight: weight of ``‖1 − scale‖₁ + ‖shift‖₁`` per layer (reference: 0).
        logit_prior: start training with each class's mean logit at ``logit(logit_prior)`` through a learnable
            per-class offset (:class:`LogitCalibration`); the decoder answers a text token with logits near −22,
            where the sigmoid is flat and training stalls. ``None``: no offset (the reference).
    """

    def __init__(
        self,
        backbone: str | nn.Module = "sam_vit_b",
        checkpoint: str | os.PathLike | None = DEFAULT_CHECKPOINT,
        label_names: Mapping[str, str] | Sequence[str] = ("foreground",),
        text_encoder: TextEncoder | str = "all-minilm-l6-v2",
        text_encoder_weights: str | os.PathLike | None = None,
        input_size: int | None = 256,
        use_dense_prompt: bool = False,
        use_image_pe: bool = False,
        svd_targets: Sequence[str] | None = None,
        regularization_weight: float = 0.0,
        logit_prior: float | None = 0.01,
    ) -> None:
        super().__init__(backbone, checkpoint=checkpoint, input_size=input_size, num_outputs=1)
        for flag, value in (("use_dense_prompt", use_dense_prompt), ("use_image_pe", use_image_pe)):
            if not isinstance(value, bool):
                raise TypeError(f"{flag} must be True or False, got {value!r}")
        self.use_dense_prompt = use_dense_prompt
        self.use_image_pe = use_image_pe
        self.label_names = _names_in_channel_order(label_names)
        if not isinstance(text_encoder, TextEncoder):
            text_encoder = build_text_encoder(text_encoder, text_encoder_weights)
        self.text_encoder_description = text_encoder.description
        # embedded once; the text encoder itself is not kept (frozen, not trained, not saved), its output is
        decoder = mask_decoder_of(self.sam)
        self.text_affine = TextAffineLayer(text_encoder.embed(self.label_names), decoder.transformer_dim)

        self.family = encoder_family(self.sam)
        self.adapted_layers = inject_adapters(
            self.sam,
            SvdConfig(
                target_modules=list(svd_targets or S_SAM_SVD_TARGETS[self.family]),
                regularization_weight=regularization_weight,
            ),
        )
        self.logit_calibration = LogitCalibration(self.num_classes, logit_prior) if logit_prior is not None else None
        groups = s_sam_trainable_groups(self.sam)
        groups["text_affine"] = ["text_affine"]
        if self.logit_calibration is not None:
            groups["logit_calibration"] = ["logit_calibration"]
        self.parameter_report = configure_trainable(self, groups)
        logger.info(
            "S-SAM: %d SVD-tuned layers, %s; labels %s embedded by %s",
            len(self.adapted_layers),
            self.parameter_report,
            self.label_names,
            self.text_encoder_description,
        )

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def auxiliary_loss(self) -> torch.Tensor | None:
        """The SVD regulariser summed over layers (``None`` at weight 0)."""
        return auxiliary_loss(self)

    def prompt_tokens(self) -> torch.Tensor:
        """One decoder prompt token per class: ``K×C``."""
        return self.text_affine()

    def decode_classes(self, features: ImageFeatures) -> torch.Tensor:
        """Mask logits ``B×K×4h×4w``: the decoder once per class on the shared image embedding."""
        decoder = mask_decoder_of(self.sam)
        prompt_encoder = prompt_encoder_of(self.sam)
        emb = features.embedding
        batch, k = emb.shape[0], self.num_classes
        text = self.prompt_tokens()  # K×C
        # rows ordered image-major: row b·K + k is image b with class k
        emb_rows = emb.repeat_interleave(k, dim=0)
        skips = [f.repeat_interleave(k, dim=0) for f in features.high_res]
        output_tokens = [decoder.iou_token.weight, decoder.mask_tokens.weight]
        first_mask = 1
        if getattr(decoder, "pred_obj_scores", False):
            output_tokens.insert(0, decoder.obj_score_token.weight)  # SAM2's token order
            first_mask = 2
        tokens = torch.cat(output_tokens, dim=0).unsqueeze(0).expand(batch * k, -1, -1)
        tokens = torch.cat([tokens, text.repeat(batch, 1).unsqueeze(1)], dim=1)
        if self.use_dense_prompt:
            dense = prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand_as(emb_rows)
        else:
            dense = torch.zeros_like(emb_rows[:1])
        pe = prompt_encoder.get_dense_pe()
        if not self.use_image_pe:
            pe = torch.zeros_like(pe)
        hidden, upscaled = run_decoder_transformer(decoder, emb_rows, pe, dense, tokens, skips)
        hyper = decoder.output_hypernetworks_mlps[0](hidden[:, first_mask])  # SAM's single-mask token
        masks = (hyper.unsqueeze(1) @ upscaled.flatten(2)).view(batch, k, *upscaled.shape[-2:])
        return masks

    def forward_with_iou(
        self,
        image: torch.Tensor,
        boxes: torch.Tensor | None = None,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``B×K×H×W`` for ``B×C×H×W`` images, and an empty ``B×0`` IoU tensor (the IoU head is unused)."""
        if boxes is not None or point_coords is not None:
            raise ValueError("S-SAM is prompted by label names only")
        height, width = image.shape[-2:]
        masks = self.decode_classes(self.encode(self.preprocess(image)))
        if self.logit_calibration is not None:
            masks = self.logit_calibration(masks)
        return self.postprocess(masks, height, width), masks.new_zeros((image.shape[0], 0))


def _names_in_channel_order(label_names: Mapping[str, str] | Sequence[str]) -> list[str]:
    if isinstance(label_names, Mapping):
        values = sorted(int(v) for v in label_names)
        if values != list(range(1, len(values) + 1)):
            raise ValueError(f"label values must be 1..K, got {values}")
        names = [label_names[str(v)] if str(v) in label_names else label_names[v] for v in values]
    else:
        names = list(label_names)
    if not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise ValueError(f"label_names must give a non-empty name per class, got {label_names!r}")
    return names
