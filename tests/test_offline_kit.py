"""The offline kit: pure wheels made from installed distributions, the dataset and label embeddings, and its run
script driving the accuracy benchmark from the kit alone."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from common.benchmark.offline_kit import build_kit, wheel_from_installed
from common.text_encoders import PrecomputedTextEncoder

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = REPO_ROOT.parent / "shared" / "data"  # ../shared beside the repository
needs_chase = pytest.mark.skipif(
    not (DEFAULT_DATA_ROOT / "chase_db1").is_dir(),
    reason=f"CHASE_DB1 not found under {DEFAULT_DATA_ROOT} (../shared beside the repository)",
)


def test_a_wheel_made_from_an_installed_package_installs_and_imports_elsewhere(tmp_path):
    wheel = wheel_from_installed("segment-anything", tmp_path / "wheels")
    assert wheel.name == "segment_anything-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        assert "Tag: py3-none-any" in archive.read(f"{info}/WHEEL").decode()
        record = archive.read(f"{info}/RECORD").decode()
    assert "segment_anything/__init__.py" in names and not any("__pycache__" in n for n in names)
    assert {line.split(",")[0] for line in record.splitlines()} == set(names)  # every file recorded, no other
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
    )
    found = subprocess.run(
        [sys.executable, "-c", "import segment_anything; print(segment_anything.__file__)"],
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(found).is_relative_to(site)


def test_test_suites_of_packages_stay_out_of_the_kit(tmp_path):
    with zipfile.ZipFile(wheel_from_installed("nibabel", tmp_path)) as archive:
        names = archive.namelist()
    assert "nibabel/__init__.py" in names and not [n for n in names if "/tests/" in n]


def test_compiled_or_missing_packages_are_refused(tmp_path):
    with pytest.raises(ValueError, match="compiled code"):
        wheel_from_installed("numpy", tmp_path)
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        wheel_from_installed("no-such-distribution-here", tmp_path)


@needs_chase
def test_the_kit_runs_the_benchmark_from_its_own_wheels_data_and_embeddings(tmp_path):
    kit = tmp_path / "kit"
    sizes = build_kit(["chase_db1"], kit, DEFAULT_DATA_ROOT, packages=["segment-anything"])
    assert set(sizes) == {"data", "run.sh", "text_embeddings.pt", "wheels"}
    source = sorted(p.name for p in (DEFAULT_DATA_ROOT / "chase_db1").iterdir())
    assert sorted(p.name for p in (kit / "data" / "chase_db1").iterdir()) == source
    encoder = PrecomputedTextEncoder(kit / "text_embeddings.pt")
    assert encoder.embed(["retinal vessel"]).shape == (1, 384)

    # S-SAM through the run script: its label embedding comes from the kit, not from the text model
    output = tmp_path / "results"
    arguments = ["--dataset", "chase_db1", "--methods", "s_sam", "--backbone", "sam_vit_test", "--iterations", "1",
                 "--batch_size", "1",
                 "--max_val_cases", "1", "--max_test_cases", "1", "--overlays", "0", "--num_workers", "0",
                 "--output_dir", str(output)]  # fmt: skip
    environment = {**os.environ, "PYTHON": sys.executable, "KIT_SITE": str(tmp_path / "site")}
    run = subprocess.run(
        ["sh", str(kit / "run.sh"), *arguments], cwd=REPO_ROOT, env=environment, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert (tmp_path / "site" / "segment_anything").is_dir()  # the kit's wheels were installed, once per kit
    assert (tmp_path / "site" / ".offline_kit_wheels").read_text().split() == ["segment_anything-1.0-py3-none-any.whl"]
    result = json.loads((output / "chase_db1" / "s_sam_sam_vit_test" / "metrics.json").read_text())
    assert str(kit / "data") in result["command"] and "text_encoder=precomputed" in result["command"]
    assert set(result["per_case"]) == {"Image_11L"}
    log = (output / "chase_db1" / "s_sam_sam_vit_test" / "run.log").read_text()
    assert "embedded by precomputed embeddings from text_embeddings.pt" in log
