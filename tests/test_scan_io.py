"""Reading scans for inference: good NIfTI / NRRD / DICOM inputs, and one clear error for each bad one."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from common.data.scan_io import ScanInputError, list_scans, read_scan


def _nifti(path, array, affine=None):
    nib.save(nib.Nifti1Image(array, np.diag([0.8, 0.9, 2.5, 1.0]) if affine is None else affine), str(path))
    return path


def _write(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not an image")
    return path


def _dicom_series(folder, array, series_number=1):
    import itk

    folder.mkdir(parents=True, exist_ok=True)
    image = itk.image_from_array(array.astype(np.int16))
    names = [str(folder / f"s{series_number}_{i:03d}.dcm") for i in range(array.shape[0])]
    writer = itk.ImageSeriesWriter[itk.Image[itk.SS, 3], itk.Image[itk.SS, 2]].New(
        Input=image, FileNames=names, ImageIO=itk.GDCMImageIO.New()
    )
    writer.Update()
    return folder


def test_reads_nifti_nrrd_and_a_dicom_series(tmp_path):
    array = np.random.default_rng(0).random((12, 10, 6)).astype(np.float32)
    volume = read_scan(_nifti(tmp_path / "scan.nii.gz", array))
    assert volume.shape == (1, 12, 10, 6) and np.allclose(np.asarray(volume[0]), array)
    assert np.allclose(np.diag(np.asarray(volume.affine))[:3], [0.8, 0.9, 2.5])

    import itk

    itk.imwrite(itk.image_from_array(np.ascontiguousarray(array.transpose(2, 1, 0))), str(tmp_path / "scan.nrrd"))
    assert read_scan(tmp_path / "scan.nrrd").shape == (1, 12, 10, 6)

    series = _dicom_series(tmp_path / "dicom", (np.arange(5 * 8 * 7).reshape(5, 8, 7) % 300))
    assert sorted(read_scan(series).shape[1:]) == [5, 7, 8]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "absent.nii.gz", "no such file"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "folder is empty"),
        (lambda p: _write(p / "notes" / "a.txt").parent, "no DICOM"),
        (lambda p: _write(p / "scan.txt"), "not a scan file"),
        (lambda p: _nifti(p / "four_d.nii.gz", np.zeros((8, 8, 6, 3), np.float32)), "4D series or a multi-channel"),
        (lambda p: _nifti(p / "thin.nii.gz", np.zeros((8, 8, 1), np.float32)), r"1 voxel\(s\) thick"),
    ],
)
def test_bad_inputs_fail_with_one_clear_error(tmp_path, make, message):
    with pytest.raises(ScanInputError, match=message):
        read_scan(make(tmp_path), dimension=3)


def test_truncated_file_and_non_finite_voxels(tmp_path):
    good = _nifti(tmp_path / "scan.nii.gz", np.ones((16, 16, 8), np.float32))
    raw = gzip.decompress(good.read_bytes())
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(ScanInputError, match="(?s)cannot be read.*complete"):
        read_scan(truncated)
    array = np.ones((8, 8, 4), np.float32)
    array[1, 2, 3], array[0, 0, 0] = np.nan, np.inf
    with pytest.raises(ScanInputError, match="1 NaN and 1 infinite"):
        read_scan(_nifti(tmp_path / "nan.nii.gz", array))


def test_mixed_dicom_series_are_refused(tmp_path):
    folder = tmp_path / "mixed"
    _dicom_series(folder, np.zeros((4, 8, 8)), series_number=1)
    _dicom_series(folder, np.ones((3, 8, 8)), series_number=2)
    with pytest.raises(ScanInputError, match="2 DICOM series are mixed"):
        read_scan(folder)


def test_2d_images_are_read_grey_or_rgb_and_other_channel_counts_are_refused(tmp_path):
    from PIL import Image

    rgb = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(tmp_path / "rgba.png")
    assert read_scan(tmp_path / "rgb.png").shape == (3, 30, 20)  # MONAI's PIL reading: (x, y)
    assert read_scan(tmp_path / "grey.png").shape == (1, 30, 20)
    with pytest.raises(ScanInputError, match="4 channels"):
        read_scan(tmp_path / "rgba.png")
    for height, width in ((1, 1), (1, 7)):  # nothing to segment, and the writers squeeze such a label away
        Image.fromarray(rgb[:height, :width, 0]).save(tmp_path / "line.png")
        with pytest.raises(ScanInputError, match=f"only {width}×{height} pixels; pass a picture at least 2"):
            read_scan(tmp_path / "line.png")
    with pytest.raises(ScanInputError, match="a 2D input, but this configuration segments 3D"):
        read_scan(tmp_path / "rgb.png", dimension=3)
    with pytest.raises(ScanInputError, match="a 3D input, but this configuration segments 2D"):
        read_scan(_nifti(tmp_path / "scan.nii.gz", np.zeros((8, 8, 4), np.float32)), dimension=2)


def test_list_scans_of_a_file_a_folder_of_scans_and_a_dicom_series(tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    _nifti(scans / "b.nii.gz", np.zeros((8, 8, 4), np.float32))
    _nifti(scans / "a.nii", np.zeros((8, 8, 4), np.float32))
    _dicom_series(scans / "series", np.zeros((3, 8, 8)))
    _write(scans / "notes.txt")
    assert [item["image"] for item in list_scans(scans)] == [str(scans / n) for n in ("a.nii", "b.nii.gz", "series")]
    assert list_scans(scans / "series") == [{"image": str(scans / "series")}]  # DICOM files need no suffix
    assert list_scans(scans / "a.nii") == [{"image": str(scans / "a.nii")}]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScanInputError, match="no scans in this folder"):
        list_scans(tmp_path / "empty")
    with pytest.raises(ScanInputError, match="no such file"):
        list_scans(tmp_path / "absent")


def test_two_inputs_of_one_name_are_refused_before_either_is_segmented(tmp_path):
    # case.nii.gz and case.nii (or x.jpg beside x.png) would both write case_seg…: one result would be lost
    scans = tmp_path / "scans"
    scans.mkdir()
    _nifti(scans / "case.nii.gz", np.zeros((8, 8, 4), np.float32))
    _nifti(scans / "case.nii", np.zeros((8, 8, 4), np.float32))
    with pytest.raises(ScanInputError, match=r"case.nii and case.nii.gz would both write their results as case_seg"):
        list_scans(scans)
    (scans / "case.nii").rename(scans / "case_2.nii")
    assert len(list_scans(scans)) == 2
