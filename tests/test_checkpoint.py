"""Checkpoint loading: good file, missing file, wrong keys, truncated file, unsafe pickle, checksum, resizing."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from common.backbones import CheckpointError, build_backbone, read_checkpoint, sha256sum
from common.backbones.checkpoint import load_state_dict_strict


@pytest.fixture
def saved_test_sam(tmp_path):
    model = build_backbone("sam_vit_test", checkpoint=None)
    path = tmp_path / "sam_test.pth"
    torch.save(model.state_dict(), path)
    return model, path


def test_good_file_loads_exactly(saved_test_sam):
    model, path = saved_test_sam
    loaded = build_backbone("sam_vit_test", checkpoint=path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_nested_model_key_is_unwrapped(tmp_path, saved_test_sam):
    model, _ = saved_test_sam
    path = tmp_path / "nested.pt"
    torch.save({"model": model.state_dict()}, path)  # SAM2 release layout
    assert set(read_checkpoint(path)) == set(model.state_dict())


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found.*nope.pth"):
        build_backbone("sam_vit_test", checkpoint=tmp_path / "nope.pth")


def test_wrong_keys_are_named(tmp_path, saved_test_sam):
    _, path = saved_test_sam
    state = torch.load(path, weights_only=True)
    state["image_encoder.extra.weight"] = torch.zeros(1)
    del state["mask_decoder.iou_token.weight"]
    state["mask_decoder.mask_tokens.weight"] = torch.zeros(7, 3)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(CheckpointError) as err:
        build_backbone("sam_vit_test", checkpoint=bad)
    message = str(err.value)
    assert "bad.pth" in message
    assert "missing keys (1): mask_decoder.iou_token.weight" in message
    assert "unexpected keys (1): image_encoder.extra.weight" in message
    assert "mis-shaped keys (1): mask_decoder.mask_tokens.weight (file (7, 3)" in message


def test_checkpoint_of_another_backbone_is_refused(tmp_path):
    other = build_backbone("sam2.1_hiera_test", checkpoint=None)
    path = tmp_path / "sam2.pt"
    torch.save({"model": other.state_dict()}, path)
    with pytest.raises(CheckpointError, match="does not match the model Sam"):
        build_backbone("sam_vit_test", checkpoint=path)


def test_truncated_file(tmp_path, saved_test_sam):
    _, path = saved_test_sam
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        build_backbone("sam_vit_test", checkpoint=truncated)


class _RunsCodeWhenUnpickled:
    def __reduce__(self):
        return (os.system, ("echo unsafe > /dev/null",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_unsafe_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(1), "payload": _RunsCodeWhenUnpickled()}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        read_checkpoint(path)
    plain = tmp_path / "evil.pkl"
    plain.write_bytes(pickle.dumps(_RunsCodeWhenUnpickled()))
    with pytest.raises(CheckpointError):
        read_checkpoint(plain)


def test_checksum_is_verified(saved_test_sam):
    _, path = saved_test_sam
    assert set(read_checkpoint(path, sha256=sha256sum(path)))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        read_checkpoint(path, sha256="0" * 64)


def test_released_file_name_triggers_checksum(tmp_path, saved_test_sam, monkeypatch):
    # a file named like the released LiteMedSAM checkpoint is checked against the published sha256
    _, path = saved_test_sam
    fake = tmp_path / "lite_medsam.pth"
    fake.write_bytes(path.read_bytes())
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        build_backbone("litemedsam", checkpoint=fake)


def test_position_embeddings_are_resized_for_another_input_size(saved_test_sam):
    model, path = saved_test_sam  # built for 128² (8×8 tokens)
    small = build_backbone("sam_vit_test", checkpoint=path, input_size=64)
    assert small.image_encoder.pos_embed.shape == (1, 4, 4, 32)
    # the global block's relative position table follows the token grid: 2·4−1 rows
    assert small.image_encoder.blocks[1].attn.rel_pos_h.shape[0] == 7
    # everything that does not depend on the size is loaded unchanged
    assert torch.equal(small.mask_decoder.iou_token.weight, model.mask_decoder.iou_token.weight)
    # a constant embedding stays constant under interpolation
    model.image_encoder.pos_embed.data.fill_(0.25)
    torch.save(model.state_dict(), path)
    small = build_backbone("sam_vit_test", checkpoint=path, input_size=64)
    assert torch.allclose(small.image_encoder.pos_embed, torch.full_like(small.image_encoder.pos_embed, 0.25))


def test_allowed_missing_keys():
    model = build_backbone("sam_vit_test", checkpoint=None)
    state = model.state_dict()
    del state["mask_decoder.iou_token.weight"]
    with pytest.raises(CheckpointError):
        load_state_dict_strict(model, state)
    load_state_dict_strict(model, state, allowed_missing=[r"mask_decoder\.iou_token\..*"])
