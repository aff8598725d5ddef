"""The four bundles are one family: bundles are self-contained (model-zoo style), so each carries its own copy of
what they share, and this test fails as soon as one copy drifts from the others (the scan pipeline of
inference.json has its own test in test_scan_inference.py)."""

from __future__ import annotations

import json

from bundle_helpers import REPO_ROOT, TEST_BACKBONES

BUNDLES = sorted(TEST_BACKBONES)
#: the bundles whose default configuration is their shipped MSD hippocampus adapter
HIPPOCAMPUS_DEFAULTS = ["balr_sam_segmentation", "conv_lora_sam_segmentation", "s_sam_text_prompted_segmentation"]
#: train.json ids every bundle defines with one value: folders, device and precision, data loading and caching,
#: checkpointing and resuming, the optimiser, validation's saver, handlers and post-processing tail
SHARED_TRAIN_IDS = [
    "amp", "backbone_checkpoint", "batch_size", "bundle_root", "cache_rate", "checkpoint_interval", "ckpt_dir",
    "device", "initialize", "network", "num_workers", "optimizer", "output_dir", "resume", "run", "train#dataloader",
    "train#dataset", "train#inferer", "val_interval", "validate#best_model_saver", "validate#dataloader",
    "validate#dataset", "validate#handlers", "validate#postprocessing", "validate#save_transforms",
]  # fmt: skip


def _config(name: str, file: str) -> dict:
    return json.loads((REPO_ROOT / "bundles" / name / "configs" / file).read_text())


def _get(config: dict, config_id: str):
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


def test_train_configs_share_their_common_parts():
    configs = {name: _config(name, "train.json") for name in BUNDLES}
    for config_id in SHARED_TRAIN_IDS:
        values = {name: json.dumps(_get(config, config_id), sort_keys=True) for name, config in configs.items()}
        assert len(set(values.values())) == 1, f"{config_id} differs: {values}"


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
    for config_id in ("backbone", "dataset_dir", "label_names", "label_values", "slice_size", "samples_per_volume",
                      "learning_rate", "validate#dataset", "validate#evaluator"):  # fmt: skip
        _same(train, config_id)
    _same(infer, "intensity")
    for config_id in ("backbone", "label_names", "dataset_dir"):  # what inference assumes is what was trained
        assert _same(infer, config_id) == _same(train, config_id), config_id


#: (bundle, inference overlays on top of inference.json, extra settings) → the rule its network must declare
OUTPUT_RULE_CASES = [
    ("balr_sam_segmentation", [], {}, "softmax"),
    ("balr_sam_segmentation", ["paper_inference.json"], {}, "sigmoid_argmax"),
    ("balr_sam_segmentation", ["synapse_inference.json"], {}, "softmax"),
    ("conv_lora_sam_segmentation", [], {}, "softmax"),
    ("conv_lora_sam_segmentation", ["paper_inference.json"], {}, "sigmoid_argmax"),
    ("conv_lora_sam_segmentation", ["paper_inference.json", "multiclass_2d_inference.json"], {}, "softmax"),
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
            scalings = set(map(str, _scan_scalings(train.config)))
            if scalings:  # volumes scaled in training as inference scales them
                assert scalings == {str(_resolved(infer, "intensity"))}, where
                scalings_checked += 1
    assert scalings_checked >= 3  # at least the three hippocampus defaults
