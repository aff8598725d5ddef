"""Data contract shared by the bundles: MSD-style ``datalist.json`` helpers and a synthetic sample dataset."""

from .datalist import DATALIST_NAME, IMAGE_SUFFIXES, build_datalist, case_id, find_images, load_datalist, write_datalist
from .synthetic import make_synthetic_case, make_synthetic_dataset

__all__ = [
    "DATALIST_NAME",
    "IMAGE_SUFFIXES",
    "build_datalist",
    "case_id",
    "find_images",
    "load_datalist",
    "make_synthetic_case",
    "make_synthetic_dataset",
    "write_datalist",
]
