"""Training targets: FCOS per-location targets and RetinaNet anchor matching.

FCOS (Tian et al. 2019, §3.1–3.3): a location is positive for a box if it lies strictly inside it
and the largest of its (l, t, r, b) distances falls in its level's size range; among several such
boxes it takes the one with the smallest area (first one on a tie). Centerness is
sqrt(min(l,r)/max(l,r) · min(t,b)/max(t,b)).
"""

import numba
import numpy as np

from .boxes import box_iou_kernel

#: FCOS's per-level regression ranges for P3..P7 (pixels of the input image).
FCOS_SIZE_RANGES = ((0.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, 512.0), (512.0, np.inf))
FCOS_STRIDES = (8, 16, 32, 64, 128)


def fcos_points(feature_sizes, strides=FCOS_STRIDES, size_ranges=FCOS_SIZE_RANGES):
    """Locations (N, 2) as (x, y) image pixels of every level's cells, and their size range (N, 2).

    A cell (i, j) on a level of stride s sits at (j·s + s//2, i·s + s//2), as in FCOS.
    """
    points, ranges = [], []
    for (h, w), s, (lo, hi) in zip(feature_sizes, strides, size_ranges):
        ys, xs = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32),
                             indexing="ij")
        pts = np.stack([xs.ravel() * s + s // 2, ys.ravel() * s + s // 2], axis=1)
        points.append(pts)
        ranges.append(np.tile(np.array([[lo, hi]], dtype=np.float32), (len(pts), 1)))
    return np.concatenate(points).astype(np.float32), np.concatenate(ranges).astype(np.float32)


@numba.njit(cache=True, parallel=True)
def _fcos_targets(points, ranges, boxes, labels):
    n, m = points.shape[0], boxes.shape[0]
    out_labels = np.full(n, -1, dtype=np.int64)
    out_ltrb = np.zeros((n, 4), dtype=np.float32)
    out_ctr = np.zeros(n, dtype=np.float32)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for p in numba.prange(n):
        x, y = points[p, 0], points[p, 1]
        lo, hi = ranges[p, 0], ranges[p, 1]
        best, best_area = -1, np.float32(np.inf)
        for g in range(m):
            left, top = x - boxes[g, 0], y - boxes[g, 1]
            right, bottom = boxes[g, 2] - x, boxes[g, 3] - y
            if min(min(left, top), min(right, bottom)) <= 0:
                continue
            reach = max(max(left, top), max(right, bottom))
            if reach < lo or reach > hi:
                continue
            if areas[g] < best_area:
                best, best_area = g, areas[g]
        if best >= 0:
            left, top = x - boxes[best, 0], y - boxes[best, 1]
            right, bottom = boxes[best, 2] - x, boxes[best, 3] - y
            out_labels[p] = labels[best]
            out_ltrb[p, 0], out_ltrb[p, 1], out_ltrb[p, 2], out_ltrb[p, 3] = left, top, right, bottom
            out_ctr[p] = np.sqrt((min(left, right) / max(left, right))
                                 * (min(top, bottom) / max(top, bottom)))
    return out_labels, out_ltrb, out_ctr


def fcos_targets(points, size_ranges, gt_boxes, gt_labels):
    """Per-location (label or -1, ltrb distances, centerness) for one image.

    points (N, 2) and size_ranges (N, 2) come from `fcos_points`; gt_boxes (M, 4) xyxy pixels,
    gt_labels (M,) contiguous class indices. Background locations get label -1, zeros elsewhere.
    """
    return _fcos_targets(np.ascontiguousarray(points, dtype=np.float32),
                         np.ascontiguousarray(size_ranges, dtype=np.float32),
                         np.ascontiguousarray(gt_boxes, dtype=np.float32).reshape(-1, 4),
                         np.ascontiguousarray(gt_labels, dtype=np.int64).reshape(-1))


@numba.njit(cache=True)
def _match(iou, fg_threshold, bg_threshold, allow_low_quality):
    m, a = iou.shape
    matches = np.full(a, -1, dtype=np.int64)
    if m == 0:
        return matches
    for j in range(a):
        g_best, v_best = 0, iou[0, j]
        for g in range(1, m):
            if iou[g, j] > v_best:
                g_best, v_best = g, iou[g, j]
        if v_best >= fg_threshold:
            matches[j] = g_best
        elif v_best >= bg_threshold:
            matches[j] = -2
    if allow_low_quality:
        for g in range(m):
            top = iou[g].max()
            for j in range(a):
                if iou[g, j] == top:
                    # torchvision's Matcher restores the anchor's own best match, not g.
                    g_best = 0
                    for h in range(1, m):
                        if iou[h, j] > iou[g_best, j]:
                            g_best = h
                    matches[j] = g_best
    return matches


def match_anchors(anchors, gt_boxes, fg_threshold=0.5, bg_threshold=0.4, allow_low_quality=True):
    """RetinaNet anchor matching with torchvision Matcher's semantics.

    Returns per anchor the matched box index, -1 for background (IoU < bg_threshold) and -2 for
    ignored (between the thresholds); with allow_low_quality every box keeps its best anchors.
    """
    anchors = np.ascontiguousarray(anchors, dtype=np.float32).reshape(-1, 4)
    gt_boxes = np.ascontiguousarray(gt_boxes, dtype=np.float32).reshape(-1, 4)
    iou = box_iou_kernel(gt_boxes, anchors)
    return _match(iou, float(fg_threshold), float(bg_threshold), bool(allow_low_quality))
