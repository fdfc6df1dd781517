"""COCO box AP (AP@[.5:.95], AP50, AP75, APs/m/l) with pycocotools COCOeval's exact semantics.

COCOeval matches per (image, category): detections by decreasing score (stable), at most 100,
each greedily to the best-IoU unmatched ground truth with IoU >= t, ground truths that are crowd
or outside the area range sorted last and "ignored" (a detection matched to one, or unmatched and
itself outside the range, is dropped from the counts); crowd boxes may be matched many times with
IoU = intersection / detection area. Per category and area range it then concatenates every
image's detections (image id order), sorts them by score (stable), and reads the monotone
precision envelope at 101 recall points. AP is the mean over IoU thresholds, recall points and
the categories that have ground truth. Everything below follows that order step by step, so ties
and edge cases (no detections, no ground truth for a class) come out as pycocotools computes them.
"""

import numba
import numpy as np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
AREA_RANGES = np.array([[0, 1e5 ** 2], [0, 32 ** 2], [32 ** 2, 96 ** 2], [96 ** 2, 1e5 ** 2]])
AREA_NAMES = ("all", "small", "medium", "large")
MAX_DETS = 100


@numba.njit(cache=True)
def _box_iou(d, g, crowd):
    """pycocotools' bbIou on xywh boxes (float64); crowd ground truth: union = detection area."""
    w = min(d[0] + d[2], g[0] + g[2]) - max(d[0], g[0])
    if w <= 0:
        return 0.0
    h = min(d[1] + d[3], g[1] + g[3]) - max(d[1], g[1])
    if h <= 0:
        return 0.0
    inter = w * h
    union = d[2] * d[3] if crowd else d[2] * d[3] + g[2] * g[3] - inter
    return inter / union


@numba.njit(cache=True)
def _match_group(dt_boxes, dt_area, gt_boxes, gt_area, gt_crowd, thresholds, area_ranges,
                 matched, ignored, a_index):
    """COCOeval.evaluateImg for one (image, category) and one area range: fills `matched` and
    `ignored` (T × D) for the detections (already score-sorted), returns the non-ignored gt count."""
    lo, hi = area_ranges[a_index, 0], area_ranges[a_index, 1]
    ng, nd = gt_boxes.shape[0], dt_boxes.shape[0]
    gt_ignore = np.empty(ng, dtype=np.bool_)
    for j in range(ng):
        gt_ignore[j] = gt_crowd[j] or gt_area[j] < lo or gt_area[j] > hi
    order = np.argsort(gt_ignore, kind="mergesort")      # non-ignored first, stable
    ious = np.empty((nd, ng))
    for i in range(nd):
        for jj in range(ng):
            j = order[jj]
            ious[i, jj] = _box_iou(dt_boxes[i], gt_boxes[j], gt_crowd[j])
    n_valid = 0
    for j in range(ng):
        if not gt_ignore[j]:
            n_valid += 1
    for t in range(thresholds.shape[0]):
        gt_taken = np.zeros(ng, dtype=np.bool_)
        for i in range(nd):
            best = min(thresholds[t], 1 - 1e-10)
            m = -1
            for jj in range(ng):
                j = order[jj]
                if gt_taken[jj] and not gt_crowd[j]:
                    continue
                if m > -1 and not gt_ignore[order[m]] and gt_ignore[j]:
                    break
                if ious[i, jj] < best:
                    continue
                best = ious[i, jj]
                m = jj
            if m > -1:
                matched[t, i] = True
                ignored[t, i] = gt_ignore[order[m]]
                gt_taken[m] = True
            else:
                matched[t, i] = False
                ignored[t, i] = dt_area[i] < lo or dt_area[i] > hi
    return n_valid


@numba.njit(cache=True)
def _precision(scores, matched, ignored, n_gt, recall_thresholds):
    """COCOeval.accumulate for one category and area range: T × R precision at the recall points."""
    order = np.argsort(-scores, kind="mergesort")
    nt, nd, nr = matched.shape[0], scores.shape[0], recall_thresholds.shape[0]
    out = np.zeros((nt, nr))
    eps = np.spacing(1.0)
    for t in range(nt):
        tp = np.zeros(nd)
        fp = np.zeros(nd)
        ctp, cfp = 0.0, 0.0
        for k in range(nd):
            i = order[k]
            if not ignored[t, i]:
                if matched[t, i]:
                    ctp += 1
                else:
                    cfp += 1
            tp[k], fp[k] = ctp, cfp
        rc = tp / n_gt
        pr = tp / (fp + tp + eps)
        for k in range(nd - 1, 0, -1):
            if pr[k] > pr[k - 1]:
                pr[k - 1] = pr[k]
        idx = np.searchsorted(rc, recall_thresholds)      # side='left', as pycocotools
        for r in range(nr):
            if idx[r] >= nd:
                break
            out[t, r] = pr[idx[r]]
    return out


@numba.njit(cache=True, parallel=True)
def _coco_precision(gt_boxes, gt_area, gt_crowd, gt_starts, dt_boxes, dt_area, dt_scores, dt_starts,
                    n_cats, n_imgs, thresholds, area_ranges, recall_thresholds):
    """precision[T, R, K, A] (-1 where a category has no non-ignored ground truth), like
    COCOeval.eval['precision'][..., maxDets=100]. Groups are (category, image) blocks of the
    sorted gt / dt arrays, `*_starts` of length K*I+1."""
    nt, nr, na = thresholds.shape[0], recall_thresholds.shape[0], area_ranges.shape[0]
    precision = -np.ones((nt, nr, n_cats, na))
    for ka in numba.prange(n_cats * na):
        k, a = ka // na, ka % na
        d_lo, d_hi = dt_starts[k * n_imgs], dt_starts[(k + 1) * n_imgs]
        nd = d_hi - d_lo
        matched = np.zeros((nt, nd), dtype=np.bool_)
        ignored = np.zeros((nt, nd), dtype=np.bool_)
        n_gt = 0
        for im in range(n_imgs):
            g = k * n_imgs + im
            g0, g1, s0, s1 = gt_starts[g], gt_starts[g + 1], dt_starts[g] - d_lo, dt_starts[g + 1] - d_lo
            n_gt += _match_group(dt_boxes[d_lo + s0:d_lo + s1], dt_area[d_lo + s0:d_lo + s1],
                                 gt_boxes[g0:g1], gt_area[g0:g1], gt_crowd[g0:g1], thresholds,
                                 area_ranges, matched[:, s0:s1], ignored[:, s0:s1], a)
        if n_gt == 0:
            continue
        precision[:, :, k, a] = _precision(dt_scores[d_lo:d_hi], matched, ignored, n_gt, recall_thresholds)
    return precision


def _group(cat_index, img_index, n_cats, n_imgs, *extra_keys):
    """Stable order sorting by (category, image, *extra) and the K*I+1 block starts."""
    order = np.lexsort((*reversed(extra_keys), img_index, cat_index)) if len(cat_index) else \
        np.zeros(0, dtype=np.int64)
    counts = np.bincount(cat_index * n_imgs + img_index, minlength=n_cats * n_imgs)
    return order, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def coco_precision(gt_boxes, gt_cats, gt_imgs, gt_area, gt_crowd, dt_boxes, dt_scores, dt_cats, dt_imgs,
                   n_cats: int, n_imgs: int) -> np.ndarray:
    """precision[T=10, R=101, K, A=4] as COCOeval computes it (maxDets 100).

    Boxes are COCO xywh; `*_cats` / `*_imgs` are 0-based indices into the sorted category ids and
    image ids COCOeval iterates; `gt_area` is the annotations' `area` field (COCOeval's area
    filter uses it, not the box); detections are in result-file order (it breaks score ties).
    """
    return _coco_precision(*_blocks(gt_boxes, gt_cats, gt_imgs, gt_area, gt_crowd, dt_boxes, dt_scores, dt_cats,
                                    dt_imgs, n_cats, n_imgs), n_cats, n_imgs, IOU_THRESHOLDS, AREA_RANGES,
                           RECALL_THRESHOLDS)


def _blocks(gt_boxes, gt_cats, gt_imgs, gt_area, gt_crowd, dt_boxes, dt_scores, dt_cats, dt_imgs,
            n_cats: int, n_imgs: int) -> tuple:
    """Ground truth and detections sorted into (category, image) blocks, each block's detections by
    score and at most MAX_DETS of them: (gt boxes, area, crowd, starts, dt boxes, area, scores, starts)."""
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    dt_boxes = np.asarray(dt_boxes, np.float64).reshape(-1, 4)
    gt_cats, gt_imgs = np.asarray(gt_cats, np.int64), np.asarray(gt_imgs, np.int64)
    dt_cats, dt_imgs = np.asarray(dt_cats, np.int64), np.asarray(dt_imgs, np.int64)
    dt_scores = np.asarray(dt_scores, np.float64)
    g_order, g_starts = _group(gt_cats, gt_imgs, n_cats, n_imgs)
    d_order, d_starts = _group(dt_cats, dt_imgs, n_cats, n_imgs, -dt_scores)
    # at most MAX_DETS detections per (image, category), the best-scored ones
    rank = np.arange(len(d_order)) - np.repeat(d_starts[:-1], np.diff(d_starts))
    d_order = d_order[rank < MAX_DETS]
    d_starts = np.concatenate([[0], np.cumsum(np.minimum(np.diff(d_starts), MAX_DETS))]).astype(np.int64)
    dt_sorted = dt_boxes[d_order]
    return (gt_boxes[g_order], np.asarray(gt_area, np.float64)[g_order], np.asarray(gt_crowd, np.bool_)[g_order],
            g_starts, dt_sorted, dt_sorted[:, 2] * dt_sorted[:, 3], dt_scores[d_order], d_starts)


def summarize(precision: np.ndarray) -> dict:
    """COCOeval.summarize's six AP numbers from precision[T, R, K, A] (-1 where undefined)."""
    def mean(p):
        p = p[p > -1]
        return float(p.mean()) if p.size else -1.0

    t50, t75 = 0, 5
    return {"AP": mean(precision[:, :, :, 0]), "AP50": mean(precision[t50, :, :, 0]),
            "AP75": mean(precision[t75, :, :, 0]), "APs": mean(precision[:, :, :, 1]),
            "APm": mean(precision[:, :, :, 2]), "APl": mean(precision[:, :, :, 3])}


@numba.njit(cache=True, parallel=True)
def _image_matches(gt_boxes, gt_area, gt_crowd, gt_starts, dt_boxes, dt_area, dt_starts, n_groups,
                   thresholds, area_ranges):
    """Every (category, image) group matched once over all areas ('all' range): matched and
    ignored (T × D, detections in their group's score order) and each group's gt count."""
    nt, nd = thresholds.shape[0], dt_boxes.shape[0]
    matched = np.zeros((nt, nd), dtype=np.bool_)
    ignored = np.zeros((nt, nd), dtype=np.bool_)
    n_gt = np.zeros(n_groups, dtype=np.int64)
    for g in numba.prange(n_groups):
        g0, g1, d0, d1 = gt_starts[g], gt_starts[g + 1], dt_starts[g], dt_starts[g + 1]
        n_gt[g] = _match_group(dt_boxes[d0:d1], dt_area[d0:d1], gt_boxes[g0:g1], gt_area[g0:g1], gt_crowd[g0:g1],
                               thresholds, area_ranges, matched[:, d0:d1], ignored[:, d0:d1], 0)
    return matched, ignored, n_gt


@numba.njit(cache=True)
def _resampled_ap(scores, matched, ignored, dt_starts, n_gt, n_cats, n_imgs, draws, recall_thresholds):
    """AP@[.5:.95] (area all) of every draw: a draw is a list of image indices (with repeats) whose
    groups are concatenated in draw order, as COCOeval would accumulate that set of images."""
    out = np.empty(draws.shape[0])
    nt = matched.shape[0]
    for b in range(draws.shape[0]):
        total, counted = 0.0, 0
        for k in range(n_cats):
            size, gts = 0, 0
            for im in draws[b]:
                g = k * n_imgs + im
                size += dt_starts[g + 1] - dt_starts[g]
                gts += n_gt[g]
            if gts == 0:
                continue
            idx = np.empty(size, dtype=np.int64)
            at = 0
            for im in draws[b]:
                g = k * n_imgs + im
                for d in range(dt_starts[g], dt_starts[g + 1]):
                    idx[at] = d
                    at += 1
            precision = _precision(scores[idx], matched[:, idx], ignored[:, idx], gts, recall_thresholds)
            total += precision.sum() / (nt * recall_thresholds.shape[0])
            counted += 1
        out[b] = total / counted if counted else -1.0
    return out


def resampled_ap(gt_boxes, gt_cats, gt_imgs, gt_area, gt_crowd, dt_boxes, dt_scores, dt_cats, dt_imgs,
                 n_cats: int, n_imgs: int, draws: np.ndarray) -> np.ndarray:
    """AP@[.5:.95] on each resample of the images (`draws`: B × n, image indices with repeats):
    every image is matched once, then each draw only re-accumulates. With `draws` = one row of
    every image in order it equals `summarize(coco_precision(...))['AP']` (tested)."""
    gt_boxes, gt_area, gt_crowd, g_starts, dt_boxes, dt_area, dt_scores, d_starts = _blocks(
        gt_boxes, gt_cats, gt_imgs, gt_area, gt_crowd, dt_boxes, dt_scores, dt_cats, dt_imgs, n_cats, n_imgs)
    matched, ignored, n_gt = _image_matches(gt_boxes, gt_area, gt_crowd, g_starts, dt_boxes, dt_area, d_starts,
                                            n_cats * n_imgs, IOU_THRESHOLDS, AREA_RANGES)
    return _resampled_ap(dt_scores, matched, ignored, d_starts, n_gt, n_cats, n_imgs,
                         np.ascontiguousarray(draws, dtype=np.int64), RECALL_THRESHOLDS)
