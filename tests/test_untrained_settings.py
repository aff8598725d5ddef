"""A shipped adapter run with a setting it was not trained with (input size, backbone, intensity) would give a wrong
result with exit status 0: every route refuses it with one line, unless allow_untrained_settings is set."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
from bundle_helpers import REPO_ROOT

from common.engines import refuse_untrained_settings, untrained_settings

BUNDLES = sorted(p.name for p in (REPO_ROOT / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())
BALR_SAM = REPO_ROOT / "bundles" / "balr_sam_segmentation"
SCAN = REPO_ROOT.parent / "shared" / "data" / "msd_hippocampus" / "images" / "hippocampus_001.nii.gz"


@pytest.mark.parametrize("name", BUNDLES)
def test_the_record_is_that_of_the_shipped_file_and_of_the_default_configs(name):
    bundle = REPO_ROOT / "bundles" / name
    record = json.loads((bundle / "configs" / "metadata.json").read_text())["shipped_adapter"]
    # a new model.pt without a new record would switch the check off: the two cannot drift apart
    assert hashlib.sha256((bundle / record["file"]).read_bytes()).hexdigest() == record["sha256"]
    inference = json.loads((bundle / "configs" / "inference.json").read_text())
    assert {k: inference[k] for k in record["trained_with"]} == record["trained_with"]
    assert inference["allow_untrained_settings"] is False


def test_only_the_shipped_file_is_checked_and_only_for_settings_it_records(tmp_path, caplog):
    weights = BALR_SAM / "models" / "model.pt"
    assert untrained_settings(BALR_SAM, weights, {"input_size": 64, "intensity": "mr", "backbone": "litemedsam"}) is None
    problem = untrained_settings(BALR_SAM, weights, {"input_size": 256, "intensity": "mr"})
    assert problem.endswith("was trained with input_size=64, not input_size=256: its results would be wrong without "
                            "any error; keep the trained setting, or set allow_untrained_settings=true to run anyway")  # fmt: skip
    assert untrained_settings(BALR_SAM, weights, {"slice_batch_size": 3}) is None  # not a training setting
    own = tmp_path / "model.pt"  # a user's own training: its settings are not the shipped file's
    own.write_bytes(weights.read_bytes() + b"\0")
    assert untrained_settings(BALR_SAM, own, {"input_size": 256}) is None
    with pytest.raises(SystemExit, match="^error: .*was trained with input_size=64"):
        refuse_untrained_settings(BALR_SAM, weights, {"input_size": 256})
    with caplog.at_level("WARNING"):
        refuse_untrained_settings(BALR_SAM, weights, {"input_size": 256}, allow=True)
    assert "(allowed)" in caplog.text


@pytest.mark.skipif(not SCAN.is_file(), reason="../shared/data/msd_hippocampus not found")
def test_common_segment_and_monai_bundle_run_refuse_another_input_size(tmp_path, capsys):
    from common import segment

    code = segment.main(["--bundle", str(BALR_SAM), "--input", str(SCAN), "--output", str(tmp_path / "a"), "--quiet",
                         "--set", "input_size=256"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.splitlines() == [err] and "was trained with input_size=64, not input_size=256" in err
    assert not (tmp_path / "a").exists()
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(BALR_SAM / "configs" / "inference.json"),
               "--bundle_root", str(BALR_SAM), "--input", str(SCAN), "--output_dir", str(tmp_path / "b"),
               "--intensity", "ct:abdomen"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "was trained with intensity='mr', not intensity='ct:abdomen'" in done.stderr.strip().splitlines()[-1]
    assert not any((tmp_path / "b").glob("*_seg*"))
