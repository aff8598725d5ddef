"""One adapter mechanism for every method: configs, layers, injection by name patterns, freezing, adapter-only
state and merging.

Typical use::

    sam = build_backbone("sam2.1_hiera_l", checkpoint=...)
    inject_adapters(sam, LoraConfig(rank=64, alpha=128, target_modules=["image_encoder.*attn.qkv"]))
    report = configure_trainable(sam, {"decoder_norms": ["sam_mask_decoder.transformer.*norm.*"]})
    print(report)
    save_adapter_checkpoint(sam, "models/model.pt")
"""

from .bottleneck import BottleneckAdapterLinear
from .config import AdapterConfig, BottleneckConfig, ConvLoraConfig, LoraConfig, SvdConfig
from .conv_lora import ConvLoraLinear, coefficient_of_variation_squared
from .inject import (
    adapter_layers,
    auxiliary_loss,
    inject_adapters,
    merge_adapters,
    merge_and_unload,
    name_matches,
    unmerge_adapters,
)
from .layer import AdapterLayer
from .lora import LoraLinear
from .state import (
    AdapterStateView,
    adapter_state_dict,
    load_adapter_checkpoint,
    load_adapter_state_dict,
    save_adapter_checkpoint,
)
from .svd import SvdLayer
from .trainable import ParameterReport, configure_trainable, param_matches, parameter_report

__all__ = [
    "AdapterConfig",
    "AdapterLayer",
    "AdapterStateView",
    "BottleneckAdapterLinear",
    "BottleneckConfig",
    "ConvLoraConfig",
    "ConvLoraLinear",
    "LoraConfig",
    "LoraLinear",
    "ParameterReport",
    "SvdConfig",
    "SvdLayer",
    "adapter_layers",
    "adapter_state_dict",
    "auxiliary_loss",
    "coefficient_of_variation_squared",
    "configure_trainable",
    "inject_adapters",
    "load_adapter_checkpoint",
    "load_adapter_state_dict",
    "merge_adapters",
    "merge_and_unload",
    "name_matches",
    "param_matches",
    "parameter_report",
    "save_adapter_checkpoint",
    "unmerge_adapters",
]
