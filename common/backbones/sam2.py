"""SAM 2.1 (Hiera T/S/B+/L and a tiny test variant) built from the ``sam2`` package's own configs."""

from __future__ import annotations

import sam2  # noqa: F401  (importing sam2 initialises its hydra config module)
from hydra import compose
from hydra.utils import instantiate
from omegaconf import OmegaConf
from sam2.modeling.sam2_base import SAM2Base

__all__ = ["SAM2_CONFIGS", "build_sam2_model"]

SAM2_CONFIGS: dict[str, str] = {
    "sam2.1_hiera_t": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_s": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_b+": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_l": "configs/sam2.1/sam2.1_hiera_l.yaml",
    "sam2.1_hiera_test": "configs/sam2.1/sam2.1_hiera_t.yaml",
}

# The test variant is the Hiera-T config shrunk through hydra overrides: same classes, one block per stage except
# two in stage 3 (Hiera cannot make a stage's first, pooling block global, so a global-attention block needs a
# second block), 32-wide features, one memory-attention layer.
_TEST_OVERRIDES = [
    "++model.image_encoder.trunk.embed_dim=16",
    "++model.image_encoder.trunk.num_heads=1",
    "++model.image_encoder.trunk.stages=[1,1,2,1]",
    "++model.image_encoder.trunk.global_att_blocks=[3]",
    "++model.image_encoder.trunk.window_spec=[4,4,4,2]",
    "++model.image_encoder.trunk.window_pos_embed_bkg_spatial_size=[4,4]",
    "++model.image_encoder.neck.d_model=32",
    "++model.image_encoder.neck.backbone_channel_list=[128,64,32,16]",
    "++model.image_encoder.neck.position_encoding.num_pos_feats=32",
    "++model.memory_attention.d_model=32",
    "++model.memory_attention.num_layers=1",
    "++model.memory_attention.layer.d_model=32",
    "++model.memory_attention.layer.dim_feedforward=64",
    "++model.memory_attention.layer.self_attention.embedding_dim=32",
    "++model.memory_attention.layer.self_attention.feat_sizes=[8,8]",
    "++model.memory_attention.layer.cross_attention.embedding_dim=32",
    "++model.memory_attention.layer.cross_attention.feat_sizes=[8,8]",
    "++model.memory_attention.layer.cross_attention.kv_in_dim=16",
    "++model.memory_encoder.out_dim=16",
    "++model.memory_encoder.position_encoding.num_pos_feats=16",
    "++model.memory_encoder.fuser.layer.dim=32",
    "++model.memory_encoder.fuser.num_layers=1",
    "++model.memory_encoder.mask_downsampler.embed_dim=32",
    "++model.memory_encoder.in_dim=32",
    "++model.num_maskmem=2",
]


def build_sam2_model(name: str, input_size: int = 1024) -> SAM2Base:
    """Build ``sam2.modeling.sam2_base.SAM2Base`` with random weights from the packaged SAM 2.1 config.

    The run-time post-processing overrides of ``sam2.build_sam.build_sam2`` (dynamic multimask fallback) are not
    applied: they switch masks only in eval mode, which would make training and inference differ.
    """
    if input_size % 32:
        raise ValueError(f"{name}: input_size must be a multiple of 32, got {input_size}")
    overrides = [f"++model.image_size={input_size}"]
    if name == "sam2.1_hiera_test":
        overrides += _TEST_OVERRIDES
    cfg = compose(config_name=SAM2_CONFIGS[name], overrides=overrides)
    OmegaConf.resolve(cfg)
    return instantiate(cfg.model, _recursive_=True)
