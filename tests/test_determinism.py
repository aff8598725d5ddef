"""Same seed and data → the same adapter weights after N training iterations on CPU, for every bundle; another seed
gives other weights (so the comparison can fail)."""

from __future__ import annotations

import pytest
import torch
from bundle_helpers import TEST_BACKBONES, bundle_and_synthetic_data, short_training

from common.adapters import adapter_state_dict

#: one bundle also loads its data in worker processes (their seeds must follow the global seed too)
WORKERS = {"sam2lora_fundus_segmentation": 2}


def _train(bundle, data, name: str, seed: int) -> dict[str, torch.Tensor]:
    parser = short_training(
        bundle, data, name, 3, num_workers=WORKERS.get(name, 0),
        initialize=[f"$monai.utils.set_determinism(seed={seed})"],
    )  # fmt: skip
    parser.get_parsed_content("train#trainer").run()
    return adapter_state_dict(parser.get_parsed_content("network"))


@pytest.mark.parametrize("name", sorted(TEST_BACKBONES))
def test_same_seed_same_adapter_weights(name, tmp_path):
    bundle, data = bundle_and_synthetic_data(name, tmp_path)
    first, second = _train(bundle, data, name, 0), _train(bundle, data, name, 0)
    assert first.keys() == second.keys() and first
    different = [k for k in first if not torch.equal(first[k], second[k])]
    assert not different, f"same seed, different weights: {different[:5]}"
    other = _train(bundle, data, name, 1)
    assert any(not torch.equal(first[k], other[k]) for k in first)
