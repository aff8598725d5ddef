"""Mask-classification loss with Hungarian matching (MaskFormer / Mask2Former style) for query-based decoders."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

__all__ = ["MaskClassificationLoss"]


def _dice_cost(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pairwise soft Dice loss between N predicted (probabilities) and M target masks, both flattened: ``N×M``."""
    numerator = 2 * pred @ target.t()
    denominator = pred.sum(-1)[:, None] + target.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def _bce_cost(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pairwise mean BCE between N mask logits and M binary targets, flattened: ``N×M``."""
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ target.t() + neg @ (1 - target).t()) / logits.shape[-1]


class MaskClassificationLoss(nn.Module):
    """Match query predictions to the ground-truth class masks of each image, then
    ``w_class·CE(all queries; unmatched → "no object") + w_mask·BCE + w_dice·Dice (matched pairs)``.

    Matching is one-to-one per image (``scipy.optimize.linear_sum_assignment``) on the cost
    ``−w_class·p(class) + w_mask·BCE + w_dice·Dice``. Ground truth comes as the label map the bundle loads
    (``B×1×H×W`` of values 0..K, or one-hot ``B×(K+1)×H×W``); class k's mask is one target when present.

    The prediction is read from the network (``last_class_logits``: ``B×N×(K+1)``, ``last_mask_logits``:
    ``B×N×h×w``), because MONAI's engines hand the loss only the network's (semantic) output; masks are compared at
    the decoder's resolution ``h×w`` (targets resized with nearest neighbour).

    Args:
        network: the query-based network (``DistributedDataParallel`` is looked through).
        num_classes: K foreground classes.
        class_weight, mask_weight, dice_weight: term weights (Conv-LoRA's recipe: 10, 5, 5).
        no_object_weight: CE weight of the "no object" class (Mask2Former: 0.1).
    """

    def __init__(
        self,
        network: nn.Module,
        num_classes: int,
        class_weight: float = 10.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        no_object_weight: float = 0.1,
    ) -> None:
        super().__init__()
        # not registered: the loss must not own the network's parameters
        object.__setattr__(self, "_network", network)
        self.num_classes = num_classes
        self.class_weight = class_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        weights = torch.ones(num_classes + 1)
        weights[-1] = no_object_weight
        self.register_buffer("class_weights", weights, persistent=False)

    def _targets(self, label: torch.Tensor, size: tuple[int, int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per image: present class ids (M) and their masks (``M×h·w``) at the decoder resolution."""
        if label.shape[1] == 1:
            values = label[:, 0].long()
        else:
            values = label.argmax(1)
        values = F.interpolate(values[:, None].float(), size=size, mode="nearest")[:, 0].long()
        out = []
        for v in values:
            classes = [k for k in range(1, self.num_classes + 1) if (v == k).any()]
            masks = (
                torch.stack([(v == k).flatten().float() for k in classes])
                if classes
                else v.new_zeros((0, v.numel())).float()
            )
            out.append((torch.tensor([k - 1 for k in classes], device=v.device, dtype=torch.long), masks))
        return out

    @torch.no_grad()
    def match(self, class_logits: torch.Tensor, mask_logits: torch.Tensor, classes: torch.Tensor, masks: torch.Tensor):
        """Hungarian matching for one image: indices of matched queries and of their targets."""
        if classes.numel() == 0:
            empty = torch.zeros(0, dtype=torch.long, device=class_logits.device)
            return empty, empty
        prob = class_logits.softmax(-1)[:, classes]
        flat = mask_logits.flatten(1)
        cost = (
            -self.class_weight * prob
            + self.mask_weight * _bce_cost(flat, masks)
            + self.dice_weight * _dice_cost(flat.sigmoid(), masks)
        )
        rows, cols = linear_sum_assignment(cost.float().cpu().numpy())
        device = class_logits.device
        return torch.as_tensor(rows, dtype=torch.long, device=device), torch.as_tensor(
            cols, dtype=torch.long, device=device
        )

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``input`` (the network's semantic output) is not used; ``target`` is the label map."""
        network = getattr(self._network, "module", self._network)
        class_logits, mask_logits = network.last_class_logits, network.last_mask_logits
        if class_logits is None or mask_logits is None:
            raise RuntimeError("the network recorded no query predictions: run its multi-class forward first")
        targets = self._targets(target, tuple(mask_logits.shape[-2:]))
        class_target = torch.full(
            class_logits.shape[:2], self.num_classes, dtype=torch.long, device=class_logits.device
        )
        matched_logits, matched_masks = [], []
        for b, (classes, masks) in enumerate(targets):
            rows, cols = self.match(class_logits[b], mask_logits[b], classes, masks)
            class_target[b, rows] = classes[cols]
            matched_logits.append(mask_logits[b, rows].flatten(1))
            matched_masks.append(masks[cols])
        loss_class = F.cross_entropy(
            class_logits.transpose(1, 2), class_target, weight=self.class_weights.to(class_logits)
        )
        logits = torch.cat(matched_logits)
        if logits.shape[0] == 0:
            return self.class_weight * loss_class + 0.0 * mask_logits.sum()
        masks = torch.cat(matched_masks)
        loss_mask = F.binary_cross_entropy_with_logits(logits, masks)
        prob = logits.sigmoid()
        loss_dice = (1 - (2 * (prob * masks).sum(-1) + 1) / (prob.sum(-1) + masks.sum(-1) + 1)).mean()
        return self.class_weight * loss_class + self.mask_weight * loss_mask + self.dice_weight * loss_dice
