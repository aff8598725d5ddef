"""Data contract shared by the bundles at run time: MSD-style ``datalist.json`` helpers, scan reading with input
checks, and the dictionary transforms the bundles' configs need beyond MONAI's. Commands that prepare datasets
(published layouts → ``datalist.json``, synthetic sample data) are in ``common.datasets``."""

from .class_volumes import SaveClassVolumesd, class_volumes
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
from .field_of_view_scale import ScaleFieldOfViewd, field_of_view_diameter
from .input_error import InputError
from .input_kind import accepted_input, input_kind_problem, looks_like_ct
from .intensity import CT_WINDOWS, ScaleScanIntensityd, parse_intensity
from .logits_to_labels import (
    OUTPUT_RULES,
    LogitsToLabelsd,
    ProbabilitiesToLabelsd,
    labels_from_probabilities,
    output_rule_of,
    probabilities_of,
    sigmoid_rule,
)
from .montage import SaveMontaged, label_montage
from .one_hot_for_metrics import OneHotForMetricsd
from .prompts import SamplePromptsd
from .save_scan_label import SaveScanLabeld
from .scan_pipeline import scan_postprocessing, scan_preprocessing
from .served_label import LabelForMonaiLabeld
from .template_regions import HIPPOCAMPUS_BOXES, CropTemplateRegionsd, TemplateBox, side_label_names
from .scan_io import (
    IMAGE_2D_SUFFIXES,
    VOLUME_SUFFIXES,
    LoadScand,
    ScanInputError,
    ScanList,
    exit_if_scans_skipped,
    list_scans,
    read_scan,
    readable_scans,
)
from .training_data import check_labels, training_datalist
from .transforms import (
    ClearOutsideFieldOfViewd,
    LabelValuesToChannelsd,
    SaveOverlayd,
    SelectFieldOfViewd,
    field_of_view,
)
from .visualize import overlay_masks

__all__ = [
    "accepted_input",
    "InputError",
    "input_kind_problem",
    "looks_like_ct",
    "CT_WINDOWS",
    "ClearOutsideFieldOfViewd",
    "CropTemplateRegionsd",
    "HIPPOCAMPUS_BOXES",
    "TemplateBox",
    "side_label_names",
    "IMAGE_2D_SUFFIXES",
    "LabelForMonaiLabeld",
    "LoadScand",
    "LogitsToLabelsd",
    "OneHotForMetricsd",
    "ProbabilitiesToLabelsd",
    "labels_from_probabilities",
    "probabilities_of",
    "OUTPUT_RULES",
    "SaveClassVolumesd",
    "SaveMontaged",
    "SaveScanLabeld",
    "ScaleFieldOfViewd",
    "ScaleScanIntensityd",
    "ScanInputError",
    "ScanList",
    "VOLUME_SUFFIXES",
    "class_volumes",
    "label_montage",
    "exit_if_scans_skipped",
    "field_of_view_diameter",
    "list_scans",
    "parse_intensity",
    "read_scan",
    "readable_scans",
    "scan_postprocessing",
    "scan_preprocessing",
    "DATALIST_NAME",
    "IMAGE_SUFFIXES",
    "LabelValuesToChannelsd",
    "SamplePromptsd",
    "SaveOverlayd",
    "SelectFieldOfViewd",
    "build_datalist",
    "check_labels",
    "training_datalist",
    "case_id",
    "field_of_view",
    "find_images",
    "load_datalist",
    "output_rule_of",
    "overlay_masks",
    "sigmoid_rule",
    "split_cases",
    "write_datalist",
]
