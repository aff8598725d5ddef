"""High-resolution encoder skips into the mask decoder's up-sampling path, for backbones that lack SAM2's.

SAM2 feeds its stride-4 and stride-8 FPN features, projected by 1×1 convolutions (``conv_s0``, ``conv_s1``), into
the two transposed convolutions that up-sample the decoder output. LiteMedSAM's TinyViT has the same kind of
multi-scale stage outputs but its SAM-style decoder never sees them. :class:`EncoderSkipFusion` taps two encoder
stages with forward hooks, projects them to the decoder's widths with zero-initialised 1×1 convolutions (so the
network starts exactly as the pretrained one) and :func:`decode_with_skips` adds them where SAM2 does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SKIP_TAPS", "EncoderSkipFusion", "decode_with_skips", "run_decoder_transformer"]

# backbone name → ((module, channels, stride relative to the input), ...), finest first.
# LiteMedSAM (256² input): patch_embed keeps full resolution (64 ch); layers.0 ends at half resolution (128 ch).
SKIP_TAPS: dict[str, tuple[tuple[str, int, int], ...]] = {
    "litemedsam": (("image_encoder.patch_embed", 64, 1), ("image_encoder.layers.0", 128, 2)),
}


class EncoderSkipFusion(nn.Module):
    """Collect two encoder stage outputs during the encoder's forward and project them for the decoder.

    Args:
        sam: the backbone (hooks are registered on its modules).
        taps: ``((module name, channels, stride), (module name, channels, stride))``, finest first.
        decoder_dim: the mask decoder's transformer width C; the projections output C/8 (finest) and C/4.
        input_size: backbone input side, to lay token outputs (``B×L×C``) on their grid.
    """

    def __init__(self, sam: nn.Module, taps, decoder_dim: int, input_size: int) -> None:
        super().__init__()
        self.taps = tuple(taps)
        self.input_size = input_size
        self.proj_s0 = nn.Conv2d(self.taps[0][1], decoder_dim // 8, kernel_size=1)
        self.proj_s1 = nn.Conv2d(self.taps[1][1], decoder_dim // 4, kernel_size=1)
        for conv in (self.proj_s0, self.proj_s1):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
        self._captured: dict[int, torch.Tensor] = {}
        # hooks hold no reference to this module's parameters, only to the capture dict
        self._handles = [
            sam.get_submodule(name).register_forward_hook(self._capture_hook(i))
            for i, (name, _, _) in enumerate(self.taps)
        ]

    def _capture_hook(self, index: int):
        def hook(_module, _inputs, output):
            self._captured[index] = output

        return hook

    def _as_map(self, index: int) -> torch.Tensor:
        feature = self._captured.pop(index, None)
        if feature is None:
            raise RuntimeError("encoder skip features were not captured: run the image encoder first")
        if feature.ndim == 3:  # tokens B×L×C on a square grid of input_size / stride
            side = self.input_size // self.taps[index][2]
            feature = feature.transpose(1, 2).reshape(feature.shape[0], -1, side, side)
        return feature

    def forward(self) -> list[torch.Tensor]:
        """Projected skips ``[s0 (B×C/8×S/s0), s1 (B×C/4×S/s1)]`` from the last encoder pass."""
        return [self.proj_s0(self._as_map(0)), self.proj_s1(self._as_map(1))]


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
