"""The accuracy benchmark: its metrics on cases with known answers, the baseline wrapper, and the whole command
(train → bundle inference → metrics, pictures, summary) on the real datasets with test backbones."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common.benchmark import accuracy
from common.metrics import label_dice, vessel_metrics, volume_metrics
from common.benchmark.experiments.resolution_ceiling import resolution_ceiling, truth_through_size
from common.networks import ResizedInputNet

DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared beside the repository
needs_data = pytest.mark.skipif(
    not (DATA_ROOT / "chase_db1").is_dir() or not (DATA_ROOT / "msd_hippocampus").is_dir(),
    reason=f"real datasets not found under {DATA_ROOT} (../shared beside the repository)",
)


def test_thin_lines_do_not_survive_a_small_input_size_and_large_shapes_do():
    yy, xx = np.mgrid[:400, :300]
    line = np.zeros((400, 300), bool)
    line[200, 20:280] = True  # one pixel wide
    disc = (yy - 200) ** 2 + (xx - 150) ** 2 < 90**2
    assert truth_through_size(line, 100).sum() == 0  # a quarter of a pixel wide at that size: gone
    assert np.array_equal(truth_through_size(line, 400), line)  # the picture fits: nothing lost
    kept = truth_through_size(disc, 100)
    assert 2 * (kept & disc).sum() / (kept.sum() + disc.sum()) > 0.98
    ceiling = resolution_ceiling([line, disc], [100, 400])
    assert ceiling[400] == 1.0 and 0.49 < ceiling[100] < 0.5  # (0 for the line + ~0.99 for the disc) / 2
    outside = np.ones_like(line)
    outside[:, :150] = False  # a field of view holding the right half of both
    assert resolution_ceiling([line, disc], [400], [outside, outside]) == {400: 1.0}


@needs_data
def test_resolution_ceiling_of_chase_db1(capsys):
    from common.benchmark.experiments.resolution_ceiling import main

    assert main(["--sizes", "256", "1024", "--data_root", str(DATA_ROOT)]) == 0
    rows = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith("| 256") or line.startswith("| 1024")
    ]
    ceiling = {int(row.split("|")[1]): float(row.split("|")[2]) for row in rows}
    assert 0.85 < ceiling[256] < 0.95 and ceiling[1024] == 1.0  # 999×960 pictures fit 1024 as they are


def test_vessel_metrics_count_inside_the_field_of_view_only():
    truth = np.zeros((4, 5), int)
    truth[1, 1:4] = 1  # 3 vessel pixels
    pred = np.zeros_like(truth)
    pred[1, 1:3] = 1  # 2 TP, 1 FN
    pred[3, 0] = 1  # FP outside the FOV
    pred[2, 2] = 1  # FP inside
    fov = np.ones_like(truth)
    fov[3] = 0
    prob = truth * 0.9 + 0.05
    metrics = vessel_metrics(pred, prob, truth, fov)
    assert metrics["dice"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert metrics["sensitivity"] == pytest.approx(2 / 3)
    assert metrics["specificity"] == pytest.approx(11 / 12)  # 15 FOV pixels, 12 background, 1 FP
    assert metrics["auc"] == pytest.approx(1.0)
    assert vessel_metrics(pred, prob, truth)["specificity"] == pytest.approx(15 / 17)  # whole picture
    assert vessel_metrics(pred, 1 - prob, truth, fov)["auc"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="one shape"):
        vessel_metrics(pred, prob, truth[:3], fov)


def test_volume_metrics_dice_hd95_in_mm_and_empty_classes():
    truth = np.zeros((12, 12, 6), int)
    truth[2:6, 2:6, 1:4] = 1
    pred = np.zeros_like(truth)
    pred[3:7, 2:6, 1:4] = 1  # shifted one voxel along axis 0
    truth[9, 9, 5] = 3  # class 3 missed; class 2 in neither
    metrics = volume_metrics(pred, truth, 3, spacing=(2.0, 1.0, 1.0))
    assert metrics["dice"][0] == pytest.approx(2 * 36 / (48 + 48))
    assert metrics["hd95"][0] == pytest.approx(2.0)  # one voxel of 2 mm
    assert math.isnan(metrics["dice"][1]) and math.isnan(metrics["hd95"][1])
    assert metrics["dice"][2] == 0.0 and math.isinf(metrics["hd95"][2])
    assert volume_metrics(pred, truth, 3)["hd95"][0] == pytest.approx(1.0)  # voxels without spacing


def test_label_dice_scores_a_stack_of_slices_as_one_volume():
    truth = np.zeros((2, 4, 4), int)
    truth[0, :2, :2] = 1  # 4 pixels on slice 0
    truth[1] = 2  # 16 pixels on slice 1
    pred = np.zeros_like(truth)
    pred[0, :2, :1] = 1  # 2 of the 4
    pred[1, :2] = 2  # 8 of the 16
    # pooled over both slices, not a mean of per-slice values; class 3 absent from both is NaN, not 1
    dice = label_dice(pred, truth, 3)
    assert dice[:2] == [pytest.approx(2 * 2 / 6), pytest.approx(2 * 8 / 24)] and math.isnan(dice[2])
    assert label_dice(pred, np.zeros_like(truth), 2) == [0.0, 0.0]  # a structure found where there is none
    with pytest.raises(ValueError, match="differ in shape"):
        label_dice(pred, truth[0], 2)


def test_resized_input_net_returns_logits_at_the_input_size():
    identity = torch.nn.Conv2d(3, 3, 1, bias=False)
    torch.nn.init.dirac_(identity.weight)
    net = ResizedInputNet(identity, 32)
    image = torch.rand(2, 3, 45, 70)
    out = net(image)
    assert out.shape == image.shape
    # a smooth image survives the round trip through 32 pixels closely; the padding never reaches the output
    smooth = torch.linspace(0, 1, 70).expand(1, 3, 45, 70).contiguous()
    assert (net(smooth) - smooth).abs().max() < 0.05
    with pytest.raises(ValueError, match="B×C×H×W"):
        net(torch.rand(3, 45, 70))


def _written(run_dir, stem, ext):
    return run_dir / "predictions" / f"{stem}{ext}"


@needs_data
@pytest.mark.skipif(not (DATA_ROOT / "hrf_av").is_dir(), reason=f"HRF not found under {DATA_ROOT}")
def test_accuracy_command_on_chase_db1(tmp_path):
    code = accuracy.main(
        ["--dataset", "chase_db1", "--methods", "sam2lora", "unet", "--backbone", "sam_vit_test", "--iterations", "4",
         "--val_every", "2", "--max_val_cases", "1", "--max_test_cases", "2", "--overlays", "1", "--num_workers", "0",
         "--cross_camera", "hrf_av", "--output_dir", str(tmp_path)]
    )  # fmt: skip
    assert code == 0
    out = tmp_path / "chase_db1"
    datalist = json.loads((out / "data" / "datalist.json").read_text())
    assert len(datalist["training"]) + len(datalist["validation"]) == 20 and len(datalist["testing"]) == 8
    summary = (out / "summary.md").read_text()
    assert "| sam2lora |" in summary and "| unet |" in summary and "Input: native-resolution crops" in summary
    for method in ("sam2lora", "unet"):
        run = out / f"{method}_sam_vit_test"
        result = json.loads((run / "metrics.json").read_text())
        assert result["training"]["iterations"] == 4 and result["training"]["epochs"] == 2
        assert result["training"]["configs"][-1] == "native_patches.json"  # native-resolution crops and windows
        assert result["input"].startswith("native-resolution crops")
        assert len(result["learning_curve"]["loss"]) == 4
        # validated after each 2-iteration epoch, the last one too (the iteration budget ends the run there)
        key = result["training"]["key_metric"]
        assert [i for i, _ in result["learning_curve"]["metrics"][key]] == [2, 4]
        train_curve = result["learning_curve"]["metrics"]["train_mean_dice"]  # the trainer's epoch metric
        assert 1 <= len(train_curve) <= 2, train_curve  # once per value, not once per iteration
        assert (run / "bundle" / "models" / "model.pt").exists() and list((run / "logs").glob("events.out.*"))
        assert (run / "learning_curve.png").stat().st_size > 1000 and len(list((run / "overlays").glob("*.png"))) == 1
        assert set(result["per_case"]) == {"Image_11L", "Image_11R"}
        # the reported numbers are those of the written files: recompute Dice inside the FOV independently
        for stem, metrics in result["per_case"].items():
            case = next(c for c in datalist["testing"] if f"{stem}." in c["image"])
            pred = np.asarray(Image.open(_written(run, stem, "_seg.png"))) > 0
            prob = np.asarray(Image.open(_written(run, stem, "_prob.tif")))
            truth = np.asarray(Image.open(out / "data" / case["label"])) > 0
            fov = np.asarray(Image.open(out / "data" / case["fov"])) > 0
            assert pred.shape == truth.shape == prob.shape == (960, 999)
            assert np.array_equal(prob > 0.5, pred)  # one sigmoid output: the label is its 0.5 threshold
            dice = 2 * (pred & truth & fov).sum() / ((pred & fov).sum() + (truth & fov).sum())
            assert metrics["dice"] == pytest.approx(dice)
            assert 0 <= metrics["auc"] <= 1
    assert json.loads((out / "unet_sam_vit_test" / "metrics.json").read_text())["training"]["total_parameters"] > 10**6
    # the other camera's test pictures, through common.segment with each run's weights, scored at their own size
    from common.benchmark.cross_camera import camera_cases

    hrf = {case["name"]: case for case in camera_cases("hrf_av", DATA_ROOT, "test")[:2]}
    for method in ("sam2lora", "unet"):
        run = out / f"{method}_sam_vit_test"
        cross = json.loads((run / "metrics.json").read_text())["cross_camera"]
        assert cross["dataset"] == "hrf_av" and [row["case"] for row in cross["per_case"]] == list(hrf)
        for row in cross["per_case"]:
            case = hrf[row["case"]]
            pred = np.asarray(Image.open(run / "cross_camera_hrf_av" / "out" / f"{row['case']}_seg.png")) > 0
            assert pred.shape == case["truth"].shape == (2336, 3504)  # written back at the picture's own size
            inside = case["fov"]
            dice = 2 * (pred & case["truth"] & inside).sum() / ((pred & inside).sum() + (case["truth"] & inside).sum())
            assert row["dice"] == pytest.approx(dice, abs=1e-4)
        assert cross["mean"]["dice"] == pytest.approx(np.mean([row["dice"] for row in cross["per_case"]]), abs=1e-4)
    assert summary.count("| hrf_av |") == 2 and "Dice change" in summary
    # methods run by separate (parallel) commands: the summary is rebuilt from the run folders alone
    (out / "summary.md").unlink()
    assert accuracy.main(["--dataset", "chase_db1", "--summary_only", "--output_dir", str(tmp_path)]) == 0
    assert (out / "summary.md").read_text() == summary
    assert accuracy.main(["--dataset", "msd_hippocampus", "--summary_only", "--output_dir", str(tmp_path)]) == 1


@needs_data
def test_accuracy_command_on_hippocampus_with_a_time_budget(tmp_path):
    code = accuracy.main(
        ["--dataset", "msd_hippocampus", "--methods", "s_sam", "conv_lora", "--backbone", "sam_vit_test",
         "--iterations", "50", "--minutes", "0.0001", "--max_val_cases", "1", "--max_test_cases", "2",
         "--overlays", "2", "--num_workers", "0", "--output_dir", str(tmp_path)]
    )  # fmt: skip
    assert code == 0
    out = tmp_path / "msd_hippocampus"
    datalist = json.loads((out / "data" / "datalist.json").read_text())
    sizes = {k: len(datalist[k]) for k in ("training", "validation", "testing")}
    assert sizes == {"training": 182, "validation": 26, "testing": 52}  # 260 labelled cases, split by case
    cases = [set(c["image"] for c in datalist[k]) for k in sizes]
    assert not (cases[0] & cases[1] or cases[0] & cases[2] or cases[1] & cases[2])
    for method in ("s_sam", "conv_lora"):
        run = out / f"{method}_sam_vit_test"
        result = json.loads((run / "metrics.json").read_text())
        # the budget stopped training after its first iteration; the last weights were validated and saved
        assert result["training"]["iterations"] == 1 and result["training"]["stopped_by_time_budget"]
        assert result["input"].startswith("whole") and "native_patches.json" not in result["training"]["configs"]
        assert (run / "bundle" / "models" / "model.pt").exists()
        assert [i for i, _ in result["learning_curve"]["metrics"][result["training"]["key_metric"]]] == [1]
        assert len(result["per_case"]) == 2 and len(list((run / "overlays").glob("*.png"))) == 2
        for stem, metrics in result["per_case"].items():
            assert len(metrics["dice"]) == 2 and all(0 <= d <= 1 for d in metrics["dice"] if not math.isnan(d))
            assert (run / "predictions" / f"{stem}_seg.nii.gz").exists()
        assert result["mean"]["mean_dice"] == pytest.approx(
            np.nanmean([m["dice"] for m in result["per_case"].values()])
        )


@needs_data
def test_an_interrupted_accuracy_run_resumes_from_its_training_state(tmp_path):
    args = ["--dataset", "msd_hippocampus", "--methods", "balr_sam", "--backbone", "sam_vit_test", "--val_every", "1",
            "--max_val_cases", "1", "--max_test_cases", "1", "--overlays", "0", "--num_workers", "0",
            "--output_dir", str(tmp_path)]  # fmt: skip
    assert accuracy.main([*args, "--iterations", "2"]) == 0  # stands for a run stopped after 2 iterations
    run = tmp_path / "msd_hippocampus" / "balr_sam_sam_vit_test"
    first = json.loads((run / "metrics.json").read_text())
    assert accuracy.main([*args, "--iterations", "4", "--resume"]) == 0
    result = json.loads((run / "metrics.json").read_text())
    assert result["training"]["iterations"] == 4 and result["training"]["resumed"]
    curve = result["learning_curve"]
    # the curve goes on from the first run's: its points are kept, the new ones follow, none repeated
    assert [i for i, _ in curve["metrics"][result["training"]["key_metric"]]] == [1, 2, 3, 4]
    assert [i for i, _ in curve["loss"]] == [1, 2, 3, 4] and curve["loss"][:2] == first["learning_curve"]["loss"]
    assert result["training"]["train_seconds"] > first["training"]["train_seconds"]
    # without --resume the folder is replaced: a fresh run from iteration 0
    assert accuracy.main([*args, "--iterations", "1"]) == 0
    assert not json.loads((run / "metrics.json").read_text())["training"]["resumed"]


def test_accuracy_command_reports_a_missing_dataset(tmp_path, capsys):
    code = accuracy.main(
        ["--dataset", "chase_db1", "--methods", "unet", "--backbone", "sam_vit_test", "--iterations", "1",
         "--data_root", str(tmp_path / "nowhere"), "--output_dir", str(tmp_path / "out")]
    )  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and err.startswith("error: dataset 'chase_db1' not found") and "--data_root" in err
    assert not (tmp_path / "out").exists()  # said once, before any run folder is written


def test_config_values_set_on_the_command_line_reach_every_run(tmp_path, capsys):
    with pytest.raises(SystemExit):
        accuracy.main(["--dataset", "chase_db1", "--set", "no_value", "--output_dir", str(tmp_path)])
    assert "--set expects ID=VALUE" in capsys.readouterr().err
    settings = accuracy.argparse.Namespace(
        backbone="sam_vit_test", device=None, overrides={"samples_per_image": 8, "text_encoder": "precomputed"}
    )
    for method in accuracy.METHODS:
        overrides = accuracy._run_overrides(method, "chase_db1", tmp_path, tmp_path / "data", settings)
        assert overrides["samples_per_image"] == 8 and overrides["text_encoder"] == "precomputed"


def test_native_resolution_is_the_vessel_protocol_unless_whole_pictures_are_asked_for():
    native = accuracy.argparse.Namespace(whole_pictures=False)
    whole = accuracy.argparse.Namespace(whole_pictures=True)
    assert accuracy._native("chase_db1", native) and not accuracy._native("chase_db1", whole)
    assert not accuracy._native("msd_hippocampus", native)  # slices are smaller than the input already


def test_pooled_cameras_keep_each_split_and_are_scored_per_camera(tmp_path):
    from test_fundus_datalists import make_layout

    for name in ("chase_db1", "hrf_av"):
        make_layout(name, tmp_path / "root" / name)
    data_dir = accuracy.prepare_dataset("chase_db1_hrf_av", tmp_path / "root", tmp_path / "out")
    datalist = json.loads((data_dir / "datalist.json").read_text())
    by_split = {split: sorted(e["dataset"] for e in datalist[split]) for split in ("training", "testing")}
    assert by_split == {"training": ["chase_db1", "hrf_av"], "testing": ["chase_db1", "hrf_av"]}  # published splits
    # pooled fundus cameras train and serve as either camera alone does
    for method in accuracy.METHODS:
        assert accuracy.dataset_configs(method, "chase_db1_hrf_av") == accuracy.dataset_configs(method, "chase_db1")
    # every camera is scored on its own too: a perfect one and an empty one are told apart
    run_dir = tmp_path / "run"
    (run_dir / "predictions").mkdir(parents=True)
    from common.data import load_datalist

    for case in load_datalist(data_dir, "testing"):
        stem = Path(case["image"]).name.split(".")[0]
        truth = np.asarray(Image.open(case["label"])) > 0
        pred = truth if case["dataset"] == "chase_db1" else np.zeros_like(truth)
        Image.fromarray(pred.astype(np.uint8)).save(run_dir / "predictions" / f"{stem}_seg.png")
        Image.fromarray(pred.astype(np.float32)).save(run_dir / "predictions" / f"{stem}_prob.tif")
    settings = accuracy.argparse.Namespace(max_test_cases=None, overlays=0)
    evaluation = accuracy.evaluate("chase_db1_hrf_av", run_dir, data_dir, settings)
    assert evaluation["mean_by_dataset"]["chase_db1"]["dice"] == pytest.approx(1.0)
    assert evaluation["mean_by_dataset"]["hrf_av"]["dice"] == pytest.approx(0.0)
    assert evaluation["mean"]["dice"] == pytest.approx(0.5)


def test_a_pooled_dataset_names_the_missing_camera(tmp_path):
    from test_fundus_datalists import make_layout

    make_layout("chase_db1", tmp_path / "chase_db1")
    with pytest.raises(FileNotFoundError, match="hrf_av"):
        accuracy.dataset_source("chase_db1_hrf_av", tmp_path)


def test_cross_camera_reports_dice_at_each_threshold_inside_the_field_of_view():
    from common.benchmark.cross_camera import THRESHOLDS, _dice_by_threshold

    truth = np.zeros((4, 4), bool)
    truth[:2] = True  # 8 vessel pixels
    probability = np.where(truth, 0.6, 0.4).astype(np.float32)
    probability[3, 3] = 0.9  # outside the FOV: never counted
    fov = np.ones((4, 4), bool)
    fov[3, 3] = False
    dice = _dice_by_threshold(probability, {"truth": truth, "fov": fov})
    assert list(dice) == [f"{t:.2f}" for t in THRESHOLDS]
    assert dice["0.50"] == 1.0 and dice["0.65"] == 0.0
    assert dice["0.35"] == pytest.approx(2 * 8 / (15 + 8), abs=1e-4)  # every FOV pixel called vessel


@pytest.mark.parametrize("how", ["meanstd", "histogram"])
def test_intensity_matching_gives_a_picture_the_reference_colours_inside_its_field_of_view_only(tmp_path, how):
    from common.benchmark.cross_camera import match_intensity

    rng = np.random.default_rng(0)
    fov = np.zeros((160, 160), bool)
    fov[10:150, 10:150] = True  # large enough that the reference's every-7th-pixel sample gives its statistics

    def picture(name: str, mean: float, spread: float) -> dict:
        pixels = np.clip(rng.normal(mean, spread, (160, 160, 3)), 0, 255).astype(np.uint8)
        pixels[~fov] = 3  # the dark surround of a fundus photograph
        Image.fromarray(pixels).save(tmp_path / f"{name}.png")
        return {"name": name, "image": str(tmp_path / f"{name}.png"), "fov": fov}

    reference = [picture("ref", 160.0, 20.0)]
    dim = picture("dim", 60.0, 8.0)  # another camera: darker, flatter
    (matched,) = match_intensity([dim], reference, how, tmp_path / "work")
    out = np.asarray(Image.open(matched["image"])).astype(np.float32)
    ref = np.asarray(Image.open(reference[0]["image"])).astype(np.float32)
    assert np.abs(out[fov].mean(0) - ref[fov].mean(0)).max() < 2.0
    assert np.abs(out[fov].std(0) - ref[fov].std(0)).max() < 2.0
    assert np.all(out[~fov] == 3)  # outside the FOV untouched
    assert matched["fov"] is fov and matched["name"] == "dim"


@needs_data
def test_a_labelled_subset_is_the_same_for_a_seed_and_never_touches_validation_or_test(tmp_path):
    data_dir = accuracy.prepare_dataset("msd_hippocampus", DATA_ROOT, tmp_path)
    full = json.loads((data_dir / "datalist.json").read_text())

    def images(folder: Path, split: str) -> list[str]:
        return [Path(c["image"]).name for c in json.loads((folder / "datalist.json").read_text())[split]]

    held_out = set(images(data_dir, "validation")) | set(images(data_dir, "testing"))
    five = images(accuracy.labelled_subset(data_dir, 5, 0, tmp_path / "a"), "training")
    assert len(five) == len(set(five)) == 5 and not set(five) & held_out
    assert set(five) <= set(images(data_dir, "training"))
    assert five == images(accuracy.labelled_subset(data_dir, 5, 0, tmp_path / "b"), "training")  # same seed
    assert five[:2] == images(accuracy.labelled_subset(data_dir, 2, 0, tmp_path / "a"), "training")  # nested
    for count in (1, 2, 5, 25):  # other seeds draw other cases, even of one case (seeds 0 and 1 once did not)
        drawn = [images(accuracy.labelled_subset(data_dir, count, s, tmp_path / "a"), "training") for s in range(3)]
        assert len(set(drawn[0] + drawn[1] + drawn[2])) == 3 * count
    subset = accuracy.labelled_subset(data_dir, 5, 0, tmp_path / "a")
    for split in ("validation", "testing"):  # held-out splits whole and in order, as absolute paths
        cases = json.loads((subset / "datalist.json").read_text())[split]
        assert [Path(c["image"]).name for c in cases] == [Path(c["image"]).name for c in full[split]]
        assert all(Path(c["image"]).is_absolute() and Path(c["label"]).is_file() for c in cases)
    with pytest.raises(ValueError, match="182 cases"):
        accuracy.labelled_subset(data_dir, 183, 0, tmp_path / "a")


@needs_data
def test_a_labelled_subset_run_trains_on_those_cases_only(tmp_path):
    args = ["--dataset", "msd_hippocampus", "--methods", "balr_sam", "--backbone", "sam_vit_test", "--iterations", "1",
            "--max_val_cases", "1", "--max_test_cases", "1", "--overlays", "0", "--num_workers", "0",
            "--labelled_cases", "2", "--subset_seed", "3", "--output_dir", str(tmp_path)]  # fmt: skip
    assert accuracy.main(args) == 0
    out = tmp_path / "msd_hippocampus"
    result = json.loads((out / "balr_sam_sam_vit_test_labelled2_seed3" / "metrics.json").read_text())
    subset = json.loads((out / "data_labelled2_seed3" / "datalist.json").read_text())["training"]
    assert result["labelled_cases"] == {
        "count": 2, "seed": 3, "cases": sorted(Path(c["image"]).name for c in subset)
    }  # fmt: skip
    assert "(2 labelled, seed 3)" in (out / "summary.md").read_text()
