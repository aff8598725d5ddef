"""Nothing lost: atomic checkpoint writes, and a training run killed mid-epoch that resumes from its last training
state and ends where an uninterrupted run ends."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from bundle_helpers import REPO_ROOT
from ignite.engine import Engine

from common.datasets import make_synthetic_dataset
from common.engines import AtomicCheckpointSaver, latest_training_state

BUNDLE = "conv_lora_sam_segmentation"
EPOCHS, TRAIN_CASES = 4, 6


def test_a_crash_while_saving_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    weights = torch.nn.Linear(3, 2)
    engine = Engine(lambda engine, batch: None)
    engine.state.metrics = {"score": 0.5}
    saver = AtomicCheckpointSaver(
        save_dir=str(tmp_path), save_dict={"model": weights}, save_key_metric=True, key_metric_name="score",
        key_metric_filename="model.pt",
    )  # fmt: skip
    saver.attach(engine)
    engine.state.epoch, engine.state.iteration = 1, 1
    saver._key_metric_checkpoint(engine)
    first = torch.load(tmp_path / "model.pt", weights_only=True)
    assert torch.equal(first["weight"], weights.weight)

    real_save = torch.save

    def crash_half_way(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")  # what a killed process leaves behind
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash_half_way)
    with torch.no_grad():
        weights.weight.add_(1.0)
    engine.state.metrics = {"score": 0.9}  # better: the saver replaces model.pt
    engine.state.epoch, engine.state.iteration = 2, 2
    with pytest.raises(KeyboardInterrupt):
        saver._key_metric_checkpoint(engine)
    monkeypatch.setattr(torch, "save", real_save)
    kept = torch.load(tmp_path / "model.pt", weights_only=True)  # still the complete first checkpoint
    assert torch.equal(kept["weight"], first["weight"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temporary file left either
    engine.state.metrics = {"score": 0.95}
    saver._key_metric_checkpoint(engine)  # the next better model is saved as usual
    assert torch.equal(torch.load(tmp_path / "model.pt", weights_only=True)["weight"], weights.weight)


def _train_command(bundle: Path, data: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "monai.bundle", "run", "--config_file", "['configs/train.json','configs/pictures_2d.json']",
        "--bundle_root", str(bundle),
        "--meta_file", "configs/metadata.json", "--logging_file", "configs/logging.conf",
        "--backbone", "sam_vit_test", "--dataset_dir", str(data), "--max_epochs", str(EPOCHS), "--num_workers", "0",
        "--batch_size", "1", *extra,
    ]  # fmt: skip


def _copy(tmp_path: Path, name: str) -> Path:
    bundle = tmp_path / name
    shutil.copytree(REPO_ROOT / "bundles" / BUNDLE, bundle)
    return bundle


def _final_state(bundle: Path) -> dict:
    path = latest_training_state(bundle / "models")
    assert path is not None and path.name == f"training_state_checkpoint_epoch={EPOCHS}.pt"
    return torch.load(path, weights_only=True)


def test_a_run_killed_mid_epoch_resumes_and_ends_like_an_uninterrupted_run(tmp_path):
    data = tmp_path / "data"
    make_synthetic_dataset(data, spatial_dims=2, num_classes=1, num_train=TRAIN_CASES, num_val=2, num_test=1)

    whole = _copy(tmp_path, "uninterrupted")
    done = subprocess.run(_train_command(whole, data), cwd=whole, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]

    killed = _copy(tmp_path, "killed")
    log = tmp_path / "killed.log"
    with open(log, "w") as out:
        process = subprocess.Popen(_train_command(killed, data), cwd=killed, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600
        # kill it in the middle of epoch 3, after the state of epoch 2 was saved
        while "Epoch: 3/4, Iter: 3/" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert latest_training_state(killed / "models").name == "training_state_checkpoint_epoch=2.pt"
    resumed = subprocess.run(
        _train_command(killed, data, "--resume", "True"), cwd=killed, capture_output=True, text=True, timeout=900
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (
        "resumed from training_state_checkpoint_epoch=2.pt: epoch 2, iteration 12 done"
        in resumed.stdout + resumed.stderr
    )
    assert "Epoch: 1/4" not in resumed.stdout + resumed.stderr  # epochs 1-2 were not trained again

    expected, actual = _final_state(whole), _final_state(killed)
    # the counters, the optimiser's step counts and the schedule are those of the uninterrupted run
    assert actual["trainer"]["iteration"] == expected["trainer"]["iteration"] == EPOCHS * TRAIN_CASES
    # (parameters that always get a gradient have stepped at every optimiser step; Conv-LoRA experts not chosen in
    # an iteration get none, so their counts depend on the routing)
    steps = [max(float(s["step"]) for s in state["optimizer"]["state"].values()) for state in (expected, actual)]
    assert steps[0] == steps[1] == EPOCHS * TRAIN_CASES / 2  # accumulation_steps = 2
    assert actual["lr_scheduler"] == expected["lr_scheduler"]
    # the precision the run computed in is part of the state (a resumed run keeps it)
    assert actual["precision"] == expected["precision"] and set(actual["precision"]) == {"cpu_bfloat16"}
    # the weights and the best validation score end close to those of the uninterrupted run (the shuffling and
    # augmentation streams after the restart differ)
    for key, value in expected["model"].items():
        assert torch.allclose(actual["model"][key], value, atol=0.05), key
    assert abs(actual["best_metric"]["best_metric"] - expected["best_metric"]["best_metric"]) < 0.1


def test_a_run_that_ends_before_its_first_validation_still_leaves_its_model(tmp_path, capfd):
    # S-SAM's paper setting validates every 5 epochs: a 1-epoch run used to end without models/model.pt, and a
    # model.pt of an earlier run (or the shipped adapter) would have stayed there, not matching what was just trained
    from bundle_helpers import bundle_and_synthetic_data, bundle_workflow, run_workflow

    from common.adapters import adapter_state_dict

    name = "s_sam_text_prompted_segmentation"
    bundle, data = bundle_and_synthetic_data(name, tmp_path)
    stale = bundle / "models" / "model.pt"
    stale.write_bytes(b"an older run's weights")
    workflow = bundle_workflow(
        bundle / "configs", ["train.json"], "train", bundle_root=str(bundle), backbone="sam_vit_test",
        dataset_dir=str(data), num_workers=0, batch_size=1, max_epochs=1, val_interval=5,
    )  # fmt: skip
    run_workflow(workflow)
    saved = torch.load(stale, weights_only=True)
    trained = adapter_state_dict(workflow.parser.get_parsed_content("network"))
    assert saved.keys() == trained.keys() and all(torch.equal(saved[k], trained[k]) for k in saved)
    out = capfd.readouterr().out  # the bundle's logging.conf logs to stdout
    assert "ended before any validation" in out
    # nothing lost: the file that was there is kept under another name, and the log says so
    assert (bundle / "models" / "model_before_training.pt").read_bytes() == b"an older run's weights"
    assert "kept as model_before_training.pt" in out


def test_training_never_replaces_the_shipped_adapter_without_keeping_it(tmp_path, capfd):
    from bundle_helpers import bundle_and_synthetic_data, bundle_workflow, run_workflow

    name = "balr_sam_segmentation"
    bundle, data = bundle_and_synthetic_data(name, tmp_path)
    shipped = (REPO_ROOT / "bundles" / name / "models" / "model.pt").read_bytes()
    (bundle / "models" / "model.pt").write_bytes(shipped)
    settings = dict(
        bundle_root=str(bundle), backbone="sam_vit_test", dataset_dir=str(data), num_workers=0, batch_size=1,
        max_epochs=1, val_interval=1,
    )  # fmt: skip
    for _ in range(2):  # two new runs: the second keeps the first's model beside the shipped one
        run_workflow(bundle_workflow(bundle / "configs", ["train.json"], "train", **settings))
    models = bundle / "models"
    assert (models / "model_before_training.pt").read_bytes() == shipped
    assert (models / "model_before_training_2.pt").exists() and (models / "model.pt").exists()
    assert (models / "model.pt").read_bytes() != shipped
    assert capfd.readouterr().out.count("is kept as model_before_training") == 2


def test_ctrl_c_stops_training_with_one_line_saying_how_to_resume(tmp_path, capfd):
    from bundle_helpers import bundle_and_synthetic_data, bundle_workflow
    from ignite.engine import Events

    bundle, data = bundle_and_synthetic_data("balr_sam_segmentation", tmp_path)
    workflow = bundle_workflow(
        bundle / "configs", ["train.json"], "train", bundle_root=str(bundle), backbone="sam_vit_test",
        dataset_dir=str(data), num_workers=0, batch_size=1, max_epochs=3, val_interval=1,
    )  # fmt: skip
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    epoch_length = len(trainer.data_loader)

    def ctrl_c(_engine):
        raise KeyboardInterrupt

    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=epoch_length + 1), ctrl_c)  # early in epoch 2
    with pytest.raises(SystemExit) as stop:
        workflow.run()
    assert stop.value.code == 130
    err = [line for line in capfd.readouterr().err.splitlines() if line.startswith("training stopped")]
    assert err == [
        f"training stopped at epoch 2, iteration {epoch_length + 1}: the newest training state is "
        f"{bundle / 'models' / 'training_state_checkpoint_epoch=1.pt'}; run the same command with --resume True to "
        "continue"
    ]
