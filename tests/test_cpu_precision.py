"""The bundles' ``amp`` switch on CPU: bfloat16 autocast where the CPU has it natively, float32 where it does not, the
same label maps either way, a default that never changes between runs, and a resumed training run that keeps it."""

from __future__ import annotations

import pytest
import torch
from bundle_helpers import TEST_BACKBONES, bundle_and_synthetic_data, short_training

from common.adapters import adapter_state_dict
from common.engines import SliceBatchInferer, precision
from common.networks import Sam2LoraNet

NATIVE = frozenset({"avx512f", "avx512_bf16"})


@pytest.fixture
def native_bf16(monkeypatch):
    """A CPU with native bfloat16 as far as the code can tell (autocast itself runs on any CPU, emulated or not)."""
    monkeypatch.setattr(precision, "cpu_flags", lambda: NATIVE)
    monkeypatch.delenv(precision.PRECISION_ENV, raising=False)


@pytest.fixture
def no_native_bf16(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    monkeypatch.delenv(precision.PRECISION_ENV, raising=False)
    # said once per process: on a CPU without native bfloat16 an earlier test of the session has said it already
    precision._log_no_native_bf16.cache_clear()


def _train(name: str, tmp_path, amp: bool, iterations: int = 2):
    bundle, data = bundle_and_synthetic_data(name, tmp_path)
    parser = short_training(bundle, data, name, iterations, amp=amp)
    trainer = parser.get_parsed_content("train#trainer")
    network = parser.get_parsed_content("network")
    seen = {}

    def spy(module, args, output):
        seen.setdefault("autocast", torch.is_autocast_enabled("cpu"))
        seen.setdefault("output_dtype", output.dtype)

    network.register_forward_hook(spy)
    trainer.run()
    return trainer, adapter_state_dict(network), seen


def test_capability_is_read_from_the_cpu_flags(monkeypatch):
    for flags, native in ((NATIVE, True), (frozenset({"amx_bf16"}), True), (frozenset({"avx512f", "avx2"}), False)):
        monkeypatch.setattr(precision, "cpu_flags", lambda flags=flags: flags)
        assert precision.cpu_has_native_bf16() is native


def test_without_native_bf16_amp_stays_float32(no_native_bf16, tmp_path, caplog):
    name = "sam2lora_fundus_segmentation"
    with caplog.at_level("INFO", logger="common.engines.precision"):
        assert precision.choose_amp("cpu") is False
        # asked for explicitly, amp still runs float32 (emulated bfloat16 is slower) and the run is the float32 run
        trainer, weights, seen = _train(name, tmp_path / "amp", amp=True)
    assert "no native bfloat16" in caplog.text
    assert trainer.cpu_bf16 is False and seen["autocast"] is False and seen["output_dtype"] == torch.float32
    _, float32_weights, _ = _train(name, tmp_path / "float32", amp=False)
    assert all(torch.equal(weights[k], float32_weights[k]) for k in weights)


@pytest.mark.parametrize("name", sorted(TEST_BACKBONES))
def test_amp_trains_under_bf16_autocast_with_float32_weights_and_loss(native_bf16, name, tmp_path):
    trainer, weights, seen = _train(name, tmp_path, amp=True)
    assert trainer.cpu_bf16 is True and trainer.scaler is None  # bfloat16 needs no gradient scaler
    assert seen["autocast"] is True
    assert seen["output_dtype"] == torch.float32  # logits (and so the loss) in float32
    floating = [w for w in weights.values() if w.is_floating_point()]  # not BatchNorm's batch counter
    assert floating and all(w.dtype == torch.float32 for w in floating)
    assert all(torch.isfinite(w).all() for w in floating)
    state = trainer.optimizer.state_dict()["state"]
    assert state and all(v.dtype == torch.float32 for s in state.values() for v in s.values() if v.is_floating_point())
    assert isinstance(trainer.loss_function, precision._Float32Loss)


def test_float32_loss_ignores_autocast():
    seen = {}

    def loss(prediction, target):
        seen["dtype"], seen["autocast"] = prediction.dtype, torch.is_autocast_enabled("cpu")
        return (prediction - target).abs().mean()

    wrapped = precision._Float32Loss(loss)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = wrapped(torch.ones(2, dtype=torch.bfloat16), torch.zeros(2))
    assert seen == {"dtype": torch.float32, "autocast": False} and value.dtype == torch.float32


def test_bf16_inference_gives_the_float32_label_maps(native_bf16):
    """The same network and volume through the inferer in float32 and bfloat16: the thresholded label maps agree on
    all but a sliver of pixels near the decision boundary (a wrong autocast, e.g. float16 or a truncated output, fails
    this), and the bfloat16 logits are really different numbers (the path was taken)."""
    torch.manual_seed(0)
    network = Sam2LoraNet("sam2.1_hiera_test", num_classes=2).eval()
    with torch.no_grad():
        for p in network.parameters():
            p.add_(0.02 * torch.randn_like(p))  # a trained-looking network, not an initial one with all-zero LoRA
    volume = torch.rand(1, 1, 40, 48, 6)
    volume[:, :, 10:30, 12:36] += 1.0
    with torch.no_grad():
        float32 = SliceBatchInferer(batch_size=3, amp=False)(volume, network)
        bfloat16 = SliceBatchInferer(batch_size=3, amp=True)(volume, network)
    assert float32.dtype == bfloat16.dtype == torch.float32
    assert not torch.equal(float32, bfloat16)
    labels32, labels16 = float32 > 0, bfloat16 > 0
    assert 0.05 < labels32.float().mean() < 0.95  # both classes present: agreement is not trivial
    assert (labels32 == labels16).float().mean() > 0.995
    assert (float32 - bfloat16).abs().max() < 0.1 * float32.abs().max()


def test_choose_amp_follows_the_cpu_capability_and_never_times(native_bf16, monkeypatch, caplog):
    # a choice by timing flipped between runs on a busy machine (34 voxels of one volume differed): no clock is read
    import time

    def no_clock():
        raise AssertionError("the precision choice read a clock")

    monkeypatch.setattr(time, "perf_counter", no_clock)
    precision._log_choice.cache_clear()
    with caplog.at_level("INFO", logger="common.engines.precision"):
        assert all(precision.choose_amp("cpu") is True for _ in range(3))
    assert caplog.text.count("CPU precision: bfloat16") == 1  # logged once per process
    assert precision.choose_amp("cuda") is True
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512f", "avx2"}))
    assert precision.choose_amp("cpu") is False


def test_environment_forces_the_precision(native_bf16, monkeypatch):
    monkeypatch.setenv(precision.PRECISION_ENV, "float32")
    assert precision.choose_amp("cpu") is False
    monkeypatch.setenv(precision.PRECISION_ENV, "bfloat16")
    assert precision.choose_amp("cpu") is True
    monkeypatch.setenv(precision.PRECISION_ENV, "half")
    with pytest.raises(ValueError, match="float32' or 'bfloat16"):
        precision.choose_amp("cpu")


def test_a_resumed_run_keeps_the_precision_its_training_state_records(native_bf16, tmp_path, monkeypatch, caplog):
    from common.engines import PrecisionRecord

    trainer, _, _ = _train("sam2lora_fundus_segmentation", tmp_path, amp=False, iterations=1)
    record = PrecisionRecord(trainer)
    assert record.state_dict() == {"cpu_bfloat16": False}
    with caplog.at_level("INFO", logger="common.engines.checkpointing"):
        record.load_state_dict({"cpu_bfloat16": True})  # the run was computed in bfloat16 before it stopped
    assert trainer.cpu_bf16 is True and isinstance(trainer.loss_function, precision._Float32Loss)
    assert "resumed in bfloat16" in caplog.text
    monkeypatch.setenv(precision.PRECISION_ENV, "bfloat16")
    record.load_state_dict({"cpu_bfloat16": False})  # an explicit setting wins over the record, with a warning
    assert trainer.cpu_bf16 is True and "makes the resumed run bfloat16" in caplog.text


def test_bundles_default_amp_is_the_capability_choice():
    import json
    from pathlib import Path

    bundles = Path(__file__).resolve().parents[1] / "bundles"
    for config in sorted(bundles.glob("*/configs/*.json")):
        values = json.loads(config.read_text())
        if config.name in ("train.json", "inference.json"):
            assert values["amp"] == "$common.engines.choose_amp(@device)", config
        text = config.read_text()
        assert '"SupervisedTrainer"' not in text and '"SupervisedEvaluator"' not in text, config  # CUDA-only amp


def test_conv_lora_multiclass_matching_loss_under_bf16_autocast():
    """Conv-LoRA's multi-class loss reads the query logits the network kept (not its output): they must be float32
    too, or the float32 loss meets bfloat16 matrices (found by common.benchmark.experiments.cpu_speed)."""
    from common.losses import MaskClassificationLoss
    from common.networks import ConvLoraSamNet

    network = ConvLoraSamNet("sam_vit_test", checkpoint=None, num_classes=2, num_queries=5).train()
    loss = precision._Float32Loss(MaskClassificationLoss(network, num_classes=2))
    label = torch.zeros(2, 1, 32, 32)
    label[:, :, 4:14, 4:14], label[:, :, 18:28, 18:28] = 1, 2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(network(torch.rand(2, 1, 32, 32)), label)
        value.backward()
    assert network.last_class_logits.dtype == network.last_mask_logits.dtype == torch.float32
    assert value.dtype == torch.float32 and torch.isfinite(value)
