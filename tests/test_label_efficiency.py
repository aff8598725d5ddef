"""The label-efficiency report: box-prompted zero-shot segmentation of a volume, and the table and figure built from
accuracy runs on labelled subsets."""

from __future__ import annotations

import json

import numpy as np
import torch

from common.benchmark import label_efficiency
from common.networks import SamSegmentationNet


def test_box_prompts_label_only_the_slices_and_structures_the_truth_has():
    torch.manual_seed(0)
    network = SamSegmentationNet("sam_vit_test", checkpoint=None).eval()
    rng = np.random.default_rng(0)
    image = rng.random((24, 20, 6)).astype(np.float32)
    truth = np.zeros((24, 20, 6), np.int64)
    truth[4:10, 5:12, 1] = 1
    truth[12:20, 6:14, 1] = 2
    truth[12:20, 6:14, 3] = 2  # structure 2 alone
    batched = label_efficiency.box_prompted_volume(network, image, truth, 2, batch_size=16)
    one_by_one = label_efficiency.box_prompted_volume(network, image, truth, 2, batch_size=1)
    assert np.array_equal(batched, one_by_one)  # each slice's answer does not depend on its batch
    assert set(np.unique(batched)) <= {0, 1, 2}
    assert not batched[:, :, [0, 2, 4, 5]].any()  # no truth, no prompt, no label
    # this random network marks about a third of a prompted slice; a structure absent from a slice is never
    # labelled there, even where the other structure's box makes the network answer
    assert (batched[:, :, 1] == 1).any() and (batched[:, :, 1] == 2).any() and (batched[:, :, 3] == 2).any()
    assert not (batched[:, :, 3] == 1).any()


def _run(folder, method, count, seed, dice):
    folder.mkdir(parents=True)
    subset = {"count": count, "seed": seed, "cases": []}
    (folder / "metrics.json").write_text(
        json.dumps({"method": method, "labelled_cases": subset, "mean": {"mean_dice": dice}})
    )


def test_the_table_groups_seeds_per_method_and_labelled_volumes(tmp_path):
    _run(tmp_path / "a", "balr_sam", 5, 0, 0.80)
    _run(tmp_path / "b", "balr_sam", 5, 1, 0.70)
    _run(tmp_path / "c", "balr_sam", 1, 0, 0.60)
    _run(tmp_path / "d", "unet", 5, 0, 0.40)
    _run(tmp_path / "e", "unet", 182, None, 0.86)  # all volumes, no subset: not a point of this study
    (tmp_path / "zero_shot.json").write_text(json.dumps({"mean": {"mean_dice": 0.76}}))
    table = label_efficiency.label_efficiency_table(tmp_path)
    assert table == {
        "balr_sam": {1: [0.60], 5: [0.80, 0.70]}, "unet": {5: [0.40]}, "litemedsam_box_prompts": {0: [0.76]}
    }  # fmt: skip
    text = label_efficiency.write_report(tmp_path, "a test budget")
    assert "| BALR-SAM | 0.600 (1 seed) | 0.750 (0.700–0.800, 2 seeds) |" in text
    assert "| MONAI UNet (from scratch) |  | 0.400 (1 seed) |" in text
    assert "0.760" in text and "a test budget" in text
    assert (tmp_path / "label_efficiency.png").stat().st_size > 0
    assert json.loads((tmp_path / "label_efficiency.json").read_text())["balr_sam"] == {"1": [0.6], "5": [0.8, 0.7]}
