from .conv_lora_sam import CONV_LORA_TARGETS, ConvLoraSamNet
from .encoder_skip_fusion import EncoderSkipFusion, decode_with_skips
from .sam2lora import SAM2LORA_TARGETS, Sam2LoraNet
from .sam_segmentation_net import SamSegmentationNet

__all__ = [
    "CONV_LORA_TARGETS",
    "ConvLoraSamNet",
    "EncoderSkipFusion",
    "SAM2LORA_TARGETS",
    "Sam2LoraNet",
    "SamSegmentationNet",
    "decode_with_skips",
]
