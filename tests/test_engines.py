"""Engine additions: gradient clipping inside SupervisedTrainer, per-image confusion-matrix metrics."""

from __future__ import annotations

import pytest
import torch
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.handlers import from_engine
from torch import nn

from common.engines import GradientClipping, PerImageConfusionMatrix


def _trainer(accumulation_steps=1, iterations=4):
    torch.manual_seed(0)
    net = nn.Conv2d(1, 1, 3, padding=1)
    data = [{"image": torch.randn(2, 1, 8, 8) * 100, "label": torch.ones(2, 1, 8, 8) * 100} for _ in range(iterations)]
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=data,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=1e-6),
        loss_function=nn.MSELoss(),
        accumulation_steps=accumulation_steps,
    )
    return trainer, net


def test_gradients_are_clipped_before_each_step():
    trainer, net = _trainer()
    clipping = GradientClipping(max_norm=1.0)
    clipping.attach(trainer)
    norms = []
    trainer.add_event_handler(
        IterationEvents.BACKWARD_COMPLETED,
        lambda e: norms.append(torch.norm(torch.stack([p.grad.norm() for p in net.parameters()])).item()),
    )
    trainer.run()
    # the probe runs after the clipping handler: every gradient the optimiser sees has norm <= 1
    assert len(norms) == 4 and all(n <= 1.0 + 1e-5 for n in norms)
    assert clipping.last_norm > 1.0  # the raw gradients were far larger


def test_with_accumulation_only_stepping_iterations_are_clipped():
    trainer, _ = _trainer(accumulation_steps=2)
    clipping = GradientClipping(max_norm=1.0)
    clipping.attach(trainer)
    calls = []
    trainer.add_event_handler(IterationEvents.BACKWARD_COMPLETED, lambda e: calls.append(clipping.last_norm))
    trainer.run()
    assert calls[0] is None and calls[1] is not None  # nothing clipped until the first optimiser step
    with pytest.raises(ValueError):
        GradientClipping(max_norm=0)


def test_per_image_sensitivity_and_specificity_by_hand():
    # image 1: 4 positives, 2 found, 2 false positives among 12 negatives; image 2: 2 positives, both found, none false
    pred1, label1 = torch.zeros(1, 4, 4), torch.zeros(1, 4, 4)
    label1[0, 0, :] = 1
    pred1[0, 0, :2] = 1
    pred1[0, 3, :2] = 1
    pred2, label2 = torch.zeros(1, 4, 4), torch.zeros(1, 4, 4)
    label2[0, 1, :2] = 1
    pred2[0, 1, :2] = 1
    batches = [{"image": p[None], "label": lab[None]} for p, lab in ((pred1, label1), (pred2, label2))]
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=batches, network=nn.Identity(), decollate=True
    )
    for name in ("sensitivity", "specificity"):
        PerImageConfusionMatrix(name, output_transform=from_engine(["pred", "label"])).attach(evaluator, f"val_{name}")
    evaluator.run()
    sensitivity = evaluator.state.metric_details["val_sensitivity"]
    specificity = evaluator.state.metric_details["val_specificity"]
    assert sensitivity.flatten().tolist() == pytest.approx([0.5, 1.0])
    assert specificity.flatten().tolist() == pytest.approx([10 / 12, 1.0])
    assert evaluator.state.metrics["val_sensitivity"] == pytest.approx(0.75)
