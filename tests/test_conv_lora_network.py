"""Conv-LoRA network (binary and multi-class decoders) and its losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common.losses import MaskClassificationLoss, StructureLoss, WithAuxiliaryLoss
from common.networks import ConvLoraSamNet


class _Recorded(nn.Module):
    """Stands in for a network: holds the predictions a loss reads."""

    def __init__(self, class_logits, mask_logits):
        super().__init__()
        self.last_class_logits, self.last_mask_logits = class_logits, mask_logits


def test_matching_loss_on_a_hand_made_case():
    # one image, target: class 1 (index 0) fills the left half; 2 queries, K = 2
    target = torch.zeros(1, 1, 2, 2)
    target[0, 0, :, 0] = 1
    good = torch.tensor([[20.0, -20.0], [20.0, -20.0]])  # query mask = left half
    bad = -good
    masks = torch.stack([bad, good])[None]  # query 0 wrong, query 1 right
    classes = torch.tensor([[[0.0, 0.0, 3.0], [3.0, 0.0, 0.0]]])  # query 1 says class 1, query 0 "no object"
    loss_fn = MaskClassificationLoss(_Recorded(classes, masks), num_classes=2)
    rows, cols = loss_fn.match(classes[0], masks[0], torch.tensor([0]), target[0, 0].flatten()[None])
    assert rows.tolist() == [1] and cols.tolist() == [0]  # the right query is matched
    # by hand: CE over both queries (targets: query 0 → no object (weight 0.1), query 1 → class 0 (weight 1))
    log_p = F.log_softmax(classes[0], -1)
    ce = -(0.1 * log_p[0, 2] + 1.0 * log_p[1, 0]) / (0.1 + 1.0)
    bce = F.binary_cross_entropy_with_logits(good.flatten(), target[0, 0].flatten())
    prob = good.flatten().sigmoid()
    dice = 1 - (2 * (prob * target.flatten()).sum() + 1) / (prob.sum() + target.sum() + 1)
    expected = 10 * ce + 5 * bce + 5 * dice
    assert loss_fn(torch.zeros(1), target).item() == pytest.approx(expected.item(), rel=1e-5)
    # swapping the queries' roles gives a worse loss
    swapped = MaskClassificationLoss(_Recorded(classes.flip(1), masks), num_classes=2)
    assert swapped(torch.zeros(1), target) > loss_fn(torch.zeros(1), target)


def test_matching_loss_without_foreground_trains_no_object():
    classes = torch.zeros(1, 3, 3, requires_grad=True)
    masks = torch.zeros(1, 3, 4, 4, requires_grad=True)
    loss = MaskClassificationLoss(_Recorded(classes, masks), num_classes=2)(torch.zeros(1), torch.zeros(1, 1, 4, 4))
    loss.backward()
    assert loss.item() == pytest.approx(10 * math.log(3), rel=1e-5)  # uniform logits, every query → "no object"
    assert classes.grad.abs().sum() > 0


def test_structure_loss_by_hand_and_boundary_weighting():
    logits = torch.zeros(1, 1, 4, 4)  # p = 0.5 everywhere
    target = torch.zeros(1, 1, 4, 4)
    loss = StructureLoss(kernel_size=1)(logits, target)  # k = 1: no boundary term, weights 1
    wbce = math.log(2)
    wiou = 1 - (0 + 1) / (0.5 * 16 - 0 + 1)
    assert loss.item() == pytest.approx(wbce + wiou, rel=1e-5)
    # with the boundary term, errors at the edge of an object cost more than errors far from it
    target = torch.zeros(1, 1, 32, 32)
    target[..., 8:24, 8:24] = 1
    edge_miss = target.clone() * 20 - 10
    edge_miss[..., 8, 8:24] = -10
    far_miss = target.clone() * 20 - 10
    far_miss[..., 0, 0:16] = 10
    assert StructureLoss(kernel_size=7)(edge_miss, target) > StructureLoss(kernel_size=1)(edge_miss, target)


@pytest.mark.parametrize("backbone", ["sam_vit_test", "sam2.1_hiera_test"])
def test_binary_network_trains_adapters_and_decoder_not_the_iou_head(backbone):
    net = ConvLoraSamNet(backbone, checkpoint=None)
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert any(".gate" in n for n in trainable) and any("transformer" in n for n in trainable)
    assert not any("iou_prediction_head" in n or "prompt_encoder" in n for n in trainable)
    assert not any("output_hypernetworks_mlps.1" in n for n in trainable)
    assert not any(
        n.startswith("sam.image_encoder")
        and ".lora_" not in n
        and "experts" not in n
        and not n.endswith((".gate", ".noise"))
        for n in trainable
    )
    net.train()
    label = (torch.rand(2, 1, 48, 64) > 0.7).float()
    out = net(torch.rand(2, 3, 48, 64))
    assert out.shape == (2, 1, 48, 64)
    loss = WithAuxiliaryLoss(StructureLoss(), net)(out, label)
    assert loss > StructureLoss()(out, label)  # the balance losses are added
    loss.backward()
    assert all(p.grad is not None for n, p in net.named_parameters() if ".lora_A" in n)


def test_multiclass_network_semantic_output():
    net = ConvLoraSamNet("sam_vit_test", checkpoint=None, num_classes=2, num_queries=5).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 1, 40, 52))
    assert out.shape == (2, 3, 40, 52)
    assert net.last_class_logits.shape == (2, 5, 3) and net.last_mask_logits.shape[:2] == (2, 5)
    # softmax logits of the semantic scores: sum_q softmax(class_q)[:K] * sigmoid(mask_q), background 1 - max
    classes = net.last_class_logits.softmax(-1)[..., :-1]
    semantic = net.postprocess(torch.einsum("bqk,bqhw->bkhw", classes, net.last_mask_logits.sigmoid()), 40, 52)
    scores = torch.cat([1 - semantic.clamp(0, 1).amax(1, keepdim=True), semantic.clamp(0, 1)], dim=1)
    probabilities = out.softmax(1)
    assert torch.allclose(probabilities.sum(1), torch.ones(2, 40, 52))
    assert torch.allclose(probabilities, scores / scores.sum(1, keepdim=True), atol=1e-5)
    assert torch.equal(out.argmax(1), scores.argmax(1))  # the label map is the scores'
    # queries start near the pretrained single-mask token, distinct from one another
    token = net.sam.mask_decoder.mask_tokens.weight[0]
    offsets = net.query_tokens - token
    assert torch.allclose(offsets.std(), token.std(), rtol=0.3)
    assert torch.cdist(net.query_tokens, net.query_tokens).add(torch.eye(5)).min() > 0
    copies = ConvLoraSamNet("sam_vit_test", checkpoint=None, num_classes=2, num_queries=5, query_init_noise=0.0)
    assert torch.allclose(copies.query_tokens, copies.sam.mask_decoder.mask_tokens.weight[0].expand(5, -1))
    with pytest.raises(ValueError, match="prompt-free"):
        net(torch.rand(1, 1, 40, 52), boxes=torch.tensor([[0.0, 0.0, 5.0, 5.0]]))
