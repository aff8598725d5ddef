"""Engine additions: gradient clipping inside SupervisedTrainer, per-image confusion-matrix metrics."""

from __future__ import annotations

import pytest
import torch
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.handlers import from_engine
from torch import nn

from common.engines import GradientClipping
from common.metrics import PerImageConfusionMatrix


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


def test_empty_class_false_positive_rate_scores_only_absent_classes():
    from common.metrics import EmptyClassFalsePositiveRate

    # 2 cases, background + 2 classes: case 0 has class 1 only, case 1 has neither
    y = torch.zeros(2, 3, 4, 4)
    y[0, 1, 0, 0] = 1
    y[:, 0] = 1 - y[:, 1:].amax(1)
    pred = torch.zeros(2, 3, 4, 4)
    pred[1, 2, 1, 1] = 1  # case 1 invents class 2
    metric = EmptyClassFalsePositiveRate()
    values = metric(pred, y)
    assert torch.isnan(values[0, 0])  # class present: Dice's business
    assert values[0, 1].item() == 0.0 and values[1, 0].item() == 0.0 and values[1, 1].item() == 1.0
    assert metric.aggregate().item() == pytest.approx((0.0 + 0.5) / 2)  # class 1: 0 of 1, class 2: 1 of 2
    full = torch.zeros(1, 3, 4, 4)
    full[0, 1, 0, 0] = full[0, 2, 1, 1] = 1
    full[:, 0] = 1 - full[:, 1:].amax(1)
    every_class_present = EmptyClassFalsePositiveRate()
    every_class_present(full, full)
    assert torch.isnan(every_class_present.aggregate())  # nothing to score: undefined, not a perfect 0


def test_hausdorff_distance_in_millimetres_uses_each_case_spacing():
    from monai.data import MetaTensor

    from common.metrics import HausdorffDistanceMm

    y = torch.zeros(2, 8, 8, 8)
    y[1, 2:4, 2:4, 2:4] = 1
    y[0] = 1 - y[1]
    pred = torch.zeros_like(y)
    pred[1, 2:4, 2:4, 5:7] = 1  # shifted by 3 voxels along the third axis
    pred[0] = 1 - pred[1]
    handler = HausdorffDistanceMm(include_background=False, percentile=None)
    anisotropic = MetaTensor(y, affine=torch.diag(torch.tensor([1.0, 1.0, 2.5, 1.0])))
    handler.update(([pred, pred], [anisotropic, y]))  # second case without metadata: voxels
    assert handler.metric_fn.get_buffer()[:, 0].tolist() == pytest.approx([7.5, 3.0])
    handler.metric_fn.reset()
    empty = torch.zeros_like(pred)
    empty[0] = 1
    handler.update(([empty], [anisotropic]))  # nothing predicted: undefined, not 0 mm
    assert not torch.isfinite(handler.metric_fn.aggregate()).any()


def test_time_budget_stops_training_after_its_minutes():
    import time

    from ignite.engine import Engine, Events

    from common.engines import TimeBudget

    def slow_step(engine, batch):
        time.sleep(0.02)

    engine = Engine(slow_step)
    completed = []
    engine.add_event_handler(Events.COMPLETED, lambda e: completed.append(e.state.iteration))
    TimeBudget(minutes=0.1 / 60).attach(engine)  # 0.1 s
    engine.run(range(1000), max_epochs=1)
    assert 3 <= engine.state.iteration < 50 and completed == [engine.state.iteration]
    unlimited = Engine(lambda e, b: None)
    TimeBudget(None).attach(unlimited)
    unlimited.run(range(20), max_epochs=2)
    assert unlimited.state.iteration == 40
