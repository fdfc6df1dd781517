"""FCOS targets against a plain-numpy oracle; anchor matching and IoU against torchvision."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.models.detection._utils import Matcher
from torchvision.ops import box_iou as tv_box_iou

from nascli.kernels import box_iou, fcos_points, fcos_targets, match_anchors
from nascli.kernels.assign import FCOS_SIZE_RANGES


def oracle_fcos_targets(points, ranges, boxes, labels):
    """FCOS's reference assignment written with numpy broadcasting (as in the FCOS repo)."""
    if len(boxes) == 0:
        return np.full(len(points), -1), np.zeros((len(points), 4), np.float32), np.zeros(len(points))
    x, y = points[:, 0:1], points[:, 1:2]
    ltrb = np.stack([x - boxes[:, 0], y - boxes[:, 1], boxes[:, 2] - x, boxes[:, 3] - y], axis=2)
    inside = ltrb.min(axis=2) > 0
    reach = ltrb.max(axis=2)
    in_range = (reach >= ranges[:, :1]) & (reach <= ranges[:, 1:])
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[None, :].repeat(len(points), 0)
    area[~(inside & in_range)] = np.inf
    best = area.argmin(axis=1)
    positive = np.isfinite(area.min(axis=1))
    out_labels = np.where(positive, labels[best], -1)
    out_ltrb = ltrb[np.arange(len(points)), best] * positive[:, None]
    lr, tb = out_ltrb[:, [0, 2]], out_ltrb[:, [1, 3]]
    with np.errstate(invalid="ignore", divide="ignore"):
        ctr = np.sqrt(lr.min(1) / lr.max(1) * tb.min(1) / tb.max(1))
    return out_labels, out_ltrb, np.where(positive, ctr, 0)


def random_gt(rng, m, size):
    xy = rng.uniform(-20, size, (m, 2))
    wh = np.exp(rng.uniform(np.log(2), np.log(size), (m, 2)))
    return np.concatenate([xy, xy + wh], 1).astype(np.float32), rng.integers(0, 5, m)


@pytest.mark.parametrize("m", [0, 1, 8, 50])
@pytest.mark.parametrize("seed", range(4))
def test_fcos_targets_match_oracle(m, seed):
    rng = np.random.default_rng(seed)
    sizes = [(64, 80), (32, 40), (16, 20), (8, 10), (4, 5)]
    points, ranges = fcos_points(sizes)
    boxes, labels = random_gt(rng, m, 640)
    got = fcos_targets(points, ranges, boxes, labels)
    want = oracle_fcos_targets(points, ranges, boxes, labels)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=0, atol=1e-4)
    np.testing.assert_allclose(got[2], want[2], rtol=1e-5, atol=1e-6)


def test_smallest_box_wins_and_first_wins_a_tie():
    points = np.array([[50, 50]], np.float32)
    ranges = np.array([[0, np.inf]], np.float32)
    boxes = np.array([[0, 0, 100, 100], [40, 40, 60, 60], [30, 30, 50.5, 70], [40, 40, 60, 60]], np.float32)
    labels = np.array([0, 1, 2, 3])
    lab, ltrb, ctr = fcos_targets(points, ranges, boxes, labels)
    assert lab[0] == 1  # box 1 and 3 tie at area 400 (< 410 of box 2): the first one wins
    np.testing.assert_allclose(ltrb[0], [10, 10, 10, 10])
    assert ctr[0] == pytest.approx(1.0)


def test_size_range_and_border_are_respected():
    points, ranges = fcos_points([(4, 4)], strides=(8,), size_ranges=((0, 10),))
    boxes = np.array([[0, 0, 32, 32]], np.float32)  # reach up to 28 > 10 everywhere but nowhere
    lab, _, _ = fcos_targets(points, ranges, boxes, np.array([2]))
    assert (lab == -1).all()
    # a location exactly on the box edge is outside (min distance must be > 0)
    lab, _, _ = fcos_targets(np.array([[4, 4]], np.float32), np.array([[0, 100]], np.float32),
                             np.array([[4, 0, 20, 20]], np.float32), np.array([1]))
    assert lab[0] == -1


def test_fcos_points_layout():
    points, ranges = fcos_points([(2, 3), (1, 2)], strides=(8, 16))
    np.testing.assert_array_equal(points[:3], [[4, 4], [12, 4], [20, 4]])
    np.testing.assert_array_equal(points[6:], [[8, 8], [24, 8]])
    np.testing.assert_array_equal(ranges[0], FCOS_SIZE_RANGES[0])
    np.testing.assert_array_equal(ranges[-1], FCOS_SIZE_RANGES[1])


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(0, 12))
def test_fcos_targets_property(seed, m):
    rng = np.random.default_rng(seed)
    points, ranges = fcos_points([(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)])
    boxes, labels = random_gt(rng, m, 128)
    lab, ltrb, ctr = fcos_targets(points, ranges, boxes, labels)
    want = oracle_fcos_targets(points, ranges, boxes, labels)
    np.testing.assert_array_equal(lab, want[0])
    pos = lab >= 0
    assert (ltrb[pos] > 0).all() and (ltrb[~pos] == 0).all()
    assert ((ctr[pos] > 0) & (ctr[pos] <= 1)).all() and (ctr[~pos] == 0).all()


@pytest.mark.parametrize("seed", range(5))
def test_box_iou_matches_torchvision(seed):
    rng = np.random.default_rng(seed)
    a, _ = random_gt(rng, 30, 100)
    b, _ = random_gt(rng, 20, 100)
    np.testing.assert_allclose(box_iou(a, b), tv_box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy(),
                               rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("low_quality", [True, False])
@pytest.mark.parametrize("seed", range(5))
def test_match_anchors_matches_torchvision_matcher(seed, low_quality):
    rng = np.random.default_rng(seed)
    anchors, _ = random_gt(rng, 400, 128)
    gt = anchors[rng.choice(400, 6, replace=False)] + rng.normal(0, 4, (6, 4)).astype(np.float32)
    iou = tv_box_iou(torch.from_numpy(gt), torch.from_numpy(anchors))
    want = Matcher(0.5, 0.4, low_quality)(iou).numpy()
    np.testing.assert_array_equal(match_anchors(anchors, gt, 0.5, 0.4, low_quality), want)


def test_match_anchors_without_boxes_is_all_background():
    anchors = np.array([[0, 0, 10, 10], [5, 5, 20, 20]], np.float32)
    np.testing.assert_array_equal(match_anchors(anchors, np.zeros((0, 4), np.float32)), [-1, -1])
