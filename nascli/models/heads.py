"""The FCOS head (Tian et al. 2019): shared GroupNorm towers, class / box / centerness outputs."""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn


def group_count(width: int) -> int:
    """GroupNorm groups: FCOS's 32 at width 256, i.e. 8 channels a group, at least one group."""
    return max(1, min(32, width // 8))


def fair_std(conv: nn.Module, width: int) -> float:
    """FCOS's std 0.01 for a plain 3×3 conv over `width` channels, scaled by fan-in for any other
    kernel, group count or input width: std = 0.01·sqrt(9·width / fan_in).

    Why: each head conv is followed by GroupNorm, so its output ignores the weight's scale and
    SGD's effective step on it grows as lr / ||w||². One std for every op gave a depthwise 3×3
    filter (fan-in 9) a norm about 11× smaller than a 3×3 conv's at width 128, i.e. about 130× the
    hand design's effective step, and searched heads collapsed under SGD. With this std every
    filter starts with the norm of the hand design's 3×3 filter (0.01·sqrt(9·width)).
    """
    fan_in = conv.weight[0].numel()
    return 0.01 * math.sqrt(9 * width / fan_in)


def init_head_convs(head: nn.Module, width: int) -> None:
    """FCOS's head initialisation made fair to every op: every convolution (deformable ones too)
    N(0, fair_std) with zero bias, so a plain 3×3 conv at `width` keeps FCOS's N(0, 0.01). A conv
    marked `keep_init` is left alone (the zero-initialised offsets that make a deformable conv
    start as a plain one)."""
    from torchvision.ops import DeformConv2d

    for m in head.modules():
        if isinstance(m, (nn.Conv2d, DeformConv2d)) and not getattr(m, "keep_init", False):
            nn.init.normal_(m.weight, std=fair_std(m, width))
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _tower(width: int, depth: int) -> nn.Sequential:
    layers = []
    for _ in range(depth):
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(group_count(width), width), nn.ReLU()]
    return nn.Sequential(*layers)


class SharedTowers(nn.Module):
    """FCOS's towers: the same conv-GN-ReLU stack on every level, one for classes, one for boxes."""

    def __init__(self, width: int, num_convs: int = 4):
        super().__init__()
        self.cls_tower = _tower(width, num_convs)
        self.box_tower = _tower(width, num_convs)

    def forward(self, x, level: int):
        return self.cls_tower(x), self.box_tower(x)


class FCOSHead(nn.Module):
    """FCOS's prediction head over any towers (`towers(x, level) -> (cls_feat, box_feat)`; default
    SharedTowers). Box distances are relu(scale_l · x) · stride_l (FCOS's normalised regression);
    centerness rides on the box branch (the FCOS improvement torchvision also uses).

    forward(list of N×C×H×W) -> (cls_logits N×P×K, box_ltrb N×P×4 in pixels, ctr_logits N×P),
    P being every location of every level, level-major then row-major, as `fcos_points` orders them.
    """

    def __init__(self, width: int, num_classes: int, num_convs: int = 4,
                 strides=(8, 16, 32, 64, 128), prior_prob: float = 0.01, towers: nn.Module | None = None):
        super().__init__()
        self.towers = towers if towers is not None else SharedTowers(width, num_convs)
        self.cls_logits = nn.Conv2d(width, num_classes, 3, padding=1)
        self.box_pred = nn.Conv2d(width, 4, 3, padding=1)
        self.ctr_pred = nn.Conv2d(width, 1, 3, padding=1)
        self.scales = nn.Parameter(torch.ones(len(strides)))
        self.strides = tuple(strides)
        init_head_convs(self, width)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))
        # Initial boxes reach one stride to each side of their location. From zero-size boxes
        # GIoU has almost no gradient, and a ReLU pushed below zero never recovers: searched
        # towers retrained with SGD lost their box branch that way (AP 0 on BCCD).
        nn.init.constant_(self.box_pred.bias, 1.0)

    def forward(self, feats):
        towers = [self.towers(x, level) for level, x in enumerate(feats)]
        if _PER_LEVEL[-1]:
            cls_maps = [self.cls_logits(c) for c, _ in towers]
            box_maps = [torch.cat([self.box_pred(b), self.ctr_pred(b)], 1) for _, b in towers]
        else:  # boxes and centerness read the same features: one convolution with both weights
            box_weight = torch.cat([self.box_pred.weight, self.ctr_pred.weight])
            box_bias = torch.cat([self.box_pred.bias, self.ctr_pred.bias])
            cls_maps = over_levels(self.cls_logits, [c for c, _ in towers])
            box_maps = over_levels(lambda x: F.conv2d(x, box_weight, box_bias, padding=1), [b for _, b in towers])
        cls, box, ctr = [], [], []
        for level, (c, b) in enumerate(zip(cls_maps, box_maps)):
            cls.append(_flatten(c))
            box.append(_flatten(F.relu(self.scales[level] * b[:, :4]) * self.strides[level]))
            ctr.append(_flatten(b[:, 4:]).squeeze(-1))
        return torch.cat(cls, 1), torch.cat(box, 1), torch.cat(ctr, 1)


_PER_LEVEL = [False]


@contextlib.contextmanager
def per_level_predictions():
    """Inside, the head predicts as before issue 30: three convolution calls on every level
    (benchmarks/bench_trial.py's "before" arm)."""
    _PER_LEVEL.append(True)
    try:
        yield
    finally:
        _PER_LEVEL.pop()


#: The levels after P3 share one call of a predictor when P4 has at most this many pixels: on a
#: proxy's maps (6×6 and smaller) a convolution call costs its dispatch, not its arithmetic (issue 30).
PACK_PIXELS = 256


def over_levels(conv, xs: list) -> list:
    """`conv` (a 3×3 "same" convolution) on every level. When the levels after the first are small,
    they go through one call, side by side on a canvas with one zero column after each and zeros
    below the shorter ones: those zeros are the padding each level would have read, so every output
    inside a level is what its own call gives (up to float summation order)."""
    if len(xs) < 3 or xs[1].shape[-2] * xs[1].shape[-1] > PACK_PIXELS:
        return [conv(x) for x in xs]
    rest = xs[1:]
    height = max(x.shape[-2] for x in rest)
    canvas = conv(torch.cat([F.pad(x, (0, 1, 0, height - x.shape[-2])) for x in rest], dim=-1))
    maps, left = [conv(xs[0])], 0
    for x in rest:
        h, w = x.shape[-2:]
        maps.append(canvas[..., :h, left:left + w])
        left += w + 1
    return maps


def _flatten(x):
    """N×C×H×W -> N×(H·W)×C, row-major over locations."""
    n, c = x.shape[:2]
    return x.permute(0, 2, 3, 1).reshape(n, -1, c)
