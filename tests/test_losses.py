"""Composite loss and focal Tversky against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from common.losses import CompositeSegmentationLoss, FocalTverskyLoss, soft_iou

# Logits chosen so that sigmoid(±log 3) = 0.75 / 0.25 and sigmoid(0) = 0.5.
L3 = math.log(3.0)


def _case():
    logits = torch.tensor([[[[L3, -L3], [0.0, L3]]]])  # p = [[0.75, 0.25], [0.5, 0.75]]
    target = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    return logits, target


def test_focal_tversky_by_hand():
    logits, target = _case()
    # TP = 0.75 + 0.5 = 1.25; FN = 0.25 + 0.5 = 0.75; FP = 0.25 + 0.75 = 1.0
    ti = (1.25 + 1) / (1.25 + 0.7 * 0.75 + 0.3 * 1.0 + 1)
    expected = (1 - ti) ** 0.75
    loss = FocalTverskyLoss(fn_weight=0.7, fp_weight=0.3, gamma=0.75, smooth=1.0)(logits, target)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_focal_tversky_weights_false_negatives_and_false_positives_as_named():
    target = torch.tensor([[[[1.0, 1.0, 0.0, 0.0]]]])
    misses_foreground = torch.tensor([[[[-20.0, -20.0, -20.0, -20.0]]]])  # 2 FN
    adds_foreground = torch.tensor([[[[20.0, 20.0, 20.0, 20.0]]]])  # 2 FP
    loss = FocalTverskyLoss(fn_weight=0.9, fp_weight=0.1, gamma=1.0, smooth=0.0)
    assert loss(misses_foreground, target).item() > loss(adds_foreground, target).item()


def test_focal_tversky_per_sample_and_batch_reductions():
    logits = torch.randn(3, 2, 5, 5)
    target = (torch.rand(3, 2, 5, 5) > 0.5).float()
    per_sample = FocalTverskyLoss(reduction="none")(logits, target)
    assert per_sample.shape == (3, 2)
    assert FocalTverskyLoss()(logits, target).item() == pytest.approx(per_sample.mean().item(), rel=1e-6)
    assert FocalTverskyLoss(batch=True, reduction="none")(logits, target).shape == (2,)


def test_focal_tversky_gradient_is_finite_for_a_perfect_prediction():
    target = torch.tensor([[[[1.0, 0.0]]]])
    logits = torch.tensor([[[[30.0, -30.0]]]], requires_grad=True)
    FocalTverskyLoss(smooth=0.0)(logits, target).backward()
    assert torch.isfinite(logits.grad).all()


def test_composite_by_hand():
    logits, target = _case()
    p = torch.sigmoid(logits)
    bce = -(target * p.log() + (1 - target) * (1 - p).log()).mean().item()
    dice = 1 - (2 * 1.25 + 1) / ((0.75 + 0.25 + 0.5 + 0.75) + 2 + 1)
    ti = (1.25 + 1) / (1.25 + 0.7 * 0.75 + 0.3 * 1.0 + 1)
    expected = bce + dice + (1 - ti) ** 0.75
    assert CompositeSegmentationLoss()(logits, target).item() == pytest.approx(expected, rel=1e-5)
    weighted = CompositeSegmentationLoss(bce_weight=2.0, dice_weight=0.0, focal_tversky_weight=0.5)
    assert weighted(logits, target).item() == pytest.approx(2 * bce + 0.5 * (1 - ti) ** 0.75, rel=1e-5)


def test_composite_iou_term():
    logits, target = _case()
    # thresholded prediction [[1, 0], [0, 1]] vs target [[1, 0], [1, 0]]: IoU = 1 / 3
    assert soft_iou(logits, target).item() == pytest.approx(1 / 3)
    loss = CompositeSegmentationLoss()
    with_iou = loss(logits, target, iou_prediction=torch.tensor([[0.9]]))
    assert (with_iou - loss(logits, target)).item() == pytest.approx(0.1 * abs(0.9 - 1 / 3), rel=1e-5)


def test_composite_multilabel_and_shape_check():
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = (torch.rand(2, 3, 8, 8) > 0.5).float()
    loss = CompositeSegmentationLoss()(logits, target)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(logits.grad).all()
    with pytest.raises(ValueError, match="same shape"):
        CompositeSegmentationLoss()(logits, target[:, :1])


def test_composite_is_lower_for_better_predictions():
    target = (torch.rand(2, 1, 16, 16) > 0.5).float()
    good = (target * 2 - 1) * 4
    assert CompositeSegmentationLoss()(good, target) < CompositeSegmentationLoss()(-good, target)


def test_iou_term_reads_the_network_prediction():
    class Net(torch.nn.Module):
        last_iou_prediction = torch.tensor([[0.9]])

    logits, target = _case()
    net = Net()
    loss = CompositeSegmentationLoss(iou_source=net)
    assert not list(loss.parameters()) and "_iou_source" not in dict(loss.named_modules())
    expected = CompositeSegmentationLoss()(logits, target) + 0.1 * abs(0.9 - 1 / 3)
    assert loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-5)


def test_boundary_loss_weight_ramps_linearly_and_zero_weight_skips_it():
    from monai.losses import BoundaryLoss, DiceCELoss

    from common.losses import WithBoundaryLoss

    torch.manual_seed(0)
    logits = torch.randn(2, 1, 16, 16)
    target = (torch.rand(2, 1, 16, 16) > 0.7).float()
    region, boundary = DiceCELoss(sigmoid=True), BoundaryLoss(sigmoid=True)
    loss = WithBoundaryLoss(region, boundary, max_weight=0.3, ramp_iterations=4)
    weights = []
    for _ in range(6):
        weights.append(loss.boundary_weight)
        value = loss(logits, target)
        expected = region(logits, target) + weights[-1] * boundary(logits, target)
        assert torch.allclose(value, expected)
    assert weights == pytest.approx([0.0, 0.075, 0.15, 0.225, 0.3, 0.3])
    loss.eval()
    loss(logits, target)
    assert int(loss.step) == 6  # evaluation calls do not advance the ramp
    assert "step" in loss.state_dict()  # resumable

    class Exploding(torch.nn.Module):
        def forward(self, *_):
            raise AssertionError("the boundary loss must not run at weight 0")

    off = WithBoundaryLoss(region, Exploding(), max_weight=0.0)
    assert torch.allclose(off(logits, target), region(logits, target))
