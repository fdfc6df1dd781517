"""Greedy non-maximum suppression with torchvision's semantics, per class, in one pass.

torchvision keeps a box unless an already-kept, higher-scored box of the same class overlaps it
with IoU strictly above the threshold; equal scores keep their input order; the kept indices come
back sorted by decreasing score. IoU is computed in float32 exactly as its C++ kernel does.
"""

import numba
import numpy as np

from .boxes import pair_iou


@numba.njit(cache=True)
def _batched_nms(boxes, order, groups, n_groups, iou_threshold):
    n = order.shape[0]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    # Bucket the score-sorted indices by class, keeping score order inside each bucket.
    counts = np.zeros(n_groups + 1, dtype=np.int64)
    for k in range(n):
        counts[groups[order[k]] + 1] += 1
    starts = np.cumsum(counts)
    fill = starts[:-1].copy()
    bucketed = np.empty(n, dtype=np.int64)
    for k in range(n):
        g = groups[order[k]]
        bucketed[fill[g]] = order[k]
        fill[g] += 1
    suppressed = np.zeros(boxes.shape[0], dtype=np.bool_)
    for g in range(n_groups):
        lo, hi = starts[g], starts[g + 1]
        for a in range(lo, hi):
            i = bucketed[a]
            if suppressed[i]:
                continue
            x1, y1, x2, y2, area_i = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3], areas[i]
            for b in range(a + 1, hi):
                j = bucketed[b]
                if suppressed[j]:
                    continue
                iou = pair_iou(x1, y1, x2, y2, area_i,
                                boxes[j, 0], boxes[j, 1], boxes[j, 2], boxes[j, 3], areas[j])
                if iou > iou_threshold:
                    suppressed[j] = True
    n_keep = 0
    keep = np.empty(n, dtype=np.int64)
    for k in range(n):
        if not suppressed[order[k]]:
            keep[n_keep] = order[k]
            n_keep += 1
    return keep[:n_keep]


def batched_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept by per-class NMS, sorted by decreasing score (int64)."""
    boxes = np.ascontiguousarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores).reshape(-1)
    if boxes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    _, groups = np.unique(np.asarray(labels).reshape(-1), return_inverse=True)
    order = np.argsort(-scores, kind="stable").astype(np.int64)
    n_groups = int(groups.max()) + 1
    return _batched_nms(boxes, order, groups.astype(np.int64), n_groups, float(iou_threshold))


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Class-agnostic NMS: batched_nms with every box in one class."""
    return batched_nms(boxes, scores, np.zeros(len(scores), dtype=np.int64), iou_threshold)
