"""Data contract shared by the bundles: MSD-style ``datalist.json`` helpers, a synthetic sample dataset, and the
dictionary transforms the bundles need beyond MONAI's. Readers of published dataset layouts live in their own
modules (``common.data.fundus``, ``common.data.lesions``, ``common.data.lits``, ``common.data.synapse``), each also
a command line tool."""

from .datalist import (
    DATALIST_NAME,
    IMAGE_SUFFIXES,
    build_datalist,
    case_id,
    find_images,
    load_datalist,
    split_cases,
    write_datalist,
)
from .prompts import SamplePromptsd
from .synthetic import make_synthetic_case, make_synthetic_dataset
from .transforms import AddBackgroundChanneld, LabelValuesToChannelsd, SaveOverlayd, SelectFieldOfViewd
from .visualize import overlay_masks

__all__ = [
    "AddBackgroundChanneld",
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
    "split_cases",
    "write_datalist",
]
