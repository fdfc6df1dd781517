"""Pairwise IoU of xyxy boxes, in the boxes' own float precision (as torchvision computes it)."""

import numba
import numpy as np


@numba.njit(cache=True, inline="always")
def pair_iou(ax1, ay1, ax2, ay2, a_area, bx1, by1, bx2, by2, b_area):
    """IoU of one box pair given their areas (inlined into the NMS kernel)."""
    zero = a_area * 0
    w = max(zero, min(ax2, bx2) - max(ax1, bx1))
    h = max(zero, min(ay2, by2) - max(ay1, by1))
    inter = w * h
    union = a_area + b_area - inter
    return inter / union if union > 0 else zero


@numba.njit(cache=True)
def box_iou_kernel(a, b):
    """The IoU matrix of two contiguous float arrays of boxes (callable from other kernels)."""
    out = np.zeros((a.shape[0], b.shape[0]), dtype=a.dtype)
    for i in range(a.shape[0]):
        a_area = (a[i, 2] - a[i, 0]) * (a[i, 3] - a[i, 1])
        for j in range(b.shape[0]):
            b_area = (b[j, 2] - b[j, 0]) * (b[j, 3] - b[j, 1])
            out[i, j] = pair_iou(a[i, 0], a[i, 1], a[i, 2], a[i, 3], a_area,
                                  b[j, 0], b[j, 1], b[j, 2], b[j, 3], b_area)
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of two sets of (x1, y1, x2, y2) boxes."""
    a = np.ascontiguousarray(a, dtype=np.float32).reshape(-1, 4)
    b = np.ascontiguousarray(b, dtype=np.float32).reshape(-1, 4)
    return box_iou_kernel(a, b)
