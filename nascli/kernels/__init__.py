"""Numba kernels: the only place numba is imported. Numpy arrays in, numpy arrays out, no torch.

Each kernel has a plain-numpy or torchvision oracle in the tests and a benchmark in benchmarks/.
"""

from .ap import coco_precision, summarize
from .assign import fcos_points, fcos_targets, match_anchors
from .boxes import box_iou
from .nms import batched_nms, nms

__all__ = ["batched_nms", "box_iou", "coco_precision", "summarize", "fcos_points", "fcos_targets", "match_anchors", "nms"]
