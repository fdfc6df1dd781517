"""FCOS, assembled: backbone -> FPN -> head, its targets, its loss and its post-processing.

Reads top to bottom like torchvision's fcos.py: the parts come in through the constructor
(`fpn=None`, `head=None` pick the hand-designed defaults), so searched decoders plug in unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import kernels
from .backbones import build_backbone
from .fpn import FPN
from .heads import FCOSHead
from .losses import fcos_loss

STRIDES = kernels.assign.FCOS_STRIDES


def batch_targets(feature_sizes, targets, strides=STRIDES, size_ranges=kernels.assign.FCOS_SIZE_RANGES):
    """FCOS targets for a batch, with the numba kernel: (labels N×P int64, ltrb N×P×4, ctr N×P).

    feature_sizes: [(H, W)] of P3..P7 as the network produced them; targets: dicts with numpy
    `boxes` (xyxy pixels of the padded input) and `labels`.
    """
    points, ranges = kernels.fcos_points(feature_sizes, strides, size_ranges)
    out = [kernels.fcos_targets(points, ranges, t["boxes"], t["labels"]) for t in targets]
    return tuple(np.stack(parts) for parts in zip(*out))


class FCOSDecoder(nn.Module):
    """Everything after the backbone: FPN + FCOS head, their loss and post-processing.

    This is the part NAS-FCOS searches and the part trained on cached features; `in_channels`
    maps c3..c5 to their widths. `fpn=None` / `head=None` pick the hand-designed defaults.
    """

    def __init__(self, in_channels: dict, num_classes: int, fpn: nn.Module | None = None,
                 head: nn.Module | None = None, width: int = 256, num_convs: int = 4,
                 score_thresh: float = 0.05, nms_thresh: float = 0.6, topk_per_level: int = 1000,
                 detections_per_img: int = 100):
        super().__init__()
        self.fpn = fpn if fpn is not None else FPN([in_channels[k] for k in ("c3", "c4", "c5")], width)
        self.head = head if head is not None else FCOSHead(width, num_classes, num_convs, STRIDES)
        self.num_classes = num_classes
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.topk_per_level, self.detections_per_img = topk_per_level, detections_per_img

    def forward(self, feats: dict) -> dict:
        pyramid = self.fpn(feats)                                    # P3..P7
        cls_logits, box_ltrb, ctr_logits = self.head(pyramid)       # N×P×K, N×P×4, N×P
        return {"cls_logits": cls_logits, "box_ltrb": box_ltrb, "ctr_logits": ctr_logits,
                "feature_sizes": [tuple(p.shape[-2:]) for p in pyramid]}

    def batchnorm_pass(self, feats: dict) -> None:
        """The forward `recompute_batchnorm` needs: the FPN, and the head only when it has BatchNorm
        (FCOS heads use GroupNorm: skipping them leaves the statistics bit-identical and saves the
        costlier half of every recalibration pass, issue 30)."""
        pyramid = self.fpn(feats)
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.head.modules()):
            self.head(pyramid)

    def loss(self, outputs: dict, targets: list[dict]) -> dict:
        """Loss against ground-truth boxes (targets assigned here by the numba kernel)."""
        labels, ltrb, ctr = batch_targets(outputs["feature_sizes"], targets)
        return self.loss_from_targets(outputs, *(torch.from_numpy(t) for t in (labels, ltrb, ctr)))

    def loss_from_targets(self, outputs: dict, labels, ltrb, ctr) -> dict:
        """Loss against precomputed per-location targets (as the feature cache stores them)."""
        device = outputs["cls_logits"].device
        return fcos_loss(outputs["cls_logits"], outputs["box_ltrb"], outputs["ctr_logits"],
                         labels.to(device).long(), ltrb.to(device).float(), ctr.to(device).float())

    def loss_from_batch(self, outputs: dict, batch: dict) -> dict:
        """Loss against a feature-cache batch (its FCOS targets)."""
        return self.loss_from_targets(outputs, batch["labels"], batch["ltrb"], batch["ctr"])

    @torch.no_grad()
    def postprocess(self, outputs: dict, image_sizes) -> list[dict]:
        """Per image: score = sqrt(cls · centerness) above `score_thresh`, top-k per level, boxes
        clipped to the image, per-class NMS (numba kernel), best `detections_per_img` kept."""
        points, _ = kernels.fcos_points(outputs["feature_sizes"])
        level_sizes = [h * w for h, w in outputs["feature_sizes"]]
        cls = torch.sigmoid(outputs["cls_logits"]).cpu().numpy()
        ctr = torch.sigmoid(outputs["ctr_logits"]).cpu().numpy()
        ltrb = outputs["box_ltrb"].float().cpu().numpy()
        results = []
        for i, (h, w) in enumerate(image_sizes):
            boxes, scores, labels = [], [], []
            start = 0
            for n in level_sizes:
                sl = slice(start, start + n)
                start += n
                prob = cls[i, sl]
                loc, lab = np.nonzero(prob > self.score_thresh)
                loc, lab, score = top_k(loc, lab, np.sqrt(prob[loc, lab] * ctr[i, sl][loc]), self.topk_per_level)
                pt, d = points[sl][loc], ltrb[i, sl][loc]
                boxes.append(np.concatenate([pt - d[:, :2], pt + d[:, 2:]], axis=1))
                scores.append(score)
                labels.append(lab)
            results.append(clip_and_nms(boxes, scores, labels, (h, w), self.nms_thresh, self.detections_per_img))
        return results


def top_k(loc, lab, score, k: int):
    """The k best-scored candidates of one level (all of them when there are fewer)."""
    if len(score) > k:
        top = np.argpartition(-score, k)[:k]
        return loc[top], lab[top], score[top]
    return loc, lab, score


def clip_and_nms(boxes, scores, labels, image_size, nms_thresh: float, max_dets: int) -> dict:
    """Per-level candidates of one image -> boxes clipped to it, per-class NMS, the best max_dets."""
    h, w = image_size
    boxes = np.concatenate(boxes).astype(np.float32)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    scores, labels = np.concatenate(scores).astype(np.float32), np.concatenate(labels)
    keep = kernels.batched_nms(boxes, scores, labels, nms_thresh)[:max_dets]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


class FCOS(nn.Module):
    """Anchor-free one-stage detector (Tian et al. 2019): backbone (C2..C5) -> decoder."""

    def __init__(self, backbone: nn.Module, decoder: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder

    def forward(self, images: torch.Tensor) -> dict:
        return self.decoder(self.backbone(images))

    def loss(self, outputs: dict, targets: list[dict]) -> dict:
        return self.decoder.loss(outputs, targets)

    def postprocess(self, outputs: dict, image_sizes) -> list[dict]:
        return self.decoder.postprocess(outputs, image_sizes)


def build_fcos(num_classes: int, backbone: str = "resnet18", weights=None, frozen_bn: bool = False,
               width: int = 256, num_convs: int = 4, **kwargs) -> FCOS:
    """The baseline detector from plain arguments (what checkpoints record to rebuild it)."""
    net = build_backbone(backbone, weights, frozen_bn)
    return FCOS(net, FCOSDecoder(net.out_channels, num_classes, width=width, num_convs=num_convs, **kwargs))
