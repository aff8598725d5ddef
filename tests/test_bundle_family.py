"""The four bundles are one family: bundles are self-contained (model-zoo style), so each carries its own copy of
what they share, and this test fails as soon as one copy drifts from the others. (Inference's scan pipeline itself
is one definition in ``common.data.scan_pipeline``; the configs pass it their settings.)"""

from __future__ import annotations

import json

from bundle_helpers import REPO_ROOT, TEST_BACKBONES

BUNDLES = sorted(TEST_BACKBONES)
#: the bundles whose default configuration is their shipped MSD hippocampus adapter
HIPPOCAMPUS_DEFAULTS = ["balr_sam_segmentation", "conv_lora_sam_segmentation", "s_sam_text_prompted_segmentation"]
#: ids that all four train.json / inference.json / evaluate.json define but set per method or per default dataset (the network
#: and its loss and schedule, the data each default trains on, the metrics of its task); every other id all four
#: define must be the same in all four (parsed as JSON, without building anything)
PER_BUNDLE_IDS = {
    "train.json": {
        "dataset_dir", "input_size", "label_values", "load_transforms", "loss", "lr_scheduler",
        "max_epochs", "network_def", "num_classes", "prediction_ext", "train#handlers", "train#preprocessing",
        "train#random_transforms", "train#trainer", "validate#additional_metrics", "validate#evaluator",
        "validate#inferer", "validate#key_metric", "validate#post_transforms", "validate#preprocessing",
        "weight_decay",
    },
    "inference.json": {
        "dataset_dir", "field_of_view", "fov_diameter", "input_size", "label_names", "labels_at_input_size",
        "network_def", "save_probabilities", "test_time_mirror_axes", "whole_brain",
    },
    "evaluate.json": {"validate#save_transforms"},
}  # fmt: skip


def _config(name: str, file: str) -> dict:
    return json.loads((REPO_ROOT / "bundles" / name / "configs" / file).read_text())


def _get(config: dict, config_id: str):
    if config_id in config:  # an override file's flat id, e.g. evaluate.json's "validate#handlers"
        return config[config_id]
    for part in config_id.split("#"):
        config = config[part]
    return config


def test_files_every_bundle_carries_unchanged_are_identical():
    for file in ("logging.conf", "merged_inference.json"):
        texts = {name: (REPO_ROOT / "bundles" / name / "configs" / file).read_text() for name in BUNDLES}
        assert len(set(texts.values())) == 1, f"{file} differs between bundles"


def test_multi_gpu_configs_differ_only_in_unused_parameters():
    # the one allowed difference: Conv-LoRA's unchosen experts get no gradient in some iterations, S-SAM has none
    configs = {name: _config(name, "multi_gpu_train.json") for name in BUNDLES}
    for config in configs.values():
        network = config["network"]
        config["network"] = {k: v for k, v in network.items() if k not in ("find_unused_parameters", "_desc_")}
    reference = configs[BUNDLES[0]]
    for name, config in configs.items():
        assert config == reference, name


def _ids(config: dict):
    """Top-level ids, with the ``train`` and ``validate`` sections one level further (``train#trainer``)."""
    for key, value in config.items():
        if key in ("train", "validate") and isinstance(value, dict):
            yield from (f"{key}#{sub}" for sub in value)
        else:
            yield key


def test_every_id_the_four_bundles_share_is_the_same_in_all_four():
    for file, per_bundle in PER_BUNDLE_IDS.items():
        configs = {name: _config(name, file) for name in BUNDLES}
        shared = set.intersection(*(set(_ids(config)) for config in configs.values()))
        assert per_bundle <= shared, f"{file}: not defined by every bundle: {sorted(per_bundle - shared)}"
        assert shared - per_bundle, file  # the test pins something
        for config_id in sorted(shared - per_bundle):
            _same(configs, config_id)


def _same(configs: dict, config_id: str) -> str:
    values = {name: json.dumps(_get(config, config_id), sort_keys=True) for name, config in configs.items()}
    assert len(set(values.values())) == 1, f"{config_id} differs: {values}"
    return next(iter(values.values()))


def test_the_hippocampus_defaults_declare_one_dataset_and_one_input():
    train = {name: _config(name, "train.json") for name in HIPPOCAMPUS_DEFAULTS}
    infer = {name: _config(name, "inference.json") for name in HIPPOCAMPUS_DEFAULTS}
    meta = {name: _config(name, "metadata.json")["network_data_format"]["inputs"]["image"] for name in train}
    # one input size, trained, segmented (windows of that size) and declared alike
    for name in HIPPOCAMPUS_DEFAULTS:
        assert train[name]["input_size"] == infer[name]["input_size"] == 64, name
        assert infer[name]["window_size"] == "@input_size", name
        assert meta[name]["spatial_shape"] == [64, 64, 1] and meta[name]["num_channels"] == 1, name  # a slice of a volume
    for config_id in ("backbone", "dataset_dir", "label_names", "label_values", "slice_size", "samples_per_image",
                      "learning_rate", "validate#dataset", "validate#evaluator"):  # fmt: skip
        _same(train, config_id)
    _same(infer, "intensity")
    for config_id in ("backbone", "label_names", "dataset_dir"):  # what inference assumes is what was trained
        assert _same(infer, config_id) == _same(train, config_id), config_id


#: (bundle, inference overlays on top of inference.json, extra settings) → the rule its network must declare
OUTPUT_RULE_CASES = [
    ("balr_sam_segmentation", [], {}, "softmax"),
    ("balr_sam_segmentation", ["pictures_2d_inference.json"], {}, "sigmoid_argmax"),
    ("balr_sam_segmentation", ["pictures_2d_inference.json", "isic2017_inference.json"], {}, "sigmoid_argmax"),
    ("balr_sam_segmentation", ["synapse_inference.json"], {}, "softmax"),
    ("conv_lora_sam_segmentation", [], {}, "softmax"),
    ("conv_lora_sam_segmentation", ["pictures_2d_inference.json"], {}, "sigmoid_argmax"),
    ("conv_lora_sam_segmentation", ["pictures_2d_inference.json", "multiclass_2d_inference.json"], {}, "softmax"),
    ("s_sam_text_prompted_segmentation", [], {}, "sigmoid_argmax"),
    ("s_sam_text_prompted_segmentation", ["paper_inference.json"], {}, "sigmoid_argmax"),
    ("sam2lora_fundus_segmentation", [], {}, "sigmoid_argmax"),
    ("sam2lora_fundus_segmentation", ["hippocampus_inference.json"], {}, "sigmoid_argmax"),
    # optic disc ⊃ cup
    ("sam2lora_fundus_segmentation", [], {"label_groups": [[1, 2], [2]], "label_names": {"1": "disc", "2": "cup"}},
     "sigmoid_sum"),
]


def test_every_inference_config_takes_its_output_rule_from_the_network():
    import torch
    from monai.bundle import ConfigParser

    for name, overlays, settings, expected in OUTPUT_RULE_CASES:
        for overlay in overlays:  # no overlay restates what the network declares
            assert "output_rule" not in _config(name, overlay), (name, overlay)
        parser = ConfigParser()
        parser.read_config([str(REPO_ROOT / "bundles" / name / "configs" / f) for f in ["inference.json", *overlays]])
        parser.update({"backbone": TEST_BACKBONES[name], "backbone_checkpoint": None, **settings})
        network = parser.get_parsed_content("network")
        rule = parser.get_parsed_content("output_rule")
        assert rule == network.output_rule == expected, (name, overlays, rule)
        # the rule fits the head: a softmax head has a background channel on top of the named classes
        with torch.no_grad():
            channels = network.eval()(torch.rand(1, 3, 32, 32)).shape[1]
        classes = len(parser.get_parsed_content("label_names"))
        assert channels == (classes + 1 if rule == "softmax" else classes), (name, overlays, channels, classes)


def test_each_bundle_declares_its_dataset_configs_and_the_benchmark_reads_them():
    import pytest

    from common.benchmark.accuracy import DATASETS, METHODS, dataset_configs

    for name in BUNDLES:
        declared = _config(name, "metadata.json")["dataset_configs"]
        datasets = [key for key in declared if key != "_desc_"]
        assert set(DATASETS) <= set(datasets), name  # every bundle runs on the comparison's datasets
        for dataset in datasets:
            train, inference = declared[dataset]["train"], declared[dataset]["inference"]
            assert train[0] == "train.json" and inference[0] == "inference.json", (name, dataset)
            for file in train + inference:
                assert (REPO_ROOT / "bundles" / name / "configs" / file).is_file(), (name, dataset, file)
    for method, spec in METHODS.items():
        for dataset in DATASETS:
            declared = _config(spec.bundle, "metadata.json")["dataset_configs"][dataset]
            assert dataset_configs(method, dataset) == (declared["train"], declared["inference"])
    with pytest.raises(ValueError, match="declares no dataset_configs for 'kvasir_seg'"):
        dataset_configs("sam2lora", "kvasir_seg")


def test_config_files_pass_the_model_zoo_formatting_hooks():
    # the zoo's pre-commit hooks refuse a JSON file without a final newline or with non-ASCII text ("64²", "×")
    for path in sorted((REPO_ROOT / "bundles").glob("*/configs/*.json")):
        text = path.read_text(encoding="utf-8")
        assert text.endswith("\n") and text.isascii(), path.relative_to(REPO_ROOT)


def test_config_files_are_in_the_one_layout():
    # one layout for every config (tests/config_format.py), so that a diff shows content, not line breaks
    from config_format import format_config

    for path in sorted((REPO_ROOT / "bundles").glob("*/configs/*.json")):
        text = path.read_text(encoding="utf-8")
        assert text == format_config(json.loads(text)), (
            f"{path.relative_to(REPO_ROOT)}: run python tests/config_format.py {path.relative_to(REPO_ROOT)}"
        )


def test_the_layout_inlines_only_short_flat_values():
    from config_format import format_config

    config = {"a": {"_target_": "X", "keys": ["image", "label"]}, "b": {"c": {"d": 1}}, "e": list(range(5))}
    assert format_config(config).splitlines() == [
        "{",
        '    "a": {"_target_": "X", "keys": ["image", "label"]},',
        '    "b": {',
        '        "c": {"d": 1}',
        "    },",
        '    "e": [',
        *[f"        {i}," for i in range(4)],
        "        4",
        "    ]",
        "}",
    ]
    assert json.loads(format_config(config)) == config


#: network_def arguments that only training reads (a loss weight): an inference stack need not repeat them
TRAINING_ONLY_NETWORK_ARGS = {"regularization_weight"}


def _stack(name: str, files: list[str]):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(REPO_ROOT / "bundles" / name / "configs" / f) for f in files])
    parser.update({"bundle_root": str(REPO_ROOT / "bundles" / name)})
    return parser


def _resolved(parser, config_id: str):
    """The value of ``config_id`` with references and expressions resolved but nothing built."""
    if config_id not in parser:
        return None
    value = parser.get_parsed_content(config_id, instantiate=False)
    return value.get_config() if hasattr(value, "get_config") else value


def _scan_scalings(config) -> list:
    """The ``intensity`` of every ``ScaleScanIntensityd`` a (raw) config holds."""
    found = []
    if isinstance(config, dict):
        if str(config.get("_target_", "")).endswith("ScaleScanIntensityd"):
            found.append(config.get("intensity"))
        for value in config.values():
            found += _scan_scalings(value)
    elif isinstance(config, list):
        for value in config:
            found += _scan_scalings(value)
    return found


def test_every_declared_training_stack_and_its_inference_stack_agree():
    """For every dataset a bundle's metadata.json declares: the network (less training-only arguments), its input
    size, the label names and the scan scaling are the same when trained and when served, parsed without building."""
    scalings_checked = 0
    for name in BUNDLES:
        declared = _config(name, "metadata.json")["dataset_configs"]
        for dataset, stacks in ((k, v) for k, v in declared.items() if k != "_desc_"):
            train, infer = _stack(name, stacks["train"]), _stack(name, stacks["inference"])
            where = (name, dataset)
            trained_net, served_net = _resolved(train, "network_def"), _resolved(infer, "network_def")
            assert {k: v for k, v in trained_net.items() if k not in TRAINING_ONLY_NETWORK_ARGS} == served_net, where
            assert _resolved(train, "input_size") == _resolved(infer, "input_size"), where
            trained_labels = _resolved(train, "label_names")
            if trained_labels is not None:  # SAM2LoRA's vessel training names its groups, not its labels
                assert trained_labels == _resolved(infer, "label_names"), where
            trained_intensity = str(_resolved(train, "intensity"))
            scalings = {trained_intensity if s == "@intensity" else str(s) for s in _scan_scalings(train.config)}
            if scalings:  # volumes scaled in training as inference scales them
                assert scalings == {str(_resolved(infer, "intensity"))}, where
                scalings_checked += 1
    assert scalings_checked >= 3  # at least the three hippocampus defaults
