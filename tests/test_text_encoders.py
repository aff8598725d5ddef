"""Label-name text encoders: the packaged all-MiniLM-L6-v2, CLIP through transformers, precomputed files."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from common.networks import TextAffineLayer
from common.text_encoders import (
    ClipTextEncoder,
    PrecomputedTextEncoder,
    SentenceTransformerTextEncoder,
    TextEncoder,
    build_text_encoder,
    save_text_embeddings,
)


@pytest.fixture(scope="module")
def minilm():
    return build_text_encoder()


def test_packaged_minilm_embeds_names_offline(minilm):
    assert isinstance(minilm, SentenceTransformerTextEncoder) and minilm.dim == 384
    assert "all-MiniLM-L6-v2" in minilm.description
    names = ["anterior hippocampus", "posterior hippocampus", "liver"]
    emb = minilm.embed(names)
    assert emb.shape == (3, 384) and emb.dtype == torch.float32 and not emb.requires_grad
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-4)  # the model L2-normalises
    sim = emb @ emb.t()
    assert sim[0, 1] > sim[0, 2] + 0.3  # a real sentence encoder: the two hippocampus parts are close, liver is not
    assert torch.equal(minilm.embed(names), emb)  # deterministic
    # usable in autograd (sentence-transformers returns inference-mode tensors; the encoder copies them)
    (torch.nn.Linear(384, 2)(emb).sum()).backward()


def test_precomputed_embeddings_round_trip(minilm, tmp_path):
    names = ["liver", "tumor"]
    save_text_embeddings(minilm, names, tmp_path / "names.pt")
    encoder = build_text_encoder("precomputed", tmp_path / "names.pt")
    assert encoder.dim == 384 and torch.allclose(encoder.embed(names[::-1]), minilm.embed(names)[[1, 0]])
    (tmp_path / "names.json").write_text(json.dumps({"liver": [1.0, 0.0], "tumor": [0.0, 2.0]}))
    from_json = PrecomputedTextEncoder(tmp_path / "names.json")
    assert from_json.embed(["tumor"]).tolist() == [[0.0, 2.0]]
    with pytest.raises(KeyError, match="spleen"):
        from_json.embed(["spleen"])
    (tmp_path / "bad.json").write_text(json.dumps({"a": [1.0], "b": [1.0, 2.0]}))
    with pytest.raises(ValueError, match="one length"):
        PrecomputedTextEncoder(tmp_path / "bad.json")


def _tiny_clip_folder(folder):
    """A random-weight CLIP text tower with a letter-level tokenizer, saved in Hugging Face format."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=32,
        projection_dim=24,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    torch.manual_seed(0)
    CLIPTextModelWithProjection(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def test_clip_text_tower_from_a_hugging_face_folder(tmp_path):
    _tiny_clip_folder(tmp_path)
    encoder = build_text_encoder("clip", tmp_path)
    assert isinstance(encoder, ClipTextEncoder) and encoder.dim == 24 and "transformers" in encoder.description
    emb = encoder.embed(["liver", "tumor", "liver"])
    assert emb.shape == (3, 24) and torch.allclose(emb[0], emb[2]) and not torch.allclose(emb[0], emb[1])


def test_clip_checkpoint_file_without_open_clip_says_what_to_install(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_open_clip(name, *args, **kwargs):
        if name == "open_clip":
            raise ImportError("no module named open_clip")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_open_clip)
    (tmp_path / "ViT-B-32.pt").write_bytes(b"not really")
    with pytest.raises(ImportError, match="open-clip-torch"):
        ClipTextEncoder(tmp_path / "ViT-B-32.pt")


def test_build_text_encoder_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown text encoder"):
        build_text_encoder("bert")
    with pytest.raises(ValueError, match="needs weights"):
        build_text_encoder("clip")
    with pytest.raises(FileNotFoundError, match="no CLIP weights"):
        build_text_encoder("clip", tmp_path / "missing")


class _Fixed(TextEncoder):
    def __init__(self, table):
        self.table, self.dim, self.description = table, 4, "fixed test vectors"

    def embed(self, texts):
        return torch.stack([self.table[t] for t in texts])


def test_text_affine_layer_single_row_and_checkpoint_mismatch_warning(caplog):
    emb = torch.randn(2, 4)
    layer = TextAffineLayer(emb, out_features=8).train()
    assert layer().shape == (2, 8)
    assert layer(emb[:1]).shape == (1, 8)  # one row in training: running statistics, no error
    other = TextAffineLayer(torch.randn(2, 4), out_features=8)
    with caplog.at_level(logging.WARNING):
        other.load_state_dict(layer.state_dict())
    assert "differ" in caplog.text and torch.equal(other.text_embeddings, emb)
