"""Volume and image inference through every bundle's inference.json and ``python -m common.segment``: geometry round
trips on real volumes, 2D and 3D inputs through one configuration, outputs, and one clear error per bad input."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_helpers import TEST_BACKBONES, bundle_with_test_weights
from PIL import Image

from common.data import read_scan
from common.segment import load_bundle_for_inference, main, segment_scans

# an oracle "network" for geometry checks: with intensity "none" its logits are the voxel values, so the label map
# written must be exactly (input > 0) on the input's own grid, whatever reorientation happened in between (the
# hippocampus bundles' whole-brain localisation is off: these volumes are CT and MR of other body parts)
IDENTITY = {"network_def": {"_target_": "torch.nn.Identity"}, "intensity": "none", "output_rule": "sigmoid_argmax",
            "whole_brain": False}  # fmt: skip


class CentreChannel(torch.nn.Module):
    """The 2.5D oracle: of (previous, current, next) slice channels, the current one as logits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 1:2]


def _no_weights(folder: Path) -> Path:
    """An adapter checkpoint with nothing in it, for the parameter-free oracle networks."""
    torch.save({}, folder / "none.pt")
    return folder / "none.pt"


@pytest.fixture(scope="module")
def conv_lora_bundle(tmp_path_factory):
    # the pipeline is checked on every kind of input (CT, MR, pictures): the hippocampus adapter's own guard is off
    return bundle_with_test_weights(
        "conv_lora_sam_segmentation", tmp_path_factory.mktemp("bundles"), {"allow_other_inputs": True}
    )


def _picture(path: Path, channels: int = 3) -> Path:
    array = np.random.default_rng(0).integers(0, 255, (40, 56, channels), dtype=np.uint8)
    Image.fromarray(array[..., 0] if channels == 1 else array).save(path)
    return path


def _same_geometry(result: Path, source: Path) -> nib.Nifti1Image:
    out, ref = nib.load(result), nib.load(source)
    assert out.shape == ref.shape
    assert np.allclose(out.affine, ref.affine, atol=1e-6)
    return out


@pytest.mark.parametrize("name", sorted(TEST_BACKBONES))
def test_every_bundle_segments_a_volume_and_a_2d_image_with_one_configuration(name, shared_data, tmp_path):
    # one pipeline for both kinds (what each shipped adapter accepts is tests/test_input_kind.py's)
    bundle = bundle_with_test_weights(name, tmp_path, {"allow_other_inputs": True})
    scans = tmp_path / "scans"
    scans.mkdir()
    volume = shutil.copy(shared_data / "msd_hippocampus" / "images" / "hippocampus_001.nii.gz", scans)
    picture = _picture(scans / "photo.png")
    out = tmp_path / "out"
    results = segment_scans(bundle, scans, out, progress=False)
    assert set(results.values()) == {"ok"}
    labels = _same_geometry(out / "hippocampus_001_seg.nii.gz", Path(volume))
    assert Image.open(out / "photo_seg.png").size == Image.open(picture).size
    for stem in ("hippocampus_001", "photo"):
        assert Image.open(out / f"{stem}_montage.png").mode == "RGB"
        report = json.loads((out / f"{stem}_volumes.json").read_text())
        assert set(report["classes"]) == set(
            json.loads((bundle / "configs" / "inference.json").read_text())["label_names"].values()
        )
    # the report counts exactly the voxels of the label file
    report = json.loads((out / "hippocampus_001_volumes.json").read_text())
    array = np.asarray(labels.dataobj)
    for entry in report["classes"].values():
        assert entry["voxels"] == int((array == entry["label"]).sum())
    assert not list(out.glob(".partial-*"))


def test_geometry_round_trip_on_real_volumes_exact_voxel_for_voxel(shared_data, conv_lora_bundle, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    sources = [
        shared_data / "totalsegmentator_samples" / "example_ct_sm.nii.gz",
        shared_data / "totalsegmentator_samples" / "example_mr_sm.nii.gz",  # LPS: reoriented to RAS and back
        *sorted((shared_data / "msd_hippocampus" / "images").glob("hippocampus_00*.nii.gz"))[:2],
    ]
    for source in sources:
        shutil.copy(source, scans)
    for axis, context in ((2, 0), (0, 1)):
        out = tmp_path / f"out_{axis}"
        overrides = {**IDENTITY, "slice_axis": axis, "context_slices": context, "save_probabilities": True}
        if context:  # 2.5D: three channels reach the network; the identity keeps the centre one for the check
            overrides["network_def"] = {"_target_": "test_scan_inference.CentreChannel"}
        results = segment_scans(
            conv_lora_bundle, scans, out, _no_weights(tmp_path), overrides=overrides, progress=False
        )
        assert set(results.values()) == {"ok"}, results
        for source in sources:
            stem = source.name.split(".")[0]
            labels = _same_geometry(out / f"{stem}_seg.nii.gz", source)
            probabilities = _same_geometry(out / f"{stem}_prob.nii.gz", source)
            expected = np.asarray(nib.load(source).dataobj) > 0
            assert np.array_equal(np.asarray(labels.dataobj) == 1, expected)
            assert np.array_equal(np.asarray(probabilities.dataobj) > 0.5, expected)


def test_a_dicom_series_keeps_its_geometry(conv_lora_bundle, tmp_path):
    import itk

    array = (np.arange(6 * 20 * 16).reshape(6, 20, 16) % 7 - 3).astype(np.int16)
    image = itk.image_from_array(array)
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((10.0, -20.0, 5.0))
    series = tmp_path / "series"
    series.mkdir()
    names = [str(series / f"IM{i:04d}") for i in range(array.shape[0])]
    writer = itk.ImageSeriesWriter[itk.Image[itk.SS, 3], itk.Image[itk.SS, 2]].New(
        Input=image, FileNames=names, ImageIO=itk.GDCMImageIO.New()
    )
    writer.Update()
    out = tmp_path / "out"
    assert segment_scans(conv_lora_bundle, series, out, _no_weights(tmp_path), overrides=IDENTITY, progress=False) == {
        str(series): "ok"
    }
    result = nib.load(out / "series_seg.nii.gz")
    reference = read_scan(series)
    assert result.shape == tuple(reference.shape[1:])
    assert np.allclose(result.affine, np.asarray(reference.affine), atol=1e-6)
    assert np.array_equal(np.asarray(result.dataobj) == 1, np.asarray(reference[0]) > 0)


def _nifti(path: Path, array: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(array, np.diag([0.8, 0.9, 2.5, 1.0])), str(path))
    return path


def _truncated(folder: Path) -> Path:
    good = _nifti(folder / "good.nii.gz", np.ones((16, 16, 8), np.float32))
    raw = gzip.decompress(good.read_bytes())
    good.unlink()
    (folder / "truncated.nii.gz").write_bytes(gzip.compress(raw[: len(raw) // 2]))
    return folder / "truncated.nii.gz"


def _nan(folder: Path) -> Path:
    array = np.ones((8, 8, 4), np.float32)
    array[1, 2, 3] = np.nan
    return _nifti(folder / "nan.nii.gz", array)


def _mixed_dicom(folder: Path) -> Path:
    import itk

    mixed = folder / "mixed"
    mixed.mkdir()
    for number, depth in ((1, 4), (2, 3)):
        names = [str(mixed / f"s{number}_{i}.dcm") for i in range(depth)]
        writer = itk.ImageSeriesWriter[itk.Image[itk.SS, 3], itk.Image[itk.SS, 2]].New(
            Input=itk.image_from_array(np.full((depth, 8, 8), number, np.int16)),
            FileNames=names,
            ImageIO=itk.GDCMImageIO.New(),
        )
        writer.Update()
    return mixed


def _empty(folder: Path) -> Path:
    (folder / "empty").mkdir()
    return folder / "empty"


def _one_pixel(path: Path) -> Path:
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(path)
    return path


BAD_INPUTS = {
    "truncated file": (_truncated, "cannot be read"),
    "4D image": (lambda f: _nifti(f / "four_d.nii.gz", np.zeros((8, 8, 6, 3), np.float32)), "4D series"),
    "1-voxel-thick volume": (lambda f: _nifti(f / "thin.nii.gz", np.zeros((8, 8, 1), np.float32)), "voxel"),
    "2D NIfTI": (lambda f: _nifti(f / "slice.nii.gz", np.zeros((8, 12), np.float32)), "a 2D image of 8×12 pixels"),
    "NaN voxels": (_nan, "1 NaN"),
    "mixed DICOM series": (_mixed_dicom, "2 DICOM series are mixed"),
    "RGBA image (wrong channel count)": (lambda f: _picture(f / "rgba.png", channels=4), "4 channels"),
    "empty folder": (_empty, "no scans in this folder"),
    "1×1 picture": (lambda f: _one_pixel(f / "dot.png"), "the picture is only 1×1 pixels"),
}


def test_pictures_are_read_by_their_mode_and_bit_depth(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (30, 44, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    # a palette picture: its colours, not its palette indices (RGB, or grey when the palette is grey)
    Image.fromarray(rgb).quantize(colors=64).save(tmp_path / "palette.png")
    palette_rgb = np.asarray(Image.open(tmp_path / "palette.png").convert("RGB"))
    read = read_scan(tmp_path / "palette.png")
    assert read.shape == (3, 44, 30) and np.array_equal(np.asarray(read).transpose(2, 1, 0), palette_rgb)
    grey = rng.integers(0, 255, (30, 44), dtype=np.uint8)
    Image.fromarray(grey).convert("P").save(tmp_path / "grey_palette.png")
    assert Image.open(tmp_path / "grey_palette.png").mode == "P"
    read = read_scan(tmp_path / "grey_palette.png")
    assert read.shape == (1, 44, 30) and np.array_equal(np.asarray(read[0]).T, grey)
    Image.fromarray(grey > 127).save(tmp_path / "bilevel.png")  # mode "1"
    assert set(np.unique(np.asarray(read_scan(tmp_path / "bilevel.png")))) == {0.0, 255.0}
    # a 16-bit picture using 12 bits: stretched to 0-255 by its own percentiles, not clipped at 255
    deep = (np.linspace(0, 4095, 30 * 44).reshape(30, 44)).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    read = np.asarray(read_scan(tmp_path / "deep.png"))[0].T
    assert read.min() == 0.0 and read.max() == 255.0
    assert (read >= 255).mean() < 0.01 and np.corrcoef(read.ravel(), deep.ravel())[0, 1] > 0.99
    # an 8-bit picture is read as it is
    assert np.array_equal(np.asarray(read_scan(tmp_path / "rgb.png")).transpose(2, 1, 0), rgb)


def test_a_scan_without_signal_is_segmented_with_a_warning(conv_lora_bundle, tmp_path, caplog):
    scan = _nifti(tmp_path / "blank.nii.gz", np.zeros((24, 20, 6), np.float32))
    out = tmp_path / "out"
    status = main(["--bundle", str(conv_lora_bundle), "--input", str(scan), "--output", str(out), "--quiet",
                   "--backbone", "sam_vit_test"])  # fmt: skip
    # (pytest holds the root logger; outside it, common.segment prints WARNING records on stderr)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    warnings = [message for message in warnings if "holds no signal" in message]
    assert status == 0 and len(warnings) == 1 and str(scan) in warnings[0], warnings
    assert (out / "blank_seg.nii.gz").is_file()


def _bundle_run(bundle: Path, *args: str, bundle_root: bool = True) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run`` of the bundle's own inference.json, as a user types it from the bundle's parent
    folder (``bundle_root=False``: without ``--bundle_root``, which then is that folder)."""
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "inference.json"),
               *(["--bundle_root", str(bundle)] if bundle_root else []), *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=bundle.parent)


def test_inference_json_over_a_folder_segments_the_good_scans_and_reports_the_bad_one(conv_lora_bundle, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    bad = _truncated(scans)
    _nifti(scans / "scan.nii.gz", np.random.default_rng(0).random((24, 20, 6), dtype=np.float32))
    out = tmp_path / "out"
    done = _bundle_run(conv_lora_bundle, "--input", str(scans), "--output_dir", str(out))
    errors = [line for line in done.stderr.splitlines() + done.stdout.splitlines() if line.startswith("error:")]
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert len(errors) == 2 and str(bad) in errors[0] and "cannot be read" in errors[0], errors
    assert errors[1] == "error: 1 of 2 scan(s) could not be segmented (the error lines above)"
    assert (out / "scan_seg.nii.gz").is_file() and not list(out.glob("truncated*"))


def test_missing_weights_are_one_line_naming_the_file_and_the_command(conv_lora_bundle, tmp_path):
    scan = _nifti(tmp_path / "scan.nii.gz", np.ones((16, 16, 4), np.float32))
    bundle = Path(shutil.copytree(conv_lora_bundle, tmp_path / "bundle"))
    (bundle / "models" / "model.pt").unlink()
    done = _bundle_run(bundle, "--input", str(scan), "--output_dir", str(tmp_path / "out"))
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert last.startswith(f"error: {bundle / 'models' / 'model.pt'}: no trained adapter") and "train.json" in last
    shutil.copy(conv_lora_bundle / "models" / "model.pt", bundle / "models" / "model.pt")
    done = _bundle_run(bundle, "--input", str(scan), "--output_dir", str(tmp_path / "out"), "--backbone", "sam_vit_h")
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "sam_vit_h_4b8939.pth: the backbone's base weights are missing" in last
    # the paper's backbone: the bundle's own download command; another official backbone: its URL and checksum
    command = f"python -m common.backbones --download {bundle}"
    assert command in last
    done = _bundle_run(bundle, "--input", str(scan), "--output_dir", str(tmp_path / "out"), "--backbone", "sam_vit_b")
    last = done.stderr.strip().splitlines()[-1]
    assert "sam_vit_b_01ec64.pth: the backbone's base weights are missing" in last and "Traceback" not in done.stderr
    assert "download https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth (sha256 ec2df627" in last
    assert not (tmp_path / "out").exists()  # nothing was written
    # from outside the bundle without --bundle_root, bundle_root "." is the working folder: the message says so
    done = _bundle_run(bundle, "--input", str(scan), "--output_dir", str(tmp_path / "out"), bundle_root=False)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "the bundle root '.' is not a bundle folder" in last and "--bundle_root <bundle folder>" in last, last


def test_nothing_to_segment_or_nowhere_to_write_is_one_line_before_any_work(conv_lora_bundle, tmp_path):
    # these used to be a traceback through MONAI's config parser, or one *after* the whole inference
    scan = _nifti(tmp_path / "scan.nii.gz", np.ones((16, 16, 4), np.float32))
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    cases = {
        ("--dataset_dir", str(tmp_path / "no_data")): f"nothing to segment: no --input and no datalist.json in "
                                                      f"--dataset_dir {tmp_path / 'no_data'}",
        ("--input", str(scan), "--output_dir", str(a_file)): f"--output_dir {a_file}: is a file, not a folder",
        ("--input", str(scan), "--output_dir", str(a_file / "out")): f"is inside {a_file}, which is a file",
        ("--input", str(scan), "--output_dir", "/sys/monai_sam_out"): "cannot write into /sys",
    }  # fmt: skip
    try:
        tempfile.TemporaryFile(dir="/sys").close()
        del cases[("--input", str(scan), "--output_dir", "/sys/monai_sam_out")]  # writable here: nothing to try
    except OSError:
        pass
    for args, message in cases.items():
        done = _bundle_run(conv_lora_bundle, *args)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
        assert lines[-1].startswith("error: ") and message in lines[-1], lines[-1]
        assert "Restored all variables" not in done.stderr + done.stdout, f"{args}: the adapter was loaded first"
    assert a_file.read_text() == "not a folder"


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gets_one_clear_error_and_no_output(case, conv_lora_bundle, tmp_path, capsys):
    make, message = BAD_INPUTS[case]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    bad = make(inputs)
    out = tmp_path / "out"
    status = main(
        [
            "--bundle",
            str(conv_lora_bundle),
            "--input",
            str(bad),
            "--output",
            str(out),
            "--quiet",
            "--backbone",
            "sam_vit_test",
        ]
    )
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert status == 1 and len(errors) == 1 and message in errors[0] and str(bad) in errors[0], errors
    assert not out.exists() or not any(out.iterdir())  # no partial output, no staging folder left


def test_a_bad_scan_in_a_folder_does_not_stop_the_others(shared_data, conv_lora_bundle, tmp_path, capsys):
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(shared_data / "msd_hippocampus" / "images" / "hippocampus_001.nii.gz", scans)
    _nan(scans)
    out = tmp_path / "out"
    status = main(
        [
            "--bundle",
            str(conv_lora_bundle),
            "--input",
            str(scans),
            "--output",
            str(out),
            "--quiet",
            "--backbone",
            "sam_vit_test",
            "--largest_component",
        ]
    )
    captured = capsys.readouterr()
    assert status == 1 and "1 NaN" in captured.err and "1 of 2 scan(s) segmented" in captured.out
    assert sorted(p.name for p in out.iterdir()) == [
        "hippocampus_001_montage.png",
        "hippocampus_001_seg.nii.gz",
        "hippocampus_001_volumes.json",
    ]


def test_missing_and_mismatched_weights_are_refused_before_anything_is_written(
    shared_data, conv_lora_bundle, tmp_path, capsys
):
    scan = shared_data / "msd_hippocampus" / "images" / "hippocampus_001.nii.gz"
    out = tmp_path / "out"
    common = ["--bundle", str(conv_lora_bundle), "--input", str(scan), "--output", str(out), "--quiet"]
    assert main([*common, "--backbone", "sam_vit_test", "--weights", str(tmp_path / "absent.pt")]) == 1
    assert "no trained weights" in capsys.readouterr().err
    state = torch.load(conv_lora_bundle / "models" / "model.pt", weights_only=True)
    first = next(iter(state))
    torch.save({**state, first: torch.zeros(3)}, tmp_path / "other.pt")
    assert main([*common, "--backbone", "sam_vit_test", "--weights", str(tmp_path / "other.pt")]) == 1
    assert "does not fit the model" in capsys.readouterr().err
    # weights of the test backbone on the paper's backbone (whose base weights are absent here)
    assert main([*common, "--backbone", "sam_vit_h"]) == 1
    assert "network cannot be built" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
    with pytest.raises(Exception, match="no such bundle config"):
        load_bundle_for_inference(conv_lora_bundle, configs=["absent.json"])


#: options a user can get wrong → what the one error line must say (nothing loaded, nothing written)
BAD_OPTIONS = {
    "unknown backbone": (["--backbone", "sam_vit_xyz"], "--backbone 'sam_vit_xyz': unknown; one of"),
    "malformed intensity": (["--intensity", "ct:foo"], "--intensity: unknown intensity setting 'ct:foo'"),
    "unknown device": (["--device", "tpu:7"], "--device 'tpu:7'"),
    "output is a file": (["--output", "{file}"], "is a file, not a folder"),
}


@pytest.mark.parametrize("case", sorted(BAD_OPTIONS))
def test_a_bad_option_is_one_line_before_anything_runs(case, conv_lora_bundle, tmp_path, capsys):
    options, message = BAD_OPTIONS[case]
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("not a folder")
    options = [o.replace("{file}", str(a_file)) for o in options]
    argv = ["--bundle", str(conv_lora_bundle), "--input", str(tmp_path), "--output", str(tmp_path / "out"), "--quiet"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv + options)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and message in err[-1] and "Traceback" not in "\n".join(err), err
    assert not (tmp_path / "out").exists() and a_file.read_text() == "not a folder"


@pytest.mark.parametrize("separator", ["_", "-"])
def test_both_option_spellings_parse(separator, conv_lora_bundle, tmp_path, capsys):
    # underscores as in `monai.bundle` and the benchmarks; the dashed spellings of earlier releases still work. The
    # unknown backbone is refused after parsing: an unparsed option would be argparse's "unrecognized arguments".
    options = ["slice_axis", "1", "batch_size", "2", "context_slices", "1", "window_size", "64", "largest_component"]
    spelled = [f"--{o.replace('_', separator)}" if not o.isdigit() else o for o in options]
    argv = ["--bundle", str(conv_lora_bundle), "--input", str(tmp_path), "--output", str(tmp_path / "out"), "--quiet"]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, *spelled, "--backbone", "sam_vit_xyz"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and "--backbone 'sam_vit_xyz': unknown" in err[-1], err


def test_a_cuda_device_on_a_machine_without_one_is_one_line(conv_lora_bundle, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    argv = ["--bundle", str(conv_lora_bundle), "--input", str(tmp_path), "--output", str(tmp_path / "out"),
            "--device", "cuda:0"]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and "no CUDA device" in capsys.readouterr().err.strip().splitlines()[-1]


def test_a_setting_the_network_refuses_is_one_error_line(shared_data, conv_lora_bundle, tmp_path, capsys):
    scan = shared_data / "msd_hippocampus" / "images" / "hippocampus_001.nii.gz"
    argv = ["--bundle", str(conv_lora_bundle), "--input", str(scan), "--output", str(tmp_path / "out"), "--quiet",
            "--backbone", "sam_vit_test", "--set", "lora_rank=abc"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the bundle's network cannot be built with these settings"), err
    assert "rank must be a whole number >= 1, got 'abc'" in err[0], err  # what is wrong, not where it broke


def test_sigterm_leaves_no_hidden_partial_folder_and_a_failed_start_no_output_folder(
    shared_data, conv_lora_bundle, tmp_path, monkeypatch, capsys
):
    import os
    import signal

    import common.segment as segment

    out = tmp_path / "out"
    scan = shared_data / "msd_hippocampus" / "images" / "hippocampus_001.nii.gz"

    def killed_while_segmenting(*args):
        os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler or `kill` would, in the middle of a case
        raise AssertionError("SIGTERM should have ended the run")

    monkeypatch.setattr(segment, "_run_case", killed_while_segmenting)
    code = main(["--bundle", str(conv_lora_bundle), "--input", str(scan), "--output", str(out), "--quiet",
                 "--backbone", "sam_vit_test"])  # fmt: skip
    assert code == 128 + signal.SIGTERM
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and err.startswith("stopped: 0 of 1 scan(s) segmented")  # no traceback
    assert not out.exists() or not list(out.iterdir())  # no .partial-* folder left behind
    assert signal.getsignal(signal.SIGTERM) is not segment._terminate  # the caller's handler is back

    # a run that fails before segmenting anything (here: no trained weights) creates no output folder
    nested = tmp_path / "fresh" / "results"
    assert main(["--bundle", str(conv_lora_bundle), "--input", str(scan), "--output", str(nested), "--quiet",
                 "--weights", str(tmp_path / "missing.pt")]) == 1  # fmt: skip
    assert "no trained weights" in capsys.readouterr().err and not (tmp_path / "fresh").exists()


def test_ctrl_c_is_one_line_and_keeps_the_scans_finished_before(shared_data, conv_lora_bundle, tmp_path, monkeypatch, capsys):
    import common.segment as segment

    scans = tmp_path / "scans"
    scans.mkdir()
    for name in ("hippocampus_001", "hippocampus_003"):
        (scans / f"{name}.nii.gz").symlink_to(shared_data / "msd_hippocampus" / "images" / f"{name}.nii.gz")
    real_run_case, calls = segment._run_case, []

    def interrupted_on_the_second(*args):
        calls.append(args[-1])
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the second scan
        return real_run_case(*args)

    monkeypatch.setattr(segment, "_run_case", interrupted_on_the_second)
    out = tmp_path / "out"
    code = main(["--bundle", str(conv_lora_bundle), "--input", str(scans), "--output", str(out), "--quiet",
                 "--backbone", "sam_vit_test"])  # fmt: skip
    assert code == 130
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and err.startswith("stopped: 1 of 2 scan(s) segmented"), err
    written = sorted(p.name for p in out.iterdir())
    assert "hippocampus_001_seg.nii.gz" in written and not any("hippocampus_003" in n for n in written)
    assert not any(n.startswith(".partial") for n in written)
