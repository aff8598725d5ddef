"""Parts of ``python -m common.benchmark.experiments.cpu_speed`` that decide what its table says: the CPU peak arithmetic and the
"today" memory layout (the command itself runs on the real data and weights: docs/cpu_speed.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from common.benchmark.experiments import cpu_speed

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "model, flags, per_cycle",
    [
        ("Intel(R) Xeon(R) Platinum 8488C", {"avx512f", "avx512_bf16", "fma"}, 64),
        ("AMD EPYC 9R14", {"avx512f", "avx512_bf16", "fma", "avx2"}, 32),
        ("AMD EPYC 7R13", {"avx2", "fma"}, 32),
        ("Some CPU", {"sse4_2"}, 8),
    ],
)
def test_peak_is_cores_times_clock_times_flop_per_cycle(monkeypatch, model, flags, per_cycle):
    monkeypatch.setattr(cpu_speed, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(cpu_speed, "cpu_model", lambda: model)
    monkeypatch.setattr(cpu_speed, "_cpu_ghz", lambda: 2.5)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    peak = cpu_speed.cpu_peak_gflops()
    assert peak["flop_per_cycle_float32"] == per_cycle
    assert peak["peak_gflops_float32"] == pytest.approx(2 * 2.5 * per_cycle)
    assert f"{per_cycle} FLOP/cycle" in peak["arithmetic"] and "2 cores" in peak["arithmetic"]


def test_today_layout_is_nchw_and_restored_afterwards():
    from common.backbones import build_backbone

    def neck_conv_is_channels_last() -> bool:
        weight = build_backbone("litemedsam", checkpoint=None).image_encoder.neck[2].weight  # the 3×3 convolution
        return weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()

    assert neck_conv_is_channels_last()
    with pytest.raises(RuntimeError), cpu_speed.released_memory_layout():
        assert not neck_conv_is_channels_last()
        raise RuntimeError("the builder must come back even when a measurement fails")
    assert neck_conv_is_channels_last()


def test_channels_last_gives_the_released_numbers():
    """The layout is a speed choice only: the same output as the NCHW build, to float32 rounding."""
    from common.backbones import build_backbone

    fast = build_backbone("litemedsam", checkpoint=None, input_size=128).eval()
    with cpu_speed.released_memory_layout():
        released = build_backbone("litemedsam", checkpoint=None, input_size=128).eval()
    released.load_state_dict(fast.state_dict())
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        assert torch.allclose(fast.image_encoder(x), released.image_encoder(x), atol=1e-5)


def test_accuracy_only_keeps_the_earlier_measurements_and_adds_the_pair(tmp_path, monkeypatch, capsys):
    earlier = json.loads((REPO_ROOT / "docs" / "cpu_speed.json").read_text())
    earlier_file = tmp_path / "earlier.json"
    earlier_file.write_text(json.dumps(earlier))
    monkeypatch.delenv(cpu_speed.PRECISION_ENV, raising=False)  # the suite pins it; the command refuses it
    with pytest.raises(SystemExit):  # nothing to continue from
        cpu_speed.main(["--accuracy_only", "--accuracy_iterations", "2", "--output", str(tmp_path / "r")])
    assert "--accuracy_only needs --continue_from" in capsys.readouterr().err
    asked = {}

    def pair(data_dir, method, iterations, size, cases, val_every, seed, control_threads):
        asked.update(method=method, iterations=iterations, size=size, cases=cases, val_every=val_every, seed=seed,
                     control_threads=control_threads)  # fmt: skip
        return {"float32": {"val_mean_dice": 0.41, "train_seconds": 9.0, "curve": [[4, 0.21], [7, 0.41]],
                            "threads": 2},
                "bfloat16": {"val_mean_dice": 0.40, "train_seconds": 5.0, "curve": [[4, 0.26], [7, 0.40]],
                             "threads": 2},
                "float32_control": {"val_mean_dice": 0.44, "train_seconds": 15.0, "curve": [[4, 0.19], [7, 0.44]],
                                    "threads": 1},
                "difference": 0.01, "control_difference": 0.03, "method": method, "iterations": iterations,
                "input_size": size, "validation_cases": cases, "seed": seed}  # fmt: skip

    monkeypatch.setattr(cpu_speed, "_accuracy_pair", pair)
    monkeypatch.setattr(cpu_speed, "prepare_dataset", lambda name, root, work: work)
    code = cpu_speed.main(["--continue_from", str(earlier_file), "--accuracy_only", "--accuracy_iterations", "7",
                           "--accuracy_val_cases", "3", "--accuracy_val_every", "4", "--accuracy_seed", "3",
                           "--accuracy_control_threads", "1", "--work_dir", str(tmp_path),
                           "--output", str(tmp_path / "r")])  # fmt: skip
    assert code == 0 and asked == {"method": "balr_sam", "iterations": 7, "size": 64, "cases": 3, "val_every": 4,
                                 "seed": 3, "control_threads": 1}
    report = json.loads((tmp_path / "r.json").read_text())
    # every earlier measurement kept as it was (the replaced pair too), the pair added with its own date and command
    kept = {k: v for k, v in report.items() if k not in ("accuracy", "earlier_accuracy")}
    assert kept == {k: v for k, v in earlier.items() if k not in ("accuracy", "earlier_accuracy")}
    assert report["earlier_accuracy"][0] == earlier["accuracy"]
    assert report["accuracy"]["command"].startswith("python -m common.benchmark.experiments.cpu_speed --continue_from")
    text = (tmp_path / "r.md").read_text()
    assert "BALR-SAM on the hippocampus, 7 iterations seeded 3 at 64²" in text
    assert "| bfloat16 on 2 threads | 0.400 |" in text and "| float32 on 1 thread (control) | 0.440 | 15 |" in text
    assert "on 1 thread instead of 2 threads" in text and "ends 0.030 from it" in text
    assert "| 4 | 0.210 | 0.260 | 0.190 | 0.050 |" in text and "| 7 | 0.410 | 0.400 | 0.440 | 0.010 |" in text
    replaced = text.split("An earlier pair")[1]
    shown = earlier["accuracy"]
    assert f"{shown['iterations']} iterations seeded {shown.get('seed', 0)} at {shown['input_size']}²" in replaced
    assert "initial plateau" not in text


@pytest.mark.parametrize("bf16, says_favour", [(0.30, True), (0.24, False), (0.28, False)])
def test_a_pair_gap_over_the_allowance_says_which_way_it_goes(tmp_path, bf16, says_favour):
    report = json.loads((REPO_ROOT / "docs" / "cpu_speed.json").read_text())
    report["accuracy"].update(float32={"val_mean_dice": 0.27, "train_seconds": 9.0},
                              bfloat16={"val_mean_dice": bf16, "train_seconds": 5.0},
                              difference=abs(bf16 - 0.27))  # fmt: skip
    text = cpu_speed.write_report(report, tmp_path / "r")
    assert ("in bfloat16's favour (+0.030)" in text) is says_favour
    assert f"Difference: {abs(bf16 - 0.27):.3f}" in text


def test_the_control_run_trains_on_its_thread_count_and_threads_come_back(monkeypatch):
    """The pair's float32 control runs on the asked thread count (its only difference from the float32 run) and the
    process gets its threads back afterwards, also when that run fails."""
    import common.benchmark.accuracy as accuracy

    threads = torch.get_num_threads()
    seen, failing = [], {"control": False}

    def train(method, dataset, run_dir, data_dir, settings):
        seen.append((settings.overrides["amp"], torch.get_num_threads(), settings.overrides["initialize"]))
        if failing["control"] and len(seen) == 3:
            raise RuntimeError("the control run failed")
        return {"learning_curve": {"metrics": {"val_mean_dice": [[5, 0.5 + 0.1 * len(seen)]]}},
                "key_metric": "val_mean_dice", "train_seconds": 1.0}  # fmt: skip

    monkeypatch.setattr(accuracy, "train", train)
    monkeypatch.setattr("shutil.copytree", lambda *args, **kwargs: None)
    pair = cpu_speed._accuracy_pair(Path("unused"), "balr_sam", 5, 64, 2, seed=4, control_threads=1)
    assert [(amp, n) for amp, n, _ in seen] == [(False, threads), (True, threads), (False, 1)]
    assert all(init == ["$monai.utils.set_determinism(seed=4)"] for *_, init in seen)
    assert pair["float32_control"]["threads"] == 1 and pair["float32"]["threads"] == threads
    assert pair["control_difference"] == pytest.approx(0.2) and pair["difference"] == pytest.approx(0.1)
    assert torch.get_num_threads() == threads
    seen.clear()
    failing["control"] = True
    with pytest.raises(RuntimeError, match="control run failed"):
        cpu_speed._accuracy_pair(Path("unused"), "balr_sam", 5, 64, 2, control_threads=1)
    assert seen[-1][1] == 1 and torch.get_num_threads() == threads


def test_the_pairs_summary_shares_a_row_only_for_an_identical_rerun_and_averages_over_seeds(tmp_path):
    def pair(seed, f32, bf16, iterations=400, control=None):
        acc = {"float32": {"val_mean_dice": f32, "train_seconds": 9.0}, "bfloat16": {"val_mean_dice": bf16,
               "train_seconds": 5.0}, "difference": abs(f32 - bf16), "method": "balr_sam", "iterations": iterations,
               "input_size": 64, "validation_cases": 8, "seed": seed}  # fmt: skip
        if control is not None:
            acc.update(float32_control={"val_mean_dice": f32 - control, "train_seconds": 20.0, "threads": 1},
                       control_difference=control)  # fmt: skip
            acc["float32"]["threads"] = acc["bfloat16"]["threads"] = 2
        return acc

    report = json.loads((REPO_ROOT / "docs" / "cpu_speed.json").read_text())
    report["accuracy"] = pair(0, 0.80, 0.70, control=0.05)
    report["earlier_accuracy"] = [pair(1, 0.60, 0.66), pair(0, 0.80, 0.70), pair(0, 0.80, 0.72), pair(5, 0.3, 0.2, 9)]
    text = cpu_speed.write_report(report, tmp_path / "r")
    assert "| BALR-SAM | 400 | 64² | 0 | 0.800 | 0.700 | -0.100 | 0.050 | 2 (same Dice) |" in text
    assert "| BALR-SAM | 400 | 64² | 1 | 0.600 | 0.660 | +0.060 | – | 1 |" in text
    assert "| BALR-SAM | 400 | 64² | 0 | 0.800 | 0.720 | -0.080 | – | 1 |" in text  # a rerun that moved: its own row
    # three distinct runs over two seeds; the 9-iteration run has one seed, so no mean for it
    assert ("over the runs seeded 0, 1, 0: mean 0.733 in float32 and 0.693 in bfloat16; across them float32 spreads "
            "0.200 and bfloat16 0.060.") in text  # fmt: skip
    assert "9 iterations at 64², over" not in text
    assert text.count("### An earlier pair") == 4 and "### The newest pair" in text
    report.pop("earlier_accuracy")
    assert "Every pair measured" not in cpu_speed.write_report(report, tmp_path / "r")
