"""A misspelt setting is an error with the closest valid key, on every route that takes settings: a misspelt
override would otherwise add a new key that nothing reads, and the run would go on without what the user meant."""

from __future__ import annotations

import subprocess
import sys

import pytest
from bundle_helpers import REPO_ROOT
from monai.bundle import ConfigParser

from common.cli import refuse_unknown_arguments, unknown_config_id

BUNDLE = REPO_ROOT / "bundles" / "balr_sam_segmentation"


def _parser() -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    return parser


def test_known_ids_pass_and_a_misspelt_one_names_the_closest():
    parser = _parser()
    for known in ("slice_batch_size", "save_probabilities", "inferer#batch_size", "_meta_#version"):
        assert unknown_config_id(parser, known) is None, known
    line = unknown_config_id(parser, "slice_batchsize")
    assert line.startswith("unknown setting 'slice_batchsize' (did you mean 'slice_batch_size'")
    assert "did you mean 'inferer#batch_size'" in unknown_config_id(parser, "inferer#batchsize")
    assert "did you mean" not in unknown_config_id(parser, "zzzz")


def test_common_segment_refuses_a_misspelt_set(tmp_path, capsys):
    from common import segment

    picture = tmp_path / "in.png"
    picture.write_bytes(b"")
    code = segment.main(
        ["--bundle", str(BUNDLE), "--input", str(picture), "--output", str(tmp_path / "out"), "--set", "slice_batchsize=4"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.splitlines() == [err] and "did you mean 'slice_batch_size'" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_monai_bundle_run_refuses_a_misspelt_argument(tmp_path):
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(BUNDLE / "configs" / "inference.json"),
               "--bundle_root", str(BUNDLE), "--save_probabilites", "True", "--output_dir", str(tmp_path / "out")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "error: unknown setting 'save_probabilites' (did you mean 'save_probabilities' or 'probability_threshold'?): "
        "the bundle's configs have no such key"
    )
    assert "Traceback" not in done.stderr


def test_only_monai_bundles_command_line_is_checked():
    configs = [str(BUNDLE / "configs" / "inference.json")]
    refuse_unknown_arguments(configs, ["pytest", "--save_probabilites", "True"])  # another program: not checked
    argv = ["/x/monai/bundle/__main__.py", "run", "--run_id", "run", "--save_probabilities", "True"]
    refuse_unknown_arguments(configs, argv)  # MONAI's own argument and a real key
    with pytest.raises(SystemExit):
        refuse_unknown_arguments(configs, [*argv, "--slice_batchsize=4"])
