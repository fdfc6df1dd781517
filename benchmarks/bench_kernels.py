"""Numba kernels vs their references: batched_nms vs torchvision's C++ kernel, fcos_targets vs a
torch-vectorised implementation (the FCOS repository's broadcasting formulation)."""

import numpy as np
import torch
from torchvision.ops import batched_nms as tv_batched_nms

from nascli.kernels import batched_nms, fcos_points, fcos_targets

from .common import median_seconds


def torch_fcos_targets(points, ranges, boxes, labels):
    """FCOS's reference target assignment (compute_targets_for_locations), vectorised in torch."""
    x, y = points[:, 0:1], points[:, 1:2]
    ltrb = torch.stack([x - boxes[:, 0], y - boxes[:, 1], boxes[:, 2] - x, boxes[:, 3] - y], dim=2)
    inside = ltrb.min(dim=2).values > 0
    reach = ltrb.max(dim=2).values
    ok = inside & (reach >= ranges[:, :1]) & (reach <= ranges[:, 1:])
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[None].expand(len(points), -1).clone()
    area[~ok] = float("inf")
    min_area, best = area.min(dim=1)
    out_labels = labels[best].clone()
    out_labels[min_area == float("inf")] = -1
    target = ltrb[torch.arange(len(points)), best]
    lr, tb = target[:, [0, 2]], target[:, [1, 3]]
    ctr = torch.sqrt((lr.min(1).values / lr.max(1).values) * (tb.min(1).values / tb.max(1).values))
    return out_labels, target, ctr


def nms_rows(sizes=(1000, 5000, 20000), num_classes=80, seed=0):
    rows = []
    for n in sizes:
        rng = np.random.default_rng(seed)
        xy = rng.uniform(0, 800, (n, 2)).astype(np.float32)
        wh = rng.uniform(8, 160, (n, 2)).astype(np.float32)
        boxes = np.concatenate([xy, xy + wh], 1)
        scores = rng.random(n).astype(np.float32)
        labels = rng.integers(0, num_classes, n)
        tb, ts, tl = map(torch.from_numpy, (boxes, scores, labels))
        ref = median_seconds(lambda: tv_batched_nms(tb, ts, tl, 0.5))
        ours = median_seconds(lambda: batched_nms(boxes, scores, labels, 0.5))
        rows.append((f"batched_nms, {n} boxes, {num_classes} classes", "torchvision.ops.batched_nms",
                     ref, ours))
    return rows


def target_rows(box_counts=(8, 50), image=(800, 1333), seed=0):
    sizes, h, w = [], *image
    for s in (8, 16, 32, 64, 128):
        sizes.append((-(-h // s), -(-w // s)))
    points, ranges = fcos_points(sizes)
    rows = []
    for m in box_counts:
        rng = np.random.default_rng(seed)
        xy = rng.uniform(0, [w, h], (m, 2))
        wh = np.exp(rng.uniform(np.log(8), np.log(600), (m, 2)))
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        labels = rng.integers(0, 80, m)
        tp, tr, tbx, tl = map(torch.from_numpy, (points, ranges, boxes, labels))
        ref = median_seconds(lambda: torch_fcos_targets(tp, tr, tbx, tl))
        ours = median_seconds(lambda: fcos_targets(points, ranges, boxes, labels))
        rows.append((f"fcos_targets, {h}x{w}, {len(points)} points, {m} boxes", "torch vectorised",
                     ref, ours))
    return rows
