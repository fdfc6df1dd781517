"""RetinaNet (Lin et al. 2017) as NAS-FPN uses it: anchors, IoU matching, focal + smooth-L1
losses, decoding and NMS, with a pyramid passed in (a stacked NAS-FPN, or any module returning
P3..P7). Reads top to bottom: anchors -> targets -> head -> decoder.

Anytime detection (NAS-FPN §3.2): when the pyramid is a stack (`pyramid.stages`), the decoder can
stop after K stages (`exit_after`), and with `deep_supervision` it trains the shared head on the
output of every stage, so every early exit is a trained detector.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from .. import kernels
from .detector import clip_and_nms, top_k

STRIDES = (8, 16, 32, 64, 128)
ANCHOR_SCALES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
ANCHOR_RATIOS = (0.5, 1.0, 2.0)
ANCHORS_PER_LOCATION = len(ANCHOR_SCALES) * len(ANCHOR_RATIOS)
FG_IOU, BG_IOU = 0.5, 0.4
FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 1.5   # NAS-FPN §4.1: alpha 0.25, "beta" (the focusing gamma) 1.5
SMOOTH_L1_BETA = 1 / 9                 # Detectron's RetinaNet
BBOX_CLIP = math.log(1000.0 / 16)


def anchors_for(feature_sizes, strides=STRIDES, base: float = 4.0) -> np.ndarray:
    """All anchors (A, 4) xyxy, level-major, then row-major cells, then 9 shapes per cell (scale-
    major): side base·stride·scale, ratios h/w in ANCHOR_RATIOS, centred on the cell centre."""
    out = []
    for (h, w), s in zip(feature_sizes, strides):
        shapes = []
        for scale in ANCHOR_SCALES:
            for ratio in ANCHOR_RATIOS:
                side = base * s * scale
                aw, ah = side / math.sqrt(ratio), side * math.sqrt(ratio)
                shapes.append((-aw / 2, -ah / 2, aw / 2, ah / 2))
        ys, xs = np.meshgrid((np.arange(h) + 0.5) * s, (np.arange(w) + 0.5) * s, indexing="ij")
        centres = np.stack([xs.ravel(), ys.ravel(), xs.ravel(), ys.ravel()], axis=1)
        out.append((centres[:, None, :] + np.array(shapes)[None]).reshape(-1, 4))
    return np.concatenate(out).astype(np.float32)


def encode(anchors: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Box deltas (dx, dy, log dw, log dh) of xyxy boxes relative to anchors (weights 1)."""
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ax, ay = anchors[:, 0] + aw / 2, anchors[:, 1] + ah / 2
    bw, bh = np.maximum(boxes[:, 2] - boxes[:, 0], 1e-3), np.maximum(boxes[:, 3] - boxes[:, 1], 1e-3)
    bx, by = boxes[:, 0] + bw / 2, boxes[:, 1] + bh / 2
    return np.stack([(bx - ax) / aw, (by - ay) / ah, np.log(bw / aw), np.log(bh / ah)], axis=1).astype(np.float32)


def decode(anchors: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """Inverse of `encode` (size deltas clipped as torchvision's BoxCoder does)."""
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ax, ay = anchors[:, 0] + aw / 2, anchors[:, 1] + ah / 2
    dw, dh = np.minimum(deltas[:, 2], BBOX_CLIP), np.minimum(deltas[:, 3], BBOX_CLIP)
    cx, cy = ax + deltas[:, 0] * aw, ay + deltas[:, 1] * ah
    w, h = aw * np.exp(dw), ah * np.exp(dh)
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)


def anchor_targets(anchors: np.ndarray, boxes: np.ndarray, labels: np.ndarray):
    """Per anchor: class (>= 0), -1 background, -2 ignored (IoU between 0.4 and 0.5), and the
    deltas to its matched box (zeros where unmatched). Matching is the numba kernel's."""
    match = kernels.match_anchors(anchors, boxes, FG_IOU, BG_IOU, allow_low_quality=True)
    out_labels = np.where(match >= 0, np.asarray(labels, np.int64)[np.maximum(match, 0)] if len(labels) else -1,
                          match).astype(np.int64)
    deltas = np.zeros((len(anchors), 4), np.float32)
    positive = match >= 0
    if positive.any():
        deltas[positive] = encode(anchors[positive], np.asarray(boxes, np.float32)[match[positive]])
    return out_labels, deltas


def retina_loss(cls_logits, box_deltas, labels, deltas) -> dict:
    """Focal loss over non-ignored anchors and smooth-L1 over positives, both / #positives."""
    positive = labels >= 0
    valid = labels >= -1
    num_pos = max(1.0, float(positive.sum()))
    onehot = torch.zeros_like(cls_logits)
    onehot[positive, labels[positive]] = 1.0
    loss_cls = sigmoid_focal_loss(cls_logits[valid], onehot[valid], alpha=FOCAL_ALPHA, gamma=FOCAL_GAMMA,
                                  reduction="sum") / num_pos
    loss_box = F.smooth_l1_loss(box_deltas[positive], deltas[positive], beta=SMOOTH_L1_BETA,
                                reduction="sum") / num_pos
    return {"cls": loss_cls, "box": loss_box}


class RetinaNetHead(nn.Module):
    """RetinaNet's subnets: two towers of `num_convs` 3×3 conv (+BN, NAS-FPN puts BN after every
    conv) + ReLU, shared over levels; 9·K class logits (prior 0.01) and 9·4 box deltas per cell.
    forward(list of N×C×H×W) -> (N×A×K, N×A×4), anchors ordered as `anchors_for`."""

    def __init__(self, width: int, num_classes: int, num_convs: int = 4, prior_prob: float = 0.01):
        super().__init__()

        def tower():
            layers = []
            for _ in range(num_convs):
                layers += [nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            return nn.Sequential(*layers)

        self.num_classes = num_classes
        self.cls_tower, self.box_tower = tower(), tower()
        self.cls_logits = nn.Conv2d(width, ANCHORS_PER_LOCATION * num_classes, 3, padding=1)
        self.box_deltas = nn.Conv2d(width, ANCHORS_PER_LOCATION * 4, 3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, pyramid):
        cls, box = [], []
        for x in pyramid:
            n, _, h, w = x.shape
            c = self.cls_logits(self.cls_tower(x))           # N × (9K) × H × W
            b = self.box_deltas(self.box_tower(x))           # N × 36 × H × W
            cls.append(c.view(n, ANCHORS_PER_LOCATION, -1, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, self.num_classes))
            box.append(b.view(n, ANCHORS_PER_LOCATION, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4))
        return torch.cat(cls, 1), torch.cat(box, 1)


class RetinaDecoder(nn.Module):
    """Everything after the backbone for RetinaNet: pyramid (P3..P7) + head, loss, post-processing.

    `pyramid(feats)` returns five maps; if it has `stages` (a stacked NAS-FPN), `exit_after` = K
    stops after K stages (anytime detection) and `deep_supervision` adds the loss of every
    stage's output through the same head during training.
    """

    def __init__(self, pyramid: nn.Module, head: nn.Module, num_classes: int, score_thresh: float = 0.05,
                 nms_thresh: float = 0.5, topk_per_level: int = 1000, detections_per_img: int = 100,
                 deep_supervision: bool = False):
        super().__init__()
        self.fpn, self.head = pyramid, head
        self.num_classes = num_classes
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.topk_per_level, self.detections_per_img = topk_per_level, detections_per_img
        self.deep_supervision = deep_supervision
        self.exit_after: int | None = None

    @property
    def stages(self) -> int:
        return len(getattr(self.fpn, "stages", [None]))

    def forward(self, feats: dict) -> dict:
        if hasattr(self.fpn, "stages"):
            pyramids = self.fpn(feats, exit_after=self.exit_after, all_stages=self.training and self.deep_supervision)
        else:
            pyramids = [self.fpn(feats)]
        outs = [self.head(p) for p in pyramids]
        cls_logits, box_deltas = outs[-1]
        return {"cls_logits": cls_logits, "box_deltas": box_deltas, "stage_outputs": outs[:-1],
                "feature_sizes": [tuple(p.shape[-2:]) for p in pyramids[-1]]}

    def loss(self, outputs: dict, targets: list[dict]) -> dict:
        """Loss against ground-truth boxes (anchors matched here by the numba kernel)."""
        anchors = anchors_for(outputs["feature_sizes"])
        labels, deltas = zip(*(anchor_targets(anchors, t["boxes"], t["labels"]) for t in targets))
        return self.loss_from_targets(outputs, torch.from_numpy(np.stack(labels)), torch.from_numpy(np.stack(deltas)))

    def loss_from_targets(self, outputs: dict, labels, deltas) -> dict:
        """Loss against precomputed per-anchor targets (as the feature cache stores them); with deep
        supervision, averaged over every stage's output."""
        device = outputs["cls_logits"].device
        labels, deltas = labels.to(device).long(), deltas.to(device).float()
        terms = [retina_loss(c, b, labels, deltas)
                 for c, b in [*outputs["stage_outputs"], (outputs["cls_logits"], outputs["box_deltas"])]]
        return {k: sum(t[k] for t in terms) / len(terms) for k in terms[0]}

    def loss_from_batch(self, outputs: dict, batch: dict) -> dict:
        return self.loss_from_targets(outputs, batch["anchor_labels"], batch["anchor_deltas"])

    @torch.no_grad()
    def postprocess(self, outputs: dict, image_sizes) -> list[dict]:
        """Per image and level: scores above `score_thresh`, top-k, decoded and clipped boxes; then
        per-class NMS (numba kernel) and the best `detections_per_img`."""
        anchors = anchors_for(outputs["feature_sizes"])
        level_sizes = [h * w * ANCHORS_PER_LOCATION for h, w in outputs["feature_sizes"]]
        probs = torch.sigmoid(outputs["cls_logits"]).float().cpu().numpy()
        deltas = outputs["box_deltas"].float().cpu().numpy()
        results = []
        for i, (h, w) in enumerate(image_sizes):
            boxes, scores, labels, start = [], [], [], 0
            for n in level_sizes:
                prob = probs[i, start:start + n]
                loc, lab = np.nonzero(prob > self.score_thresh)
                loc, lab, score = top_k(loc, lab, prob[loc, lab], self.topk_per_level)
                boxes.append(decode(anchors[start + loc], deltas[i, start + loc]))
                scores.append(score)
                labels.append(lab)
                start += n
            results.append(clip_and_nms(boxes, scores, labels, (h, w), self.nms_thresh, self.detections_per_img))
        return results
