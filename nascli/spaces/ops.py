"""Candidate operations shared by the search spaces: name -> factory(channels, norm) -> nn.Module.

Every op keeps the channel count and the resolution, so any op fits any edge. `norm` is "bn"
(FPN cells) or "gn" (heads, as FCOS); convolutions are conv -> norm -> ReLU (mmcv's ConvModule
order). OPS is a plain dict; `register` refuses a duplicate name.
"""

from __future__ import annotations

import contextlib
from functools import lru_cache

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import DeformConv2d

from ..models.heads import group_count, per_level_predictions


def norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "gn":
        return nn.GroupNorm(group_count(channels), channels)
    raise ValueError(f"norm must be 'bn' or 'gn', not {kind!r}")


_NOMINAL = [False]


@contextlib.contextmanager
def nominal_taps():
    """Inside, every `ReachConv2d` computes all its taps, every `PairwiseMix` runs as the grouped
    convolution it is and the FCOS head predicts one call a level (FLOP counts keep the published
    convention: a conv counts its whole kernel on its own level, whatever the map size;
    benchmarks/bench_trial.py's "before" arm runs the ops as they were)."""
    _NOMINAL.append(True)
    try:
        with per_level_predictions():
            yield
    finally:
        _NOMINAL.pop()


class ReachConv2d(nn.Conv2d):
    """A "same" stride-1 convolution that skips the taps which only ever read padding.

    On a map no larger than the dilation (a 5×5 at dilation 6 on the 8×8 to 1×1 maps of P4–P7, the
    maps a proxy runs on; any 3×3 on P7's 1×1) the outer taps multiply zeros: the output and every
    gradient are the same without them (a padding-only tap's weight gradient is exactly zero), and
    the work is a 3×3 or a 1×1 instead of a 5×5; a depthwise 1×1 is a per-channel product, and a
    depthwise conv on a small map a matmul (`small_map`), instead of a convolution call (their
    weight gradients then sum in another order: rewards move within float noise, see
    benchmarks/trial.json). The weights keep their full shape, so checkpoints do not change."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        same = tuple(d * (k // 2) for d, k in zip(self.dilation, self.kernel_size))
        if self.stride != (1, 1) or self.padding != same or any(k % 2 == 0 for k in self.kernel_size):
            raise ValueError("ReachConv2d is for stride-1 'same' convolutions with odd kernels")

    def forward(self, x):
        if _NOMINAL[-1]:
            return super().forward(x)
        (kh, kw), (dh, dw) = self.kernel_size, self.dilation
        mh = min(kh // 2, (x.shape[-2] - 1) // dh)   # taps kept either side of the centre
        mw = min(kw // 2, (x.shape[-1] - 1) // dw)
        weight = self.weight[:, :, kh // 2 - mh:kh // 2 + mh + 1, kw // 2 - mw:kw // 2 + mw + 1]
        padding = (mh * dh, mw * dw)
        if self.groups == self.in_channels == self.out_channels and self.bias is None:  # depthwise
            if (mh, mw) == (0, 0):
                return x * weight.view(1, -1, 1, 1)  # a depthwise 1×1: one product per output, as the conv's
            if x.device.type == "cpu" and small_map(x, self.dilation):
                return depthwise_as_matmul(x, weight, mh, mw, dh, dw)
            if x.device.type == "cpu" and self.dilation != (1, 1) and not torch.is_autocast_enabled("cpu"):
                return DilatedDepthwise.apply(x, weight, padding, self.dilation)  # (its backward is float32)
        return F.conv2d(x, weight, self.bias, 1, padding, self.dilation, self.groups)


class DilatedDepthwise(torch.autograd.Function):
    """A "same" dilated depthwise convolution with a backward of its own: torch's CPU kernel takes
    ~10× the forward's time for the weight's gradient of a dilated depthwise conv (1.0 against 0.08 ms
    for a 3×3 at dilation 3 on 8×32×12×12, 3.9 against 0.17 ms on 24×24; issue 30). Here the input's
    gradient is the convolution with the flipped taps and the weight's one product and sum a tap
    (0.08 + 0.3 ms; 0.17 + 1.0 ms), equal to torch's up to float summation order."""

    @staticmethod
    def forward(ctx, x, weight, padding, dilation):
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.dilation = padding, dilation
        return F.conv2d(x, weight, None, 1, padding, dilation, x.shape[1])

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        (ph, pw), (dh, dw) = ctx.padding, ctx.dilation
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = F.conv2d(grad, weight.flip(-2, -1), None, 1, ctx.padding, ctx.dilation, x.shape[1])
        if ctx.needs_input_grad[1]:
            (kh, kw), (h, w) = weight.shape[-2:], x.shape[-2:]
            padded = F.pad(x, (pw, pw, ph, ph))
            grad_w = torch.stack([(padded[:, :, a * dh:a * dh + h, b * dw:b * dw + w] * grad).sum((0, 2, 3))
                                  for a in range(kh) for b in range(kw)], 1).view_as(weight)
        return grad_x, grad_w, None, None


def small_map(x: torch.Tensor, dilation) -> bool:
    """Maps where a depthwise convolution is faster as a matmul on CPU (measured at a proxy's sizes,
    8×32 channels: dilated on 3×3 to 6×6, 0.2–0.5 ms saved a call forward and backward; undilated
    only on 2×2; slower from 12×12, where the convolution's own kernel wins)."""
    pixels = x.shape[-2] * x.shape[-1]
    return pixels <= 4 or (pixels <= 36 and dilation != (1, 1))


def depthwise_as_matmul(x, weight, mh: int, mw: int, dh: int, dw: int) -> torch.Tensor:
    """A "same" depthwise convolution of `weight`'s (2mh+1)×(2mw+1) taps on a small map, as one
    batched matmul per channel: each channel's convolution is a (pixels × pixels) matrix, the taps'
    weights times fixed 0/1 shift matrices (`shift_matrices`). Output and gradients equal the
    convolution's up to float summation order."""
    n, c, h, w = x.shape
    shifts = shift_matrices(h, w, mh, mw, dh, dw).to(x.dtype)
    per_channel = (weight.reshape(c, -1) @ shifts).view(c, h * w, h * w)
    y = torch.bmm(x.reshape(n, c, h * w).transpose(0, 1), per_channel.transpose(1, 2))
    return y.transpose(0, 1).reshape(n, c, h, w)


def shift_matrices(h: int, w: int, mh: int, mw: int, dh: int, dw: int) -> torch.Tensor:
    """(taps, (h·w)²): row t says which input pixel each output pixel reads through tap t, in
    row-major tap order as a conv weight flattens; outputs whose tap reads padding read nothing.
    The cache holds numpy, and each call wraps it anew (no copy): a tensor cached while torch.export
    traces (a fake tensor) would be served to every later call."""
    return torch.from_numpy(shift_array(h, w, mh, mw, dh, dw))


@lru_cache(maxsize=64)
def shift_array(h: int, w: int, mh: int, mw: int, dh: int, dw: int):
    import numpy as np

    out = np.zeros(((2 * mh + 1) * (2 * mw + 1), h, w, h, w), np.float32)
    t = 0
    for a in range(-mh, mh + 1):
        for b in range(-mw, mw + 1):
            for i in range(max(0, -a * dh), min(h, h - a * dh)):
                for j in range(max(0, -b * dw), min(w, w - b * dw)):
                    out[t, i, j, i + a * dh, j + b * dw] = 1.0
            t += 1
    return out.reshape(t, -1)  # shared by every call's tensor: read, never written


class PairwiseMix(nn.Conv2d):
    """The grouped 1×1 convolution whose output channel j mixes input channels 2j and 2j+1 (NAS-FCOS's
    concatenation), computed as a product and a sum over each pair. Torch's CPU path runs a grouped
    1×1 as one convolution per group, a few dozen calls a layer: ~0.6 ms forward and backward against
    ~0.15 ms at a proxy's sizes (issue 30). Same parameter, so checkpoints do not change."""

    def __init__(self, channels: int):
        super().__init__(2 * channels, channels, 1, groups=channels, bias=False)

    def forward(self, x):
        if _NOMINAL[-1]:
            return super().forward(x)
        n, _, h, w = x.shape
        pairs = x.view(n, self.out_channels, 2, h, w)
        return (pairs * self.weight.view(1, self.out_channels, 2, 1, 1)).sum(2)


class ConvNormAct(nn.Sequential):
    def __init__(self, channels: int, kernel: int, norm: str, dilation: int = 1):
        pad = dilation * (kernel - 1) // 2
        super().__init__(ReachConv2d(channels, channels, kernel, padding=pad, dilation=dilation, bias=False),
                         norm_layer(norm, channels), nn.ReLU(inplace=True))


class SepConv(nn.Sequential):
    """Depthwise k×k (dilated) -> pointwise 1×1 -> norm -> ReLU."""

    def __init__(self, channels: int, kernel: int, norm: str, dilation: int = 1):
        pad = dilation * (kernel - 1) // 2
        super().__init__(ReachConv2d(channels, channels, kernel, padding=pad, dilation=dilation,
                                     groups=channels, bias=False),
                         nn.Conv2d(channels, channels, 1, bias=False),
                         norm_layer(norm, channels), nn.ReLU(inplace=True))


class DeformConv(nn.Module):
    """Modulated deformable 3×3 convolution (DCNv2, Zhu et al. 2019; `torchvision.ops.deform_conv2d`
    with `mask=`) -> norm -> ReLU, as the released NAS-FCOS code builds it: 2 deformable groups, conv
    bias, offsets and masks from one 3×3 conv (`conv_offset_mask`, 3·9·groups channels, with bias).
    That conv starts at zero (zero offsets, masks sigmoid(0) = 0.5), so the op starts as a plain
    3×3 convolution; `keep_init` tells head initialisation to leave it so."""

    def __init__(self, channels: int, norm: str, groups: int = 2):
        super().__init__()
        self.conv_offset_mask = nn.Conv2d(channels, 3 * 9 * groups, 3, padding=1)
        nn.init.zeros_(self.conv_offset_mask.weight)
        nn.init.zeros_(self.conv_offset_mask.bias)
        self.conv_offset_mask.keep_init = True
        self.conv = DeformConv2d(channels, channels, 3, padding=1, bias=True)
        self.post = nn.Sequential(norm_layer(norm, channels), nn.ReLU(inplace=True))

    def forward(self, x):
        o1, o2, mask = torch.chunk(self.conv_offset_mask(x), 3, dim=1)
        # The deformable sampling runs in float32 under mixed precision: bilinear sampling at
        # fractional offsets is what float16 would hurt (and torchvision's CPU kernel has no half types).
        with torch.autocast(x.device.type, enabled=False):
            args = x.float(), torch.cat([o1, o2], dim=1).float(), torch.sigmoid(mask.float())
            if x.device.type == "cpu" and not _NOMINAL[-1]:
                y = deform_conv_by_sampling(*args, self.conv.weight, self.conv.bias)
            else:
                y = self.conv(*args)
        return self.post(y)


def deform_conv_by_sampling(x, offset, mask, weight, bias):
    """torchvision's modulated deformable "same" convolution (stride 1, dilation 1) computed with
    `grid_sample` and a matmul: every tap's bilinear samples at once (zeros outside the map, as
    torchvision's kernel), times the mask, then the weights over channels × taps. On CPU torchvision's
    backward takes ~120 ms for 16×32×12×12 (72 % of a faithful-proxy step of a decoder with deformable
    ops, issue 30); autograd through these ops is the same gradient up to float order."""
    n, c, h, w = x.shape
    kh, kw = weight.shape[-2:]
    taps = kh * kw
    groups = mask.shape[1] // taps
    offset = offset.view(n, groups, taps, 2, h, w)  # torchvision's layout: (dy, dx) per group and tap
    dy = (torch.arange(kh, device=x.device) - kh // 2).repeat_interleave(kw).view(1, 1, taps, 1, 1)
    dx = (torch.arange(kw, device=x.device) - kw // 2).repeat(kh).view(1, 1, taps, 1, 1)
    rows = torch.arange(h, device=x.device).view(1, 1, 1, h, 1) + dy + offset[:, :, :, 0]
    cols = torch.arange(w, device=x.device).view(1, 1, 1, 1, w) + dx + offset[:, :, :, 1]
    # grid_sample's coordinates without align_corners: pixel p of a size-s axis is (2p + 1) / s - 1
    grid = torch.stack([(2 * cols + 1) / w - 1, (2 * rows + 1) / h - 1], dim=-1)
    samples = F.grid_sample(x.reshape(n * groups, c // groups, h, w), grid.view(n * groups, taps * h, w, 2),
                            mode="bilinear", padding_mode="zeros", align_corners=False)
    samples = samples.view(n, groups, c // groups, taps, h, w) * mask.view(n, groups, 1, taps, h, w)
    out = weight.reshape(weight.shape[0], c * taps) @ samples.reshape(n, c * taps, h * w)
    return (out + bias.view(1, -1, 1)).view(n, -1, h, w)


OPS: dict = {}


def register(name: str, factory) -> None:
    if name in OPS:
        raise KeyError(f"duplicate op {name!r}")
    OPS[name] = factory


class Zero(nn.Module):
    """The "none" op of the differentiable spaces: no connection (zeros of the input's shape)."""

    def forward(self, x):
        return x.mul(0.0)


for _name, _factory in {
    "none": lambda c, norm: Zero(),
    "skip": lambda c, norm: nn.Identity(),
    "conv1x1": lambda c, norm: ConvNormAct(c, 1, norm),
    "conv3x3": lambda c, norm: ConvNormAct(c, 3, norm),
    "sep3x3": lambda c, norm: SepConv(c, 3, norm),
    "sep3x3_d3": lambda c, norm: SepConv(c, 3, norm, dilation=3),
    "sep5x5_d6": lambda c, norm: SepConv(c, 5, norm, dilation=6),
    "deform3x3": lambda c, norm: DeformConv(c, norm),
    # Auto-FPN's sets (its dilated convs are depthwise-separable, as DARTS's dil_conv)
    "conv5x5": lambda c, norm: ConvNormAct(c, 5, norm),
    "sep5x5": lambda c, norm: SepConv(c, 5, norm),
    "dil3x3_r2": lambda c, norm: SepConv(c, 3, norm, dilation=2),
    "dil3x3_r3": lambda c, norm: SepConv(c, 3, norm, dilation=3),
    "dil5x5_r2": lambda c, norm: SepConv(c, 5, norm, dilation=2),
    "dil5x5_r3": lambda c, norm: SepConv(c, 5, norm, dilation=3),
}.items():
    register(_name, _factory)


def deform_conv_flops(module: nn.Module, x_shape) -> int:
    """FLOPs FlopCounterMode cannot see: each deformable 3×3 (multiply-adds ×2, bilinear sampling of
    9 points ×4 neighbours per input channel, and the modulation mask's multiply)."""
    _, c, h, w = x_shape
    return 2 * c * c * 9 * h * w + 2 * 4 * c * 9 * h * w + c * 9 * h * w


def resize_to(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resizing (the paper's choice for NAS-FCOS aggregation and outputs)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return nn.functional.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
