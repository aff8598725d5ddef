"""The model zoo's checks (common.zoo_check): the four bundles pass them, TorchScript being the one documented
exclusion, and each check fails on a bundle that breaks what it checks."""

from __future__ import annotations

import json
import shutil

import pytest
from bundle_helpers import REPO_ROOT, SCHEMA, TEST_BACKBONES

from common.zoo_check import check_bundle, main


def _statuses(bundle, backbone):
    return {r.check: r.status for r in check_bundle(bundle, SCHEMA, backbone)}


@pytest.mark.parametrize("name", sorted(TEST_BACKBONES))
def test_the_bundles_pass_the_zoo_checks_but_the_documented_torchscript_exclusion(name):
    statuses = _statuses(REPO_ROOT / "bundles" / name, TEST_BACKBONES[name])
    expected_skip = {"metadata schema"} if not SCHEMA.is_file() else set()
    assert {c for c, s in statuses.items() if s == "fail"} == set(), statuses
    assert statuses["TorchScript export (ckpt_export)"] == "excluded"
    assert {c for c, s in statuses.items() if s == "skip"} == expected_skip


def test_each_check_fails_on_a_bundle_that_breaks_it(tmp_path):
    bundle = tmp_path / "balr_sam_segmentation"
    shutil.copytree(REPO_ROOT / "bundles" / "balr_sam_segmentation", bundle)
    meta_file = bundle / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["eval_metrics"] = {}
    meta["version"] = "9.9.9"  # not in the changelog
    meta_file.write_text(json.dumps(meta, indent=4) + "\n")
    (bundle / "configs" / "logging.json").write_text('{"a": "64\u00b2"}')  # non-ASCII, no final newline
    (bundle / "large_files.yml").write_text("large_files:\n  - path: models/sam_vit_h_4b8939.pth\n")
    card = bundle / "docs" / "README.md"
    card.write_text(card.read_text().replace("## Limitations", "## Caveats").replace(
        "TorchScript and TensorRT are not supported", "TorchScript untested"))  # fmt: skip
    statuses = _statuses(bundle, TEST_BACKBONES[bundle.name])
    failed = {c for c, s in statuses.items() if s == "fail"}
    assert failed == {
        "version and changelog", "eval_metrics and output value_range", "JSON formatting (pre-commit hooks)",
        "default large_files.yml", "TorchScript export (ckpt_export)", "model card",
    }, statuses  # fmt: skip
    assert main(["--bundles", str(tmp_path), "--backbone", "sam_vit_test"]) == 1
