"""The training-step benchmark: a tiny run of two methods on a test backbone writes its table with a ratio to the
UNet, times exactly the asked iterations, and never writes into the bundles it measures."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from common.benchmark import train_step

REPOSITORY = Path(__file__).resolve().parents[1]
DATA_ROOT = REPOSITORY.parent / "shared" / "data"  # ../shared beside the repository


def _digests(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.skipif(not (DATA_ROOT / "msd_hippocampus").is_dir(), reason=f"MSD hippocampus not found under {DATA_ROOT}")
def test_a_tiny_step_benchmark_times_each_method_and_leaves_the_bundles_untouched(tmp_path, capsys):
    bundle = REPOSITORY / "bundles" / "balr_sam_segmentation"
    before = _digests(bundle)
    code = train_step.main(
        ["--methods", "balr_sam", "unet", "--backbone", "sam_vit_test", "--iterations", "2", "--warmup", "1",
         "--num_workers", "0", "--data_root", str(DATA_ROOT), "--bundles", str(REPOSITORY / "bundles"),
         "--output_dir", str(tmp_path)]
    )  # fmt: skip
    assert code == 0
    assert _digests(bundle) == before  # training writes models/ under its bundle_root: a copy, never the bundle
    report = json.loads((tmp_path / "train_step.json").read_text())
    rows = {row["method"]: row for row in report["rows"]}
    assert set(rows) == {"balr_sam", "unet"}
    for row in rows.values():
        assert row["iterations_timed"] == 2 and len(row["seconds"]) == 2 and row["seconds_per_iteration"] > 0
        # 5 volumes in batches of 2: the third iteration's batch is short and left out of the statistics
        images = row["images_per_iteration"]
        assert images[0] == 2 * images[1] and row["full_batch_iterations"] == 1
        assert row["seconds_per_iteration"] == pytest.approx(row["seconds"][0], abs=1e-3)
        assert row["mean_seconds_per_iteration"] == pytest.approx(sum(row["seconds"]) / 2, abs=1e-3)
        assert 0 <= row["batch_wait_share"] <= 1 and row["trainable_parameters"] > 0
    table = (tmp_path / "train_step.md").read_text()
    ratio = rows["balr_sam"]["seconds_per_iteration"] / rows["unet"]["seconds_per_iteration"]
    assert f"| balr_sam | {rows['balr_sam']['seconds_per_iteration']:.3f} |" in table and f"{ratio:.1f}×" in table


def test_the_step_benchmark_names_a_missing_dataset_in_one_line(tmp_path, capsys):
    code = train_step.main(["--data_root", str(tmp_path / "nowhere"), "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.splitlines() == [err] and "msd_hippocampus" in err and "--data_root" in err
    assert not (tmp_path / "out").exists()
