"""Distribution: model-zoo packaging and download, base weights through large_files.yml, the zoo's network checks,
and refusal of checkpoints that would run code."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from bundle_helpers import REPO_ROOT, TEST_BACKBONES, bundle_with_test_weights

from common.backbones import build_backbone
from common.backbones.checkpoint import CheckpointError, read_checkpoint
from common.package_bundle import PackagingError, package_bundle
from common.package_bundle import main as package_main

BUNDLES = sorted(TEST_BACKBONES)


def _monai_bundle(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


class _RunsCode:
    """Unpickling this calls ``os.system``: what a crafted checkpoint would do to a user."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"lora.weight": torch.zeros(2), "payload": _RunsCode(marker)}, path)
    return path


@pytest.mark.parametrize("name", BUNDLES)
def test_verify_net_in_out_with_the_test_backbone(name):
    from monai.bundle import verify_net_in_out

    configs = REPO_ROOT / "bundles" / name / "configs"
    # the network is built from inference.json and fed the input that metadata.json declares; its output must have
    # the declared channels and shape
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(configs / "metadata.json"),
        config_file=str(configs / "inference.json"),
        device="cpu",
        backbone=TEST_BACKBONES[name],
        bundle_root=str(REPO_ROOT / "bundles" / name),
    )


def test_package_is_reproducible_and_runs_after_download(tmp_path):
    name = "conv_lora_sam_segmentation"
    bundle = bundle_with_test_weights(name, tmp_path / "src")
    (bundle / "eval").mkdir()
    (bundle / "eval" / "leftover.png").write_bytes(b"x")  # outputs of a run are never published
    first = package_bundle(bundle, tmp_path / "dist1")
    os.utime(bundle / "configs" / "inference.json", (1, 1))  # file times must not change the archive
    second = package_bundle(bundle, tmp_path / "dist2")
    version = json.loads((bundle / "configs" / "metadata.json").read_text())["version"]
    assert first.name == f"{name}_v{version}.zip"
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as archive:
        names = archive.namelist()
    assert names == sorted(names) and all(n.startswith(f"{name}/") for n in names)
    assert f"{name}/models/model.pt" in names and f"{name}/configs/metadata.json" in names
    assert not [n for n in names if "/eval/" in n or n.endswith(".pth")]

    # a user: download into an empty folder with MONAI's own command
    users = tmp_path / "users"
    users.mkdir()
    result = _monai_bundle(
        "download", "--name", name, "--url", first.as_uri(), "--bundle_dir", str(users), "--progress", "False"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    installed = users / name
    assert (installed / "configs" / "inference.json").is_file() and (installed / "models" / "model.pt").is_file()

    # the default configuration downloads nothing; the paper backbone's checkpoint comes with the documented command
    # from paper_large_files.yml (here a file:// URL to a test backbone's weights, with its sha256)
    assert yaml.safe_load((installed / "large_files.yml").read_text()) == {"large_files": []}
    assert (installed / "paper_large_files.yml").is_file()
    base = tmp_path / "base_weights.pt"
    torch.manual_seed(0)
    torch.save(build_backbone(TEST_BACKBONES[name], checkpoint=None).state_dict(), base)
    digest = hashlib.sha256(base.read_bytes()).hexdigest()
    entry = {"path": "models/base_weights.pt", "url": base.as_uri(), "hash_val": digest, "hash_type": "sha256"}
    (installed / "paper_large_files.yml").write_text(yaml.safe_dump({"large_files": [entry]}))
    result = subprocess.run(
        [sys.executable, "-m", "common.backbones", "--download", str(installed)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (installed / "models" / "base_weights.pt").read_bytes() == base.read_bytes()

    # and the downloaded bundle segments a scan from its own folder
    picture = REPO_ROOT.parent / "shared" / "data" / "msd_hippocampus" / "images" / "hippocampus_001.nii.gz"
    if not picture.is_file():
        pytest.skip("../shared/data is absent: the packaged bundle was not run on a scan")
    result = subprocess.run(
        [sys.executable, "-m", "common.segment", "--bundle", str(installed), "--input", str(picture), "--output",
         str(tmp_path / "out"), "--set", f"backbone_checkpoint={installed / 'models' / 'base_weights.pt'}"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "hippocampus_001_seg.nii.gz").is_file()


def test_packaging_refuses_unsafe_or_base_weights_and_bad_metadata(tmp_path, capsys):
    name = "balr_sam_segmentation"
    bundle = bundle_with_test_weights(name, tmp_path)
    marker = tmp_path / "code_ran"
    unsafe = _malicious_checkpoint(tmp_path / "unsafe.pt", marker)
    with pytest.raises(PackagingError, match="not a loadable adapter checkpoint"):
        package_bundle(bundle, tmp_path / "dist", weights=unsafe)
    assert not marker.exists()
    meta_file = bundle / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    shipped_meta = meta_file.read_text()
    meta["version"] = "9.9.9"  # not in the changelog
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(PackagingError, match="changelog"):
        package_bundle(bundle, tmp_path / "dist")
    (bundle / "LICENSE").unlink()
    result = subprocess.run(
        [sys.executable, "-m", "common.package_bundle", "--bundle", str(bundle), "--output_dir", str(tmp_path / "d")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1 and "missing LICENSE" in result.stderr
    (bundle / "LICENSE").write_text("Apache-2.0")
    meta_file.write_text(shipped_meta)
    taken = tmp_path / "taken"
    taken.write_text("")
    assert package_main(["--bundle", str(bundle), "--output_dir", str(taken)]) == 1  # the output path is a file
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and err.startswith("error: ") and str(taken) in err
    assert not list((tmp_path / "d").glob("*.zip")) if (tmp_path / "d").exists() else True


def test_checkpoints_that_would_run_code_are_refused(tmp_path):
    """Every way a checkpoint is loaded (our reader, the bundles' MONAI CheckpointLoader, the segment command)
    refuses a pickle that would run code, with a message naming the file, and the code never runs."""
    from monai.bundle import ConfigParser

    marker = tmp_path / "code_ran"
    unsafe = _malicious_checkpoint(tmp_path / "model.pt", marker)
    with pytest.raises(CheckpointError, match="refused to load .*model.pt"):
        read_checkpoint(unsafe)

    bundle = bundle_with_test_weights("s_sam_text_prompted_segmentation", tmp_path / "b")
    (bundle / "models" / "model.pt").write_bytes(unsafe.read_bytes())
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.update({"bundle_root": str(bundle), "datalist": []})
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        parser.get_parsed_content("checkpointloader")(parser.get_parsed_content("evaluator"))

    volume = REPO_ROOT.parent / "shared" / "data" / "msd_hippocampus" / "images" / "hippocampus_001.nii.gz"
    if volume.is_file():
        result = subprocess.run(
            [sys.executable, "-m", "common.segment", "--bundle", str(bundle), "--input", str(volume), "--output",
             str(tmp_path / "out")],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode != 0 and "refused to load" in result.stderr
        assert not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True
    assert not marker.exists()
