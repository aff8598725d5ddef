"""Every method's network survives what serving and checkpointing do to it: ``copy.deepcopy`` (MONAI Label serves a
copy of the bundle's network) and a ``state_dict`` round trip into a fresh instance, on LiteMedSAM's real architecture
(random weights), where SAM2LoRA's encoder-skip hooks are on."""

from __future__ import annotations

import copy
import zlib

import pytest
import torch

from common.networks import BalrSamNet, ConvLoraSamNet, Sam2LoraNet, SSamNet
from common.text_encoders import TextEncoder


class _NameVectors(TextEncoder):
    """A fixed vector per name: the copies need distinct embeddings, not language."""

    description = "fixed test vectors"

    def embed(self, texts):
        return torch.stack(
            [torch.randn(16, generator=torch.Generator().manual_seed(zlib.crc32(t.encode()))) for t in texts]
        )


BUILDERS = {
    "sam2lora": lambda: Sam2LoraNet("litemedsam", checkpoint=None, input_size=64, lora_rank=2),
    "balr_sam": lambda: BalrSamNet("litemedsam", checkpoint=None, input_size=64, num_classes=2, adapter_rank=2),
    "s_sam": lambda: SSamNet(
        "litemedsam", checkpoint=None, input_size=64, label_names=["a", "b"], text_encoder=_NameVectors()
    ),
    "conv_lora": lambda: ConvLoraSamNet("litemedsam", checkpoint=None, input_size=64, num_classes=2, lora_rank=2),
}


def _perturbed(net: torch.nn.Module) -> torch.nn.Module:
    """Non-zero values in every trainable tensor (zero-initialised adapters would hide a copy that lost them)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in net.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.02)
    return net.eval()


@pytest.mark.parametrize("method", sorted(BUILDERS))
def test_a_deep_copy_runs_on_its_own_and_matches(method):
    torch.manual_seed(0)
    original = _perturbed(BUILDERS[method]())
    image = torch.rand(2, 1, 48, 56)
    with torch.no_grad():
        expected = original(image)
        served = copy.deepcopy(original)
        # the copy alone, as MONAI Label runs it: nothing it needs may live in the original
        assert torch.allclose(served(image), expected, atol=1e-5)
        # and the copy writes nothing into the original: the original still runs, unchanged
        assert torch.allclose(original(image), expected, atol=1e-5)
        if method == "sam2lora":
            assert served.skip_fusion is not None and served.skip_fusion._captured is not original.skip_fusion._captured


@pytest.mark.parametrize("method", sorted(BUILDERS))
def test_a_state_dict_round_trip_reproduces_the_network(method):
    torch.manual_seed(0)
    trained = _perturbed(BUILDERS[method]())
    fresh = BUILDERS[method]().eval()
    fresh.load_state_dict(trained.state_dict(), strict=True)
    image = torch.rand(1, 3, 40, 40)
    with torch.no_grad():
        assert torch.allclose(fresh(image), trained(image), atol=1e-5)
