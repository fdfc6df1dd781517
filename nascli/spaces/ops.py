"""Candidate operations shared by the search spaces: name -> factory(channels, norm) -> nn.Module.

Every op keeps the channel count and the resolution, so any op fits any edge. `norm` is "bn"
(FPN cells) or "gn" (heads, as FCOS); convolutions are conv -> norm -> ReLU (mmcv's ConvModule
order). OPS is a plain dict; `register` refuses a duplicate name.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import DeformConv2d

from ..models.heads import group_count


def norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "gn":
        return nn.GroupNorm(group_count(channels), channels)
    raise ValueError(f"norm must be 'bn' or 'gn', not {kind!r}")


class ConvNormAct(nn.Sequential):
    def __init__(self, channels: int, kernel: int, norm: str, dilation: int = 1):
        pad = dilation * (kernel - 1) // 2
        super().__init__(nn.Conv2d(channels, channels, kernel, padding=pad, dilation=dilation, bias=False),
                         norm_layer(norm, channels), nn.ReLU(inplace=True))


class SepConv(nn.Sequential):
    """Depthwise k×k (dilated) -> pointwise 1×1 -> norm -> ReLU."""

    def __init__(self, channels: int, kernel: int, norm: str, dilation: int = 1):
        pad = dilation * (kernel - 1) // 2
        super().__init__(nn.Conv2d(channels, channels, kernel, padding=pad, dilation=dilation,
                                   groups=channels, bias=False),
                         nn.Conv2d(channels, channels, 1, bias=False),
                         norm_layer(norm, channels), nn.ReLU(inplace=True))


class DeformConv(nn.Module):
    """Deformable 3×3 convolution (Dai et al. 2017; torchvision.ops) -> norm -> ReLU. The offsets
    come from a 3×3 conv initialised at zero, so it starts as a plain 3×3 convolution."""

    def __init__(self, channels: int, norm: str):
        super().__init__()
        self.offset = nn.Conv2d(channels, 2 * 9, 3, padding=1)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.conv = DeformConv2d(channels, channels, 3, padding=1, bias=False)
        self.post = nn.Sequential(norm_layer(norm, channels), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.post(self.conv(x, self.offset(x)))


OPS: dict = {}


def register(name: str, factory) -> None:
    if name in OPS:
        raise KeyError(f"duplicate op {name!r}")
    OPS[name] = factory


for _name, _factory in {
    "skip": lambda c, norm: nn.Identity(),
    "conv1x1": lambda c, norm: ConvNormAct(c, 1, norm),
    "conv3x3": lambda c, norm: ConvNormAct(c, 3, norm),
    "sep3x3": lambda c, norm: SepConv(c, 3, norm),
    "sep3x3_d3": lambda c, norm: SepConv(c, 3, norm, dilation=3),
    "sep5x5_d6": lambda c, norm: SepConv(c, 5, norm, dilation=6),
    "deform3x3": lambda c, norm: DeformConv(c, norm),
}.items():
    register(_name, _factory)


def deform_conv_flops(module: nn.Module, x_shape) -> int:
    """FLOPs FlopCounterMode cannot see: each deformable 3×3 (multiply-adds ×2 + bilinear sampling
    of 9 points ×4 neighbours per input channel)."""
    _, c, h, w = x_shape
    return 2 * c * c * 9 * h * w + 2 * 4 * c * 9 * h * w


def resize_to(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resizing (the paper's choice for NAS-FCOS aggregation and outputs)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return nn.functional.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
