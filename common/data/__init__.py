"""Data contract shared by the bundles: MSD-style ``datalist.json`` helpers, a synthetic sample dataset, and the
dictionary transforms the bundles need beyond MONAI's. Readers of published dataset layouts live in their own
modules (``common.data.fundus``), each also a command line tool."""

from .datalist import DATALIST_NAME, IMAGE_SUFFIXES, build_datalist, case_id, find_images, load_datalist, write_datalist
from .prompts import SamplePromptsd
from .synthetic import make_synthetic_case, make_synthetic_dataset
from .transforms import LabelValuesToChannelsd, SaveOverlayd, SelectFieldOfViewd
from .visualize import overlay_masks

__all__ = [
    "DATALIST_NAME",
    "IMAGE_SUFFIXES",
    "LabelValuesToChannelsd",
    "SamplePromptsd",
    "SaveOverlayd",
    "SelectFieldOfViewd",
    "build_datalist",
    "case_id",
    "find_images",
    "load_datalist",
    "make_synthetic_case",
    "make_synthetic_dataset",
    "overlay_masks",
    "write_datalist",
]
