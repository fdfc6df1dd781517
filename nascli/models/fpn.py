"""The hand-designed FPN (Lin et al. 2017) as FCOS uses it: C3..C5 -> P3..P7, P6/P7 from P5."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn


class FPN(nn.Module):
    """Lateral 1x1 convs, top-down nearest upsampling + sum, 3x3 output convs; P6 = conv_s2(P5),
    P7 = conv_s2(relu(P6)). Takes the backbone's {"c3": ..., "c5": ...} (`in_channels` lists the
    widths of `levels`), returns a list of five maps at `width`."""

    def __init__(self, in_channels: list[int], width: int = 256, levels=("c3", "c4", "c5")):
        super().__init__()
        self.levels = tuple(levels)
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in in_channels)
        self.output = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in in_channels)
        self.p6 = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.p7 = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.out_channels = width
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, feats: dict):
        laterals = [conv(feats[lv]) for conv, lv in zip(self.lateral, self.levels)]
        for i in range(len(laterals) - 1, 0, -1):  # top-down pathway
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest")
        outs = [conv(x) for conv, x in zip(self.output, laterals)]
        p6 = self.p6(outs[-1])
        return outs + [p6, self.p7(F.relu(p6))]


class Widen(nn.Module):
    """A pyramid at one width projected by a shared 1x1 conv to another: the paper's @128-256
    variants (NAS-FCOS Table 2), FPN at 128 channels feeding a head at 256."""

    def __init__(self, fpn: nn.Module, width: int, head_width: int):
        super().__init__()
        self.fpn = fpn
        self.proj = nn.Conv2d(width, head_width, 1)

    def forward(self, feats):
        return [self.proj(p) for p in self.fpn(feats)]
