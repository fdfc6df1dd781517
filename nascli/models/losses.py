"""FCOS losses: sigmoid focal (classification), GIoU (boxes), BCE (centerness).

All three are normalised by the number of positive locations in the batch, as in FCOS.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss


def fcos_loss(cls_logits, box_ltrb, ctr_logits, labels, ltrb_targets, ctr_targets,
              alpha: float = 0.25, gamma: float = 2.0) -> dict:
    """Loss terms for flattened predictions (N×P×K, N×P×4, N×P) and targets (N×P, N×P×4, N×P);
    a target label of -1 is background."""
    positive = labels >= 0
    num_pos = max(1.0, float(positive.sum()))
    onehot = torch.zeros_like(cls_logits)
    onehot[positive, labels[positive]] = 1.0
    loss_cls = sigmoid_focal_loss(cls_logits, onehot, alpha=alpha, gamma=gamma, reduction="sum") / num_pos
    if positive.any():
        pred, target = box_ltrb[positive], ltrb_targets[positive]
        # Boxes relative to their location: (-l, -t, r, b); the location cancels in the IoU.
        to_box = torch.tensor([-1.0, -1.0, 1.0, 1.0], device=pred.device)
        loss_reg = generalized_box_iou_loss(pred * to_box, target * to_box, reduction="sum") / num_pos
        loss_ctr = F.binary_cross_entropy_with_logits(
            ctr_logits[positive], ctr_targets[positive], reduction="sum") / num_pos
    else:
        loss_reg = loss_ctr = box_ltrb.sum() * 0.0
    return {"cls": loss_cls, "reg": loss_reg, "ctr": loss_ctr}
