"""The DetNAS backbone space (Chen et al. 2019, §3.3 and Table 1; papers/detnas.md): ShuffleNetV2
blocks, each searchable block one of four choices, in a one-shot supernet.

Layout (Table 1): a 3×3 stride-2 conv (with bias, BN, ReLU: the released `first_conv`), then four
stages of searchable blocks, each stage opening with a stride-2 block; their outputs are C2..C5
(strides 4..32). Small: repeats [4, 4, 8, 4], channels 16 | 64, 160, 320, 640 (20 blocks, ~300 M
FLOPs); large: [8, 8, 16, 8], 48 | 96, 240, 480, 960 (40 blocks). The 1024-channel conv after
stage 4 feeds ImageNet classification only and is not part of a detection backbone. A CPU scales
them with `width` (channels, rounded to multiples of 4) and `depth` (repeats, at least 1).

Blocks, as released (shuffle_blocks.py): a stride-1 block splits its input by channel shuffle
(even / odd channels), keeps one half and runs the other through its branch; a stride-2 block runs
the whole input through the branch (to out - in channels) and a projection (depthwise k×k
stride 2 + BN, 1×1 + BN + ReLU), and concatenates. Branches: `shuffle KxK` = 1×1 + BN + ReLU,
depthwise K×K + BN, 1×1 + BN; `xception 3x3` = three (depthwise 3×3 + BN, 1×1 + BN) with ReLU
between; a ReLU after the branch. Mid channels = out // 2 (the released base_mid_channels).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import SpecError
from . import base
from .genotype_json import JsonGenotype, fields_of, read_fields
from .base import Decision

SPACE, VERSION = "detnas", 1
SEARCHES = base.BACKBONE
CHOICES = ("shuffle3x3", "shuffle5x5", "shuffle7x7", "xception3x3")  # the released ids 0..3
LAYOUTS = {"small": ((4, 4, 8, 4), (16, 64, 160, 320, 640)), "large": ((8, 8, 16, 8), (48, 96, 240, 480, 960))}
LEVELS = ("c2", "c3", "c4", "c5")


@dataclass(frozen=True)
class SpaceSpec:
    """Layout and the CPU multipliers (paper: width 1, depth 1)."""

    layout: str = "small"
    width: float = 1.0
    depth: float = 1.0

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise SpecError(f"field 'layout': {self.layout!r}, expected one of {', '.join(LAYOUTS)}")
        if not (0 < self.width <= 4 and 0 < self.depth <= 4):
            raise SpecError(f"fields 'width' / 'depth': {self.width} / {self.depth}, expected in (0, 4]")

    def repeats(self) -> tuple:
        return tuple(max(1, round(r * self.depth)) for r in LAYOUTS[self.layout][0])

    def channels(self) -> tuple:
        """Stem, then each stage's output channels: multiples of 4 (a stride-1 block halves them)."""
        return tuple(max(8, 4 * round(c * self.width / 4)) for c in LAYOUTS[self.layout][1])

    def blocks(self) -> int:
        return sum(self.repeats())


@dataclass(frozen=True)
class Genotype(JsonGenotype):
    """One path: a choice id (0..3, CHOICES) per searchable block, and the layout it belongs to."""

    choices: tuple
    layout: str = "small"
    width: float = 1.0
    depth: float = 1.0
    space: str = field(default=SPACE)
    version: int = field(default=VERSION)

    @property
    def spec(self) -> SpaceSpec:
        return SpaceSpec(self.layout, self.width, self.depth)

    @classmethod
    def from_json(cls, text, source: str = "genotype") -> Genotype:
        data = read_fields(text, source, SPACE, VERSION)
        with fields_of(source):
            g = cls(choices=tuple(int(c) for c in data["choices"]), layout=str(data.get("layout", "small")),
                    width=float(data.get("width", 1.0)), depth=float(data.get("depth", 1.0)))
            spec = g.spec
        if len(g.choices) != spec.blocks() or not all(0 <= c < len(CHOICES) for c in g.choices):
            raise SpecError(f"{source}: field 'choices' needs {spec.blocks()} ids in 0..{len(CHOICES) - 1} "
                            f"({g.layout} layout, depth {g.depth}), got {list(g.choices)}")
        return g

    def describe(self) -> str:
        return f"{self.layout} [{''.join(str(c) for c in self.choices)}]"


# ------------------------------------------------------------------ blocks


def _dw_pw(cin: int, cout: int, k: int, stride: int, relu: bool) -> list:
    """Depthwise k×k + BN, then 1×1 + BN (+ ReLU)."""
    layers = [nn.Conv2d(cin, cin, k, stride, k // 2, groups=cin, bias=False), nn.BatchNorm2d(cin),
              nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)]
    return layers + ([nn.ReLU(inplace=True)] if relu else [])


def branch(choice: int, cin: int, cout: int, mid: int, stride: int) -> nn.Sequential:
    name = CHOICES[choice]
    if name.startswith("shuffle"):
        k = int(name[-1])
        return nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
                             *_dw_pw(mid, cout, k, stride, relu=False))
    return nn.Sequential(*_dw_pw(cin, mid, 3, stride, relu=True), *_dw_pw(mid, mid, 3, 1, relu=True),
                         *_dw_pw(mid, cout, 3, 1, relu=False))


def shuffle_halves(x: torch.Tensor):
    """ShuffleNetV2's channel shuffle and split: even channels, odd channels."""
    return x[:, 0::2], x[:, 1::2]


class ShuffleBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, choice: int):
        super().__init__()
        self.stride = stride
        mid = cout // 2
        if stride == 2:
            k = 3 if CHOICES[choice].startswith("xception") else int(CHOICES[choice][-1])
            self.branch = branch(choice, cin, cout - cin, mid, 2)
            self.proj = nn.Sequential(*_dw_pw(cin, cin, k, 2, relu=True))
        else:
            if cin != cout:
                raise SpecError(f"a stride-1 block keeps its channels ({cin} -> {cout})")
            self.branch = branch(choice, cin // 2, cout // 2, mid, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        if self.stride == 2:
            keep, x = self.proj(x), x
        else:
            keep, x = shuffle_halves(x)
        return torch.cat((keep, self.relu(self.branch(x))), 1)


def _stem(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, channels, 3, 2, 1, bias=True), nn.BatchNorm2d(channels), nn.ReLU(inplace=True))


def _plan(spec: SpaceSpec) -> list[tuple]:
    """(in, out, stride, stage) of every searchable block."""
    channels, plan = spec.channels(), []
    cin = channels[0]
    for stage, (repeats, cout) in enumerate(zip(spec.repeats(), channels[1:])):
        for r in range(repeats):
            plan.append((cin, cout, 2 if r == 0 else 1, stage))
            cin = cout
    return plan


class _Backbone(nn.Module):
    """Shared by the supernet and a standalone path: stem, blocks, C2..C5 at the stage ends."""

    def _setup(self, spec: SpaceSpec):
        self.spec = spec
        self.stem = _stem(spec.channels()[0])
        plan = _plan(spec)
        self.stage_ends = {i for i, (*_, stage) in enumerate(plan) if i + 1 == len(plan) or plan[i + 1][3] != stage}
        self.out_channels = dict(zip(LEVELS, spec.channels()[1:]))
        return plan

    def _run(self, x, blocks):
        x, out = self.stem(x), {}
        for i, block in enumerate(blocks):
            x = block(x)
            if i in self.stage_ends:
                out[LEVELS[len(out)]] = x
        return out


class DetNASNet(_Backbone):
    """The standalone backbone of one path (a genotype)."""

    def __init__(self, genotype: Genotype):
        super().__init__()
        plan = self._setup(genotype.spec)
        self.genotype = genotype
        self.blocks = nn.ModuleList(ShuffleBlock(cin, cout, s, c) for (cin, cout, s, _), c in zip(plan, genotype.choices))

    def forward(self, x):
        return self._run(x, self.blocks)


class Supernet(_Backbone):
    """Every searchable block holds all four choices; `path` picks one per block (path-wise training:
    only the picked modules get gradients)."""

    def __init__(self, spec: SpaceSpec):
        super().__init__()
        plan = self._setup(spec)
        self.blocks = nn.ModuleList(nn.ModuleList(ShuffleBlock(cin, cout, s, c) for c in range(len(CHOICES)))
                                    for cin, cout, s, _ in plan)
        self.path = tuple([0] * len(plan))

    def forward(self, x, path=None):
        path = self.path if path is None else path
        return self._run(x, [choices[c] for choices, c in zip(self.blocks, path)])

    def extract(self, genotype: Genotype) -> DetNASNet:
        """The standalone network of a path with the supernet's weights (inherited, not copied by reference)."""
        net = DetNASNet(genotype)
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("blocks.")}
        for i, c in enumerate(genotype.choices):
            prefix = f"blocks.{i}.{c}."
            state.update({f"blocks.{i}.{k[len(prefix):]}": v.clone() for k, v in self.state_dict().items()
                          if k.startswith(prefix)})
        net.load_state_dict(state)
        return net


# ------------------------------------------------------------------ the space contract


def decisions(spec: SpaceSpec = SpaceSpec()) -> list[Decision]:
    return [Decision(f"block {i + 1}", len(CHOICES)) for i in range(spec.blocks())]


def decode(choices, spec: SpaceSpec = SpaceSpec()) -> Genotype:
    return Genotype(tuple(int(c) for c in choices), spec.layout, spec.width, spec.depth)


def encode(genotype: Genotype, spec: SpaceSpec = SpaceSpec()) -> list[int]:
    return list(genotype.choices)


def is_valid(choices, spec: SpaceSpec = SpaceSpec()) -> bool:
    return len(choices) == spec.blocks() and all(0 <= c < len(CHOICES) for c in choices)


def flops(genotype: Genotype, size: int = 224) -> int:
    """Multiply-adds of the backbone on one size×size image (the paper's FLOPs: 300 M at 224²)."""
    from torch.utils.flop_counter import FlopCounterMode

    net = DetNASNet(genotype).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() // 2


def build(genotype: Genotype, in_channels: dict, num_classes: int, width: int, head_width: int | None = None):
    """A backbone genotype's decoder: the family's fixed FPN + FCOS head (the backbone is what is searched)."""
    from . import fpn_fcos

    return fpn_fcos.build(fpn_fcos.Genotype(), in_channels, num_classes, width, head_width)


class Space(base.Space):
    """The DetNAS space bundled for strategies (evolution, random): decisions are the per-block choices."""

    module = sys.modules[__name__]


def from_spec(spec) -> Space:
    """The space a proxy spec's `supernet` section sizes (layout, width and depth multipliers)."""
    o = spec.supernet
    return Space(SpaceSpec(o.get("layout", "small"), o.get("width", 1.0), o.get("depth", 1.0)))


def build_backbone(genotype: Genotype) -> nn.Module:
    """The standalone network of one path (a backbone for the family's FPN + FCOS head)."""
    return DetNASNet(genotype)


#: DetNASNet from the released lists (docs/design.md, the zoo), and the all-3×3 ShuffleNetV2 baselines.
FPN_300M = Genotype((2, 1, 2, 0, 2, 1, 1, 2, 3, 3, 1, 3, 0, 0, 3, 1, 3, 1, 3, 2), "small")
RETINANET_300M = Genotype((2, 3, 1, 1, 3, 2, 1, 3, 3, 1, 1, 1, 3, 3, 2, 0, 3, 3, 3, 3), "small")
FPN_1_3G = Genotype((0, 0, 3, 1, 2, 1, 0, 2, 0, 3, 1, 2, 3, 3, 2, 0, 2, 1, 1, 3,
                     2, 0, 2, 2, 2, 1, 3, 1, 0, 3, 3, 3, 1, 3, 3, 3, 3, 3, 3, 3), "large")
SHUFFLENETV2_20 = Genotype((0,) * 20, "small")
SHUFFLENETV2_40 = Genotype((0,) * 40, "large")
