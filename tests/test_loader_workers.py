"""The bundles' default loader workers: none on a CPU of 2 cores or fewer (the worker would contend with the training
threads), a few where there are cores to spare or a GPU computes, and every train.json taking that default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

from common.engines import available_cores, choose_num_workers

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"


@pytest.mark.parametrize(
    ("device", "cores", "workers"),
    [("cpu", 1, 0), ("cpu", 2, 0), ("cpu", 4, 2), ("cpu", 16, 4), ("cuda", 2, 1), ("cuda", 1, 1), ("cuda:0", 16, 4)],
)
def test_choose_num_workers(device, cores, workers):
    assert choose_num_workers(device, cores=cores) == workers


def test_available_cores_is_at_least_one():
    assert available_cores() >= 1


@pytest.mark.parametrize("config", sorted(BUNDLES.glob("*/configs/train.json")), ids=lambda p: p.parts[-3])
def test_train_configs_take_the_default(config):
    assert json.loads(config.read_text())["num_workers"] == "$common.engines.choose_num_workers(@device)"
    parser = ConfigParser()
    parser.read_config(config)
    parser["device"] = "cpu"
    assert parser.get_parsed_content("num_workers") == choose_num_workers("cpu")
