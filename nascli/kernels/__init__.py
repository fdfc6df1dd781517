"""Numba kernels: the only place numba is imported. Numpy arrays in, numpy arrays out, no torch.

Each kernel has a plain-numpy or torchvision oracle in the tests and a benchmark in benchmarks/.
"""

from .ap import coco_precision, resampled_ap, summarize
from .assign import fcos_points, fcos_targets, match_anchors
from .boxes import box_iou
from .nms import batched_nms, nms

__all__ = ["batched_nms", "box_iou", "coco_precision", "summarize", "fcos_points", "fcos_targets", "match_anchors", "nms",
           "resampled_ap", "set_threads"]


def set_threads(threads: int) -> None:
    """Numba's parallel kernels use at most `threads` threads, as torch does (`runtime.use_threads`).
    Left at numba's default (every core) they also leave torch's OpenMP regions running on every
    core whatever torch.set_num_threads said: measured, one auto-fpn test with a busy loop on the
    other core took 67 s, and 11 s with numba held to one thread."""
    import numba

    numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))

