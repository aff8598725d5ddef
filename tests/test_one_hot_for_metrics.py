"""Training and validation score every bundle through ``OneHotForMetricsd`` and the network's output rule: the
metrics must equal what each head's own post-processing (MONAI's transforms, written per dataset before) gave."""

from __future__ import annotations

import pytest
import torch
from monai.metrics import DiceMetric
from monai.transforms import Activationsd, AsDiscreted, Compose

from common.data import OneHotForMetricsd, ProbabilitiesToLabelsd


def _dice(pred: torch.Tensor, label: torch.Tensor, include_background: bool) -> torch.Tensor:
    metric = DiceMetric(include_background=include_background, reduction="none", ignore_empty=False)
    return metric(pred[None], label[None])[0]


def _logits_and_labels(channels: int, classes: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(channels, 16, 12, generator=generator)
    label = torch.randint(0, classes + 1, (1, 16, 12), generator=generator).float()
    return logits, label


def test_softmax_heads_score_as_argmax_one_hot():
    logits, label = _logits_and_labels(channels=3, classes=2)
    old = AsDiscreted(["pred", "label"], argmax=[True, False], to_onehot=3)({"pred": logits, "label": label})
    new = OneHotForMetricsd("pred", rule="softmax")({"pred": logits, "label": label})
    assert torch.equal(new["pred"], old["pred"]) and torch.equal(new["label"], old["label"])


def test_a_binary_sigmoid_head_scores_the_same_without_its_background_channel():
    logits, label = _logits_and_labels(channels=1, classes=1, seed=1)
    old = Compose([Activationsd("pred", sigmoid=True), AsDiscreted("pred", threshold=0.5)])(
        {"pred": logits, "label": label}
    )
    new = OneHotForMetricsd("pred", rule="sigmoid_argmax")({"pred": logits, "label": label})
    assert new["pred"].shape[0] == new["label"].shape[0] == 2
    assert torch.equal(new["pred"][1:], old["pred"]) and torch.equal(new["label"][1:], label)
    assert torch.allclose(_dice(new["pred"], new["label"], False), _dice(old["pred"], label, True))


def test_per_class_sigmoids_against_a_label_map_take_the_most_probable_class_above_threshold():
    logits, label = _logits_and_labels(channels=2, classes=2, seed=2)
    # S-SAM's rule as its validation wrote it: a constant 0.5 background channel before the argmax
    probabilities = torch.sigmoid(logits)
    with_background = torch.cat([torch.full_like(probabilities[:1], 0.5), probabilities])
    old = AsDiscreted(["pred", "label"], argmax=[True, False], to_onehot=3)({"pred": with_background, "label": label})
    new = OneHotForMetricsd("pred", rule="sigmoid_argmax", probabilities_key="prob")({"pred": logits, "label": label})
    assert torch.equal(new["pred"], old["pred"]) and torch.equal(new["label"], old["label"])
    # the probabilities kept for an evaluation's label map give the label map the one-hot channels hold
    assert torch.equal(new["prob"], probabilities)
    labels = ProbabilitiesToLabelsd("prob", labels_key="pred_label", rule="sigmoid_argmax")(
        {"prob": new["prob"], "pred_label": torch.zeros_like(label)}
    )["pred_label"]
    assert torch.equal(labels.long(), new["pred"].argmax(dim=0, keepdim=True))


@pytest.mark.parametrize("rule", ["sigmoid_argmax", "sigmoid_sum"])
def test_label_channels_are_scored_channel_by_channel(rule):
    logits, _ = _logits_and_labels(channels=2, classes=2, seed=3)
    generator = torch.Generator().manual_seed(4)
    channels = (torch.rand(2, 16, 12, generator=generator) > 0.5).float()  # e.g. nested disc ⊃ cup groups
    old = Compose([Activationsd("pred", sigmoid=True), AsDiscreted("pred", threshold=0.5)])(
        {"pred": logits, "label": channels}
    )
    new = OneHotForMetricsd("pred", rule=rule)({"pred": logits, "label": channels})
    assert torch.equal(new["pred"][1:], old["pred"]) and torch.equal(new["label"][1:], channels)
    assert torch.equal(new["pred"][0], 1 - old["pred"].amax(0))  # background: no channel set
    assert torch.allclose(_dice(new["pred"], new["label"], False), _dice(old["pred"], channels, True))


def test_a_reference_that_fits_no_convention_is_one_clear_error():
    logits, _ = _logits_and_labels(channels=3, classes=2)
    with pytest.raises(ValueError, match="label has 2 channels: expected a label map"):
        OneHotForMetricsd("pred", rule="softmax")({"pred": logits, "label": torch.zeros(2, 16, 12)})
    with pytest.raises(ValueError, match="rule must be one of"):
        OneHotForMetricsd("pred", rule="argmax")
