from common.backbones.forward import decode_with_skips

from .balr_sam import BALR_ADAPTER_TARGETS, BalrSamNet
from .conv_lora_sam import CONV_LORA_TARGETS, ConvLoraSamNet
from .detail_enhancement import DepthwiseSeparableBlock, DetailEnhancementNet, DetailFeatures
from .encoder_skip_fusion import EncoderSkipFusion
from .logit_calibration import LogitCalibration
from .low_rank_attention import LowRankTensorAttention, is_decoder_attention, replace_decoder_attention
from .resized_input import ResizedInputNet
from .s_sam import S_SAM_SVD_TARGETS, SSamNet, s_sam_trainable_groups
from .sam2lora import SAM2LORA_TARGETS, Sam2LoraNet
from .sam_segmentation_net import SamSegmentationNet
from .text_affine import TextAffineLayer

__all__ = [
    "BALR_ADAPTER_TARGETS",
    "BalrSamNet",
    "DepthwiseSeparableBlock",
    "DetailEnhancementNet",
    "DetailFeatures",
    "LogitCalibration",
    "LowRankTensorAttention",
    "is_decoder_attention",
    "replace_decoder_attention",
    "CONV_LORA_TARGETS",
    "ConvLoraSamNet",
    "EncoderSkipFusion",
    "ResizedInputNet",
    "SAM2LORA_TARGETS",
    "Sam2LoraNet",
    "SSamNet",
    "S_SAM_SVD_TARGETS",
    "SamSegmentationNet",
    "TextAffineLayer",
    "decode_with_skips",
    "s_sam_trainable_groups",
]
