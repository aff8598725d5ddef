"""The bundles as MONAI Label backends, with the real ``monailabel`` package, offline: the ``monaibundle`` sample app's
``BundleInferTask`` and ``BundleTrainTask`` on our bundles, and a real server answering ``/infer`` over HTTP."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from bundle_helpers import REPO_ROOT, TEST_BACKBONES, bundle_with_test_weights

monailabel = pytest.importorskip("monailabel", reason="monailabel is installed by the README's test command")

# what MONAI Label needs from a bundle's infer task on a CPU test machine (the app's usual conf otherwise)
CONF = {"models": "", "zoo_source": "github", "sam2": "false", "preload": "false"}


def _place_bundle(name: str, model_dir: Path) -> Path:
    """Bundle ``name`` under ``<app>/model/<name>``, on its test backbone, validating (and so saving its best
    checkpoint) after every epoch as a short MONAI Label training run needs."""
    return bundle_with_test_weights(name, model_dir, {"num_workers": 0, "batch_size": 2, "val_interval": 1})


def _hippocampus_study(shared_data: Path, studies: Path) -> Path:
    studies.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(shared_data / "msd_hippocampus" / "images" / "hippocampus_001.nii.gz", studies))


@pytest.mark.parametrize("name", sorted(TEST_BACKBONES))
def test_bundle_infer_task_returns_a_label_volume_of_the_original_geometry(name, shared_data, tmp_path):
    from monailabel.tasks.infer.bundle import BundleInferTask

    bundle = _place_bundle(name, tmp_path / "model")
    task = BundleInferTask(str(bundle), CONF)
    assert task.is_valid()
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    names = json.loads((bundle / "configs" / "inference.json").read_text())["label_names"]
    # labels as MONAI Label shows them: name → value in the returned label map
    assert task.labels == {v.lower(): int(k) for k, v in names.items()}
    assert task.dimension == len(metadata["network_data_format"]["inputs"]["image"]["spatial_shape"])
    assert task.dimension == metadata["accepted_input"]["dimension"]  # MONAI Label shows what the bundle segments
    study = _hippocampus_study(shared_data, tmp_path / "studies")
    if metadata["accepted_input"]["dimension"] == 2:  # the fundus bundle refuses a volume (its pictures: next test)
        from common.data import ScanInputError

        with pytest.raises(ScanInputError, match="a 3D volume, but this bundle segments 2D colour fundus pictures"):
            task({"image": str(study), "device": "cpu"})
        return
    result_file, result_json = task({"image": str(study), "device": "cpu"})
    result, source = nib.load(result_file), nib.load(study)
    assert result.shape == source.shape and np.allclose(result.affine, source.affine, atol=1e-6)
    assert set(np.unique(np.asarray(result.dataobj))) <= {0, *map(int, names)}
    # per-request extras (montage, volumes JSON) are off when serving: nothing piles up in the bundle per request
    written = [f for f in bundle.rglob("*") if f.name.endswith(("_montage.png", "_volumes.json"))]
    assert not [f for f in written if f.relative_to(bundle).parts[0] != "docs"]  # the card's pictures stay


def test_a_2d_picture_comes_back_as_a_png_label_map_equal_to_common_segments(tmp_path):
    # a .jpg study: MONAI Label's writer used the study's format and the label's channel axis (HTTP 500 from ITK's
    # JPEG writer, or a 1-pixel-wide PNG); served, the bundle hands it a W×H map and asks for a PNG
    from monailabel.tasks.infer.bundle import BundleInferTask

    from common.data import ScanInputError
    from common.segment import segment_scans

    name = "sam2lora_fundus_segmentation"  # the bundle whose default is 2D pictures
    bundle = _place_bundle(name, tmp_path / "model")
    study = tmp_path / "studies" / "photo.jpg"
    study.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 84, 3), dtype=np.uint8)).save(study)
    task = BundleInferTask(str(bundle), CONF)
    result_file, _ = task({"image": str(study), "device": "cpu"})
    assert str(result_file).endswith(".png")
    served = Image.open(result_file)
    assert served.size == (84, 60) and served.mode in ("L", "P", "I;16", "I")
    segment_scans(bundle, study, tmp_path / "segment", progress=False)
    reference = np.asarray(Image.open(tmp_path / "segment" / "photo_seg.png"))
    assert np.array_equal(np.asarray(served), reference)  # the same labels as common.segment writes
    with pytest.raises(Exception) as raised:  # an unknown image id: one clear message, not the server's folder read
        task({"image": "", "device": "cpu"})
    error = raised.value
    while error is not None and not isinstance(error, ScanInputError):  # under MONAI's "applying transform" wrappers
        error = error.__cause__
    assert error is not None and "no image path given" in str(error), repr(raised.value)


def _datastore_studies(name: str, shared_data: Path, studies: Path) -> str:
    """A MONAI Label datastore folder with final labels (what annotators save from the viewer), of the kind the
    bundle's ``train.json`` trains on: 2D pictures for SAM2LoRA's fundus default, real hippocampus volumes for the
    others (whose default is their shipped hippocampus adapter's configuration). Returns the extension."""
    from common.datasets import make_synthetic_dataset

    (studies / "labels" / "final").mkdir(parents=True)
    if name != "sam2lora_fundus_segmentation":
        for case in ("hippocampus_001", "hippocampus_003", "hippocampus_004", "hippocampus_006"):
            shutil.copy(shared_data / "msd_hippocampus" / "images" / f"{case}.nii.gz", studies)
            shutil.copy(shared_data / "msd_hippocampus" / "labels" / f"{case}.nii.gz", studies / "labels" / "final")
        return "*.nii.gz"
    data = studies.parent / "synthetic"
    make_synthetic_dataset(data, spatial_dims=2, num_classes=1, num_train=4, num_val=0, num_test=0)
    for image in sorted((data / "images").glob("*.png")):
        shutil.copy(image, studies / image.name)
        shutil.copy(data / "labels" / image.name, studies / "labels" / "final" / image.name)
    return "*.png"


@pytest.mark.parametrize("name", sorted(TEST_BACKBONES))
def test_bundle_train_task_trains_from_a_datastore_and_writes_the_model(name, shared_data, tmp_path):
    from monailabel.datastore.local import LocalDatastore
    from monailabel.tasks.train.bundle import BundleTrainTask

    bundle = _place_bundle(name, tmp_path / "model")
    studies = tmp_path / "studies"
    extension = _datastore_studies(name, shared_data, studies)
    datastore = LocalDatastore(str(studies), extensions=[extension], auto_reload=False)
    assert len(datastore.datalist()) == 4

    task = BundleTrainTask(str(bundle), {**CONF, "models": name})
    assert task.is_valid()
    model = bundle / "models" / "model.pt"
    before = torch.load(model, weights_only=True)
    os.utime(model, (0, 0))
    request = {"model": name, "max_epochs": 1, "val_split": 0.5, "device": "cpu", "multi_gpu": False}
    task({**request, "tracking": "None"}, datastore)
    assert model.stat().st_mtime > 0  # rewritten by the bundle's checkpoint handler
    after = torch.load(model, weights_only=True)
    assert set(after) == set(before) and any(not torch.equal(after[k], before[k]) for k in before)


# the lines the README tells a user to add to the monaibundle app's init_infers for the interactive SAM2LoRA task
INTERACTIVE_TASK = """\
        if "sam2lora_fundus_segmentation" in self.models:
            from common.monai_label import PromptPropagationInferTask

            infers["sam2lora_prompts"] = PromptPropagationInferTask(self.models["sam2lora_fundus_segmentation"])
        return infers
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def _monai_label_server(app: Path, studies: Path, models: list[str], log_file: Path) -> Iterator[tuple[str, dict]]:
    """A real MONAI Label server on loopback serving ``models`` of ``app`` over ``studies``, started as the README
    says; yields its address and its ``/info/`` answer, and stops it afterwards."""
    import requests

    port = _free_port()
    command = [
        sys.executable, "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", str(studies),
        "--host", "127.0.0.1", "--port", str(port),
        "--conf", "models", ",".join(models), "--conf", "zoo_source", "github", "--conf", "sam2", "false",
    ]  # fmt: skip
    log = log_file.open("w")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # the log says how far the server got if it never answers
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=log_file.parent, env=env)
    url = f"http://127.0.0.1:{port}"
    info, deadline = None, time.monotonic() + 600
    try:
        while info is None and time.monotonic() < deadline and server.poll() is None:
            try:  # the app loads the bundles before it answers
                info = requests.get(f"{url}/info/", timeout=2).json()
            except requests.ConnectionError:
                time.sleep(0.5)
        assert info is not None, log_file.read_text()[-3000:]
        yield url, info
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    assert server.returncode is not None


def _monaibundle_app(apps: Path) -> Path:
    """MONAI Label's ``monaibundle`` sample app, downloaded as the README says, with an empty ``model/`` folder."""
    subprocess.run(
        [sys.executable, "-m", "monailabel.main", "apps", "--download", "--name", "monaibundle", "--output", str(apps)],
        check=True,
        capture_output=True,
    )
    (apps / "monaibundle" / "model").mkdir(exist_ok=True)
    return apps / "monaibundle"


def test_a_real_monai_label_server_segments_a_study_over_http(shared_data, tmp_path):
    import requests

    app = _monaibundle_app(tmp_path / "apps")
    main_py = app / "main.py"
    assert main_py.read_text().count("        return infers\n") == 1
    main_py.write_text(main_py.read_text().replace("        return infers\n", INTERACTIVE_TASK))
    _place_bundle("conv_lora_sam_segmentation", app / "model")
    _place_bundle("sam2lora_fundus_segmentation", app / "model")
    study = _hippocampus_study(shared_data, tmp_path / "studies")
    picture = study.parent / "fundus.jpg"
    Image.open(shared_data / "chase_db1" / "Image_11L.jpg").crop((352, 352, 480, 480)).save(picture)
    nan_volume = np.ones((16, 16, 8), np.float32)
    nan_volume[3, 4, 5] = np.nan
    nib.save(nib.Nifti1Image(nan_volume, np.eye(4)), str(study.parent / "nan_study.nii.gz"))
    raw = (study.parent / "hippocampus_001.nii.gz").read_bytes()
    (study.parent / "truncated_study.nii.gz").write_bytes(raw[: len(raw) // 2])
    models = ["conv_lora_sam_segmentation", "sam2lora_fundus_segmentation"]
    with _monai_label_server(app, study.parent, models, tmp_path / "server.log") as (url, info):
        labels = info["models"]["conv_lora_sam_segmentation"]["labels"]
        assert labels == {"anterior hippocampus": 1, "posterior hippocampus": 2}  # the shipped adapter's
        # the fundus bundle and its prompt task segment pictures (MONAI Label takes a bundle's dimension from its
        # network's input, 64×64 slices for the hippocampus bundles: it says 2 for them although they take volumes)
        assert [info["models"][name]["dimension"] for name in ("sam2lora_fundus_segmentation", "sam2lora_prompts")] == [2, 2]
        # an input that cannot be segmented: a client error with the one line a command-line user reads
        for image, status, message in (
            ("no_such_study", 404, "no image path given"),
            ("nan_study", 422, "nan_study.nii.gz: 1 NaN"),
            ("truncated_study", 422, "truncated_study.nii.gz: cannot be read"),
            ("fundus", 422, "fundus.jpg: a 2D picture of (128, 128) pixels, but this bundle segments 3D MR volumes"),
        ):
            response = requests.post(f"{url}/infer/conv_lora_sam_segmentation", params={"image": image}, timeout=300)
            assert response.status_code == status and message in response.json()["detail"], response.text[:2000]
        response = requests.post(
            f"{url}/infer/conv_lora_sam_segmentation",
            params={"image": "hippocampus_001", "output": "image"},
            timeout=300,
        )
        assert response.status_code == 200, response.text[:2000]
        (tmp_path / "result.nii.gz").write_bytes(response.content)
        result, source = nib.load(tmp_path / "result.nii.gz"), nib.load(study)
        assert result.shape == source.shape and np.allclose(result.affine, source.affine, atol=1e-6)
        assert set(np.unique(np.asarray(result.dataobj))) <= {0, 1, 2}
        # the interactive task: a click on a fundus picture comes back as a PNG label map of the picture's size
        assert info["models"]["sam2lora_prompts"]["type"] == "deepgrow"

        def prompt(image, **prompts):
            return requests.post(f"{url}/infer/sam2lora_prompts", params={"image": image, "output": "image"},
                                 data={"params": json.dumps(prompts)}, timeout=300)  # fmt: skip

        response = prompt("fundus", foreground=[[60, 70]], background=[[5, 5]])
        assert response.status_code == 200, response.text[:2000]
        prompted = np.asarray(Image.open(io.BytesIO(response.content)))
        assert Image.open(io.BytesIO(response.content)).format == "PNG"
        assert prompted.shape == (128, 128) and set(np.unique(prompted)) <= {0, 1}
        # the vessel adapter was not trained on MR volumes; no prompt, a click outside: one line, not a bare 500
        for image, prompts, message in (
            ("hippocampus_001", {"foreground": [[17, 25, 17]]}, "a 3D volume, but this bundle segments 2D colour"),
            ("fundus", {}, "no prompt: click on the structure to segment"),
            ("fundus", {"foreground": [[300, 5]]}, "foreground: the click [300.0, 5.0] is outside the study"),
        ):
            response = prompt(image, **prompts)
            assert response.status_code == 422 and message in response.json()["detail"], response.text[:2000]


def _label_map(path: Path) -> np.ndarray:
    """A served or written label map: a NIfTI volume or a PNG picture."""
    return np.asarray(nib.load(path).dataobj) if path.name.endswith(".nii.gz") else np.asarray(Image.open(path))


def test_a_real_server_serves_every_shipped_adapter_as_common_segment_does(shared_data, tmp_path):
    """The four bundles exactly as they ship (trained ``models/model.pt``, LiteMedSAM with its released weights),
    copied into the app as the README says: a hippocampus MR volume from each of the three hippocampus adapters and
    a fundus photograph from SAM2LoRA's vessel adapter come back over HTTP with the labels ``common.segment`` writes
    for the same file."""
    import requests

    from common.segment import segment_scans

    shipped = sorted(p.name for p in (REPO_ROOT / "bundles").iterdir() if (p / "models" / "model.pt").is_file())
    assert len(shipped) == 4, shipped
    app = _monaibundle_app(tmp_path / "apps")
    for name in shipped:  # the README's `cp -r bundles/<name> apps/monaibundle/model/`
        shutil.copytree(REPO_ROOT / "bundles" / name, app / "model" / name)
    studies = tmp_path / "studies"
    volume = _hippocampus_study(shared_data, studies)
    # a 256² piece of a CHASE_DB1 test photograph (inside its field of view: a few windows, not 110)
    photograph = np.asarray(Image.open(shared_data / "chase_db1" / "Image_11L.jpg"))
    picture = studies / "fundus_11L.png"
    Image.fromarray(photograph[352:608, 352:608]).save(picture)
    with _monai_label_server(app, studies, shipped, tmp_path / "server.log") as (url, info):
        for name in shipped:
            study = picture if name == "sam2lora_fundus_segmentation" else volume
            stem, suffix = study.name.split(".")[0], (".nii.gz" if study is volume else ".png")
            response = requests.post(f"{url}/infer/{name}", params={"image": stem, "output": "image"}, timeout=600)
            assert response.status_code == 200, f"{name}: {response.text[:2000]}"
            reference = tmp_path / "segment" / name
            assert segment_scans(REPO_ROOT / "bundles" / name, study, reference, progress=False) == {str(study): "ok"}
            served_file = tmp_path / f"{name}{suffix}"
            served_file.write_bytes(response.content)
            served, expected = (_label_map(f) for f in (served_file, reference / f"{stem}_seg{suffix}"))
            names = json.loads((REPO_ROOT / "bundles" / name / "configs" / "inference.json").read_text())["label_names"]
            assert info["models"][name]["labels"] == {v.lower(): int(k) for k, v in names.items()}
            assert served.shape == expected.shape, name
            assert np.array_equal(served, expected), f"{name}: {np.mean(served != expected):.2%} of voxels differ"
            assert (expected > 0).mean() > 0.01, f"{name} found (almost) nothing: the shipped adapter is not in use"
