"""batched_nms / nms against torchvision.ops (the reference), on random and adversarial inputs."""

import numpy as np
import pytest
import torch
from torchvision.ops import batched_nms as tv_batched_nms

from nascli.kernels import batched_nms, box_iou, nms


def random_boxes(rng, n, span=100.0):
    xy = rng.uniform(0, span, (n, 2)).astype(np.float32)
    wh = rng.uniform(1, span / 2, (n, 2)).astype(np.float32)
    return np.concatenate([xy, xy + wh], 1)


def reference(boxes, scores, labels, thr):
    return tv_batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores),
                          torch.from_numpy(labels), thr).numpy()


# 1500 boxes takes torchvision's per-class path, fewer its coordinate-offset path.
@pytest.mark.parametrize("n", [1, 2, 7, 50, 300, 1500])
@pytest.mark.parametrize("thr", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("seed", range(3))
def test_matches_torchvision_on_random_boxes(n, thr, seed):
    rng = np.random.default_rng(seed)
    boxes, scores = random_boxes(rng, n), rng.random(n).astype(np.float32)
    labels = rng.integers(0, 4, n)
    np.testing.assert_array_equal(batched_nms(boxes, scores, labels, thr),
                                  reference(boxes, scores, labels, thr))


@pytest.mark.parametrize("n", [10, 200, 1500])
def test_tied_scores_keep_the_same_boxes_in_score_order(n):
    # torchvision's final per-class re-sort is not stable, so among equal scores only the kept
    # set and the score sequence are defined; within a class the earlier index wins the tie.
    rng = np.random.default_rng(n)
    boxes = random_boxes(rng, n)
    scores = rng.integers(0, 3, n).astype(np.float32)
    labels = rng.integers(0, 3, n)
    ours, ref = batched_nms(boxes, scores, labels, 0.5), reference(boxes, scores, labels, 0.5)
    assert set(ours) == set(ref)
    np.testing.assert_array_equal(scores[ours], scores[ref])
    assert np.all(np.diff(scores[ours]) <= 0)


def test_identical_boxes_keep_only_the_best_per_class():
    boxes = np.tile(np.array([[10, 10, 50, 50]], np.float32), (6, 1))
    scores = np.array([0.2, 0.9, 0.5, 0.9, 0.1, 0.3], np.float32)
    labels = np.array([0, 0, 1, 1, 0, 2])
    ours = batched_nms(boxes, scores, labels, 0.5)
    np.testing.assert_array_equal(ours, reference(boxes, scores, labels, 0.5))
    assert list(ours) == [1, 3, 5]


def test_iou_exactly_at_threshold_is_kept():
    # IoU of these two is exactly 0.5: torchvision suppresses only when IoU > threshold.
    boxes = np.array([[0, 0, 2, 1], [0, 0, 1, 1]], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    assert box_iou(boxes[:1], boxes[1:])[0, 0] == 0.5
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), [0, 1])
    np.testing.assert_array_equal(nms(boxes, scores, 0.49), [0])


def test_empty_input():
    out = batched_nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), 0.5)
    assert out.dtype == np.int64 and out.shape == (0,)
    ref = reference(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), 0.5)
    assert ref.shape == (0,)


def test_zero_area_boxes_are_never_suppressed_or_suppressing():
    boxes = np.array([[5, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    labels = np.zeros(3, np.int64)
    np.testing.assert_array_equal(batched_nms(boxes, scores, labels, 0.5),
                                  reference(boxes, scores, labels, 0.5))
