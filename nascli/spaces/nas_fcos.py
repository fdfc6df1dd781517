"""The NAS-FCOS decoder search space (Wang et al. 2020, §3.2; papers/nas-fcos.md).

FPN: the pool starts as the backbone levels (C2..C5 as in the released code, each mapped to the
search width by a 1×1 conv-BN-ReLU). Each of the 7 basic blocks picks two pool nodes, applies one
unary op to each (sep3×3, sep3×3 dil 3, sep5×5 dil 6, skip, deformable 3×3), aggregates them by a
per-channel weighted sum or concat -> BN -> ReLU -> grouped 1×1 conv (the smaller input bilinearly
upsampled, so a block's stride is the smaller of its inputs'), and appends the result to the pool.
Block outputs never used as inputs are the "dangling" nodes: the last three become P5, P4, P3
(resized to C5/C4/C3 size), every other one is added to each of them; P6/P7 are stride-2 3×3
convs on P5 and P6. A sample is valid only if at least three block outputs dangle.

Head (applied to every level, one copy for classes and one for boxes as in FCOS): one op on P,
then 5 basic blocks whose two op outputs and aggregate all join the head's pool; the output is
the last aggregate. Per level, an index says from which head layer on the weights are shared
with the other levels (layers before it are the level's own). The released code's sequential
6-layer head is supported too, as `head_sequence` (the zoo's published NAS-FCOS uses it).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import SpecError
from ..models.detector import STRIDES
from ..models.fpn import Widen
from ..models.heads import FCOSHead
from . import base
from .base import Decision, cost  # noqa: F401  (cost: the decoder measurement every space shares)
from .genotype_json import JsonGenotype, fields_of, read_fields
from .ops import OPS, PairwiseMix, norm_layer, resize_to

SPACE = "nas-fcos"
SEARCHES = base.DECODER
VERSION = 1
# paper Table 1, ids 0..4; id 5, a dense 3x3, is ours: depthwise ops are cheap in FLOPs and slow on
# a CPU, and without it no decoder of the space reaches the hand design's latency (docs/latency.md)
FPN_OPS = ("sep3x3", "sep3x3_d3", "sep5x5_d6", "skip", "deform3x3", "conv3x3")
PAPER_OPS = FPN_OPS[:5]  # the space's default: the paper's
HEAD_SEQUENCE_OPS = ("conv1x1", "conv3x3", "sep3x3", "sep3x3_d3", "skip", "deform3x3")  # released
AGGREGATIONS = ("sum", "concat")
NUM_LEVELS = len(STRIDES)


@dataclass(frozen=True)
class SpaceSpec:
    """The space's size knobs; the proxy spec fills them (paper: C2..C5, width 64, 7 + 5 blocks).

    `fpn_ops` / `head_ops` may restrict the op lists (deformable conv costs ~20× a 3×3 on CPU);
    genotypes always store ids in the full lists above.
    """

    inputs: tuple = ("c2", "c3", "c4", "c5")
    width: int = 64
    fpn_blocks: int = 7
    head_blocks: int = 5
    fpn_ops: tuple = PAPER_OPS
    head_ops: tuple = PAPER_OPS

    def __post_init__(self):
        for name in ("fpn_ops", "head_ops"):
            unknown = [op for op in getattr(self, name) if op not in FPN_OPS]
            if unknown or not getattr(self, name):
                raise SpecError(f"field '{name}': {unknown or 'empty'} not in {list(FPN_OPS)}")
        if self.fpn_blocks < 3:
            raise SpecError("field 'fpn_blocks': at least 3 (P3..P5 come from dangling block outputs)")


@dataclass(frozen=True)
class Genotype(JsonGenotype):
    """A NAS-FCOS decoder. Blocks are (id1, id2, op1, op2, agg) with op ids in FPN_OPS.

    head_first + head_blocks describe the paper's block head; head_sequence (ids in
    HEAD_SEQUENCE_OPS) the released sequential head; exactly one of the two forms is used.
    head_share[l] is the first head layer whose weights level l shares (0 = all shared).
    """

    fpn: tuple
    head_share: tuple
    head_first: int | None = None
    head_blocks: tuple = ()
    head_sequence: tuple = ()
    inputs: tuple = ("c2", "c3", "c4", "c5")
    space: str = field(default=SPACE)
    version: int = field(default=VERSION)

    @property
    def head_layers(self) -> int:
        return len(self.head_sequence) if self.head_sequence else 1 + len(self.head_blocks)

    @classmethod
    def from_json(cls, text: str, source: str = "genotype") -> Genotype:
        data = read_fields(text, source, SPACE, VERSION)
        with fields_of(source):
            g = cls(fpn=tuple(tuple(int(v) for v in b) for b in data["fpn"]),
                    head_share=tuple(int(v) for v in data["head_share"]),
                    head_first=None if data.get("head_first") is None else int(data["head_first"]),
                    head_blocks=tuple(tuple(int(v) for v in b) for b in data.get("head_blocks", ())),
                    head_sequence=tuple(int(v) for v in data.get("head_sequence", ())),
                    inputs=tuple(data.get("inputs", ("c2", "c3", "c4", "c5"))))
            problem = validate(g)
        if problem:
            raise SpecError(f"{source}: {problem}")
        return g


def dangling(genotype: Genotype) -> list[int]:
    """Pool indices of FPN block outputs no later block reads, in pool order."""
    n = len(genotype.inputs)
    used = {i for b in genotype.fpn for i in b[:2]}
    return [n + k for k in range(len(genotype.fpn)) if n + k not in used]


def validate(g: Genotype) -> str | None:
    """Why a genotype is not a buildable NAS-FCOS decoder, or None when it is."""
    n = len(g.inputs)
    if not 1 <= n <= 4 or any(lv not in ("c2", "c3", "c4", "c5") for lv in g.inputs) or len(set(g.inputs)) < n:
        return "field 'inputs': distinct backbone levels among c2, c3, c4, c5"
    for k, (i1, i2, o1, o2, agg) in enumerate(g.fpn):
        if not (0 <= i1 < n + k and 0 <= i2 < n + k):
            return f"field 'fpn[{k}]': inputs must be earlier pool nodes (< {n + k})"
        if not (0 <= o1 < len(FPN_OPS) and 0 <= o2 < len(FPN_OPS) and 0 <= agg < len(AGGREGATIONS)):
            return f"field 'fpn[{k}]': op or aggregation id out of range"
    if len(dangling(g)) < 3:
        return "field 'fpn': fewer than three dangling block outputs for P3..P5"
    if bool(g.head_sequence) == (g.head_first is not None):
        return "field 'head_first'/'head_sequence': exactly one head form must be given"
    if g.head_sequence and any(not 0 <= o < len(HEAD_SEQUENCE_OPS) for o in g.head_sequence):
        return "field 'head_sequence': op id out of range"
    if g.head_first is not None:
        if not 0 <= g.head_first < len(FPN_OPS):
            return "field 'head_first': op id out of range"
        for k, (i1, i2, o1, o2, agg) in enumerate(g.head_blocks):
            if not (0 <= i1 < 2 + 3 * k and 0 <= i2 < 2 + 3 * k):
                return f"field 'head_blocks[{k}]': inputs must be earlier head pool nodes (< {2 + 3 * k})"
            if not (0 <= o1 < len(FPN_OPS) and 0 <= o2 < len(FPN_OPS) and 0 <= agg < len(AGGREGATIONS)):
                return f"field 'head_blocks[{k}]': op or aggregation id out of range"
    if len(g.head_share) != NUM_LEVELS or any(not 0 <= s <= g.head_layers for s in g.head_share):
        return f"field 'head_share': {NUM_LEVELS} values in 0..{g.head_layers}"
    return None


# ------------------------------------------------------------------ the decision sequence


def decisions(spec: SpaceSpec = SpaceSpec()) -> list[Decision]:
    """The architecture as categorical choices; a block's input choices grow with the pool."""
    out, n = [], len(spec.inputs)
    for k in range(spec.fpn_blocks):
        out += [Decision(f"fpn{k}.id1", n + k), Decision(f"fpn{k}.id2", n + k),
                Decision(f"fpn{k}.op1", len(spec.fpn_ops)), Decision(f"fpn{k}.op2", len(spec.fpn_ops)),
                Decision(f"fpn{k}.agg", len(AGGREGATIONS))]
    out.append(Decision("head.op0", len(spec.head_ops)))
    for k in range(spec.head_blocks):
        out += [Decision(f"head{k}.id1", 2 + 3 * k), Decision(f"head{k}.id2", 2 + 3 * k),
                Decision(f"head{k}.op1", len(spec.head_ops)), Decision(f"head{k}.op2", len(spec.head_ops)),
                Decision(f"head{k}.agg", len(AGGREGATIONS))]
    out += [Decision(f"share.p{3 + lv}", 2 + spec.head_blocks) for lv in range(NUM_LEVELS)]
    return out


def decode(choices, spec: SpaceSpec = SpaceSpec()) -> Genotype:
    """Choices (one index per decision) -> genotype; op choices index the spec's op lists."""
    expected = len(decisions(spec))
    if len(choices) != expected:
        raise ValueError(f"expected {expected} choices, got {len(choices)}")
    it = iter(int(c) for c in choices)
    fpn_op = [FPN_OPS.index(o) for o in spec.fpn_ops]
    head_op = [FPN_OPS.index(o) for o in spec.head_ops]

    def block(ops):
        i1, i2, o1, o2, agg = (next(it) for _ in range(5))
        return (i1, i2, ops[o1], ops[o2], agg)

    fpn = tuple(block(fpn_op) for _ in range(spec.fpn_blocks))
    first = head_op[next(it)]
    blocks = tuple(block(head_op) for _ in range(spec.head_blocks))
    share = tuple(next(it) for _ in range(NUM_LEVELS))
    return Genotype(fpn=fpn, head_share=share, head_first=first, head_blocks=blocks, inputs=tuple(spec.inputs))


def encode(genotype: Genotype, spec: SpaceSpec = SpaceSpec()) -> list[int]:
    """The inverse of decode (block-head genotypes whose ops the spec allows)."""
    fpn_op = {FPN_OPS.index(o): i for i, o in enumerate(spec.fpn_ops)}
    head_op = {FPN_OPS.index(o): i for i, o in enumerate(spec.head_ops)}
    out = []
    for i1, i2, o1, o2, agg in genotype.fpn:
        out += [i1, i2, fpn_op[o1], fpn_op[o2], agg]
    out.append(head_op[genotype.head_first])
    for i1, i2, o1, o2, agg in genotype.head_blocks:
        out += [i1, i2, head_op[o1], head_op[o2], agg]
    return out + list(genotype.head_share)


def is_valid(choices, spec: SpaceSpec = SpaceSpec()) -> bool:
    return validate(decode(choices, spec)) is None


# ------------------------------------------------------------------ the modules


class BasicBlock(nn.Module):
    """Two unary ops on two inputs, upsample the smaller, aggregate (Fig. 1 of the paper)."""

    def __init__(self, op1: str, op2: str, agg: str, width: int, norm: str):
        super().__init__()
        self.op1, self.op2 = OPS[op1](width, norm), OPS[op2](width, norm)
        self.agg = agg
        if agg == "sum":  # per-channel weighted sum a·x + b·y (released code)
            self.a = nn.Parameter(torch.ones(1, width, 1, 1))
            self.b = nn.Parameter(torch.ones(1, width, 1, 1))
        else:  # released code and mmdetection: norm -> ReLU -> grouped 1×1 (channel j mixes 2j, 2j+1)
            self.fuse = nn.Sequential(norm_layer(norm, 2 * width), nn.ReLU(inplace=True),
                                      PairwiseMix(width))

    def forward(self, x1, x2, keep_ops: bool = False):
        y1, y2 = self.op1(x1), self.op2(x2)
        size = max(y1.shape[-2:], y2.shape[-2:])
        z1, z2 = resize_to(y1, size), resize_to(y2, size)
        out = self.a * z1 + self.b * z2 if self.agg == "sum" else self.fuse(torch.cat([z1, z2], 1))
        return (y1, y2, out) if keep_ops else out


class NasFcosFPN(nn.Module):
    """The searched FPN: backbone levels -> P3..P7 at `width` channels."""

    def __init__(self, genotype: Genotype, in_channels: dict, width: int):
        super().__init__()
        self.genotype = genotype
        self.adapters = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_channels[lv], width, 1, bias=False), nn.BatchNorm2d(width),
                          nn.ReLU(inplace=True)) for lv in genotype.inputs)
        self.blocks = nn.ModuleList(BasicBlock(FPN_OPS[o1], FPN_OPS[o2], AGGREGATIONS[agg], width, "bn")
                                    for _, _, o1, o2, agg in genotype.fpn)
        free = dangling(genotype)
        self.p5_node, self.p4_node, self.p3_node = free[-3:]
        self.extra_nodes = free[:-3]
        self.p6 = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.p7 = nn.Conv2d(width, width, 3, stride=2, padding=1)

    def forward(self, feats: dict):
        pool = [adapt(feats[lv]) for adapt, lv in zip(self.adapters, self.genotype.inputs)]
        for block, (i1, i2, *_) in zip(self.blocks, self.genotype.fpn):
            pool.append(block(pool[i1], pool[i2]))
        outs = []
        for node, level in ((self.p3_node, "c3"), (self.p4_node, "c4"), (self.p5_node, "c5")):
            x = pool[node]
            for e in self.extra_nodes:  # dangling outputs join every output (Eq. 1)
                x = x + resize_to(pool[e], x.shape[-2:])
            outs.append(resize_to(x, feats[level].shape[-2:]))
        p6 = self.p6(outs[-1])
        return outs + [p6, self.p7(torch.relu(p6))]  # P7 = conv(relu(P6)), as the released code


class _HeadLayers(nn.Module):
    """One head tower's layers for one weight set: the first op + blocks, or the sequence."""

    def __init__(self, genotype: Genotype, width: int, layers: range):
        super().__init__()
        self.layers = nn.ModuleDict()
        for k in layers:
            if genotype.head_sequence:
                self.layers[str(k)] = OPS[HEAD_SEQUENCE_OPS[genotype.head_sequence[k]]](width, "gn")
            elif k == 0:
                self.layers[str(k)] = OPS[FPN_OPS[genotype.head_first]](width, "gn")
            else:
                _, _, o1, o2, agg = genotype.head_blocks[k - 1]
                self.layers[str(k)] = BasicBlock(FPN_OPS[o1], FPN_OPS[o2], AGGREGATIONS[agg], width, "gn")


class NasFcosTower(nn.Module):
    """A searched head tower for all levels, with per-level weights before each level's share index."""

    def __init__(self, genotype: Genotype, width: int):
        super().__init__()
        self.genotype = genotype
        n = genotype.head_layers
        self.shared = _HeadLayers(genotype, width, range(min(genotype.head_share), n))
        self.own = nn.ModuleList(_HeadLayers(genotype, width, range(genotype.head_share[lv]))
                                 for lv in range(NUM_LEVELS))

    def layer(self, level: int, k: int) -> nn.Module:
        owner = self.own[level] if k < self.genotype.head_share[level] else self.shared
        return owner.layers[str(k)]

    def forward(self, x, level: int):
        g = self.genotype
        if g.head_sequence:
            for k in range(len(g.head_sequence)):
                x = self.layer(level, k)(x)
            return x
        pool = [x, self.layer(level, 0)(x)]
        for k, (i1, i2, *_) in enumerate(g.head_blocks, start=1):
            pool.extend(self.layer(level, k)(pool[i1], pool[i2], keep_ops=True))
        return pool[-1]


class NasFcosTowers(nn.Module):
    """Classification and box towers of the same searched structure (separate weights, as FCOS)."""

    def __init__(self, genotype: Genotype, width: int):
        super().__init__()
        self.cls_tower = NasFcosTower(genotype, width)
        self.box_tower = NasFcosTower(genotype, width)

    def forward(self, x, level: int):
        return self.cls_tower(x, level), self.box_tower(x, level)


def build(genotype: Genotype, in_channels: dict, num_classes: int, width: int = 64,
          head_width: int | None = None):
    """The searched decoder as an FCOSDecoder (FPN + FCOS head with searched towers).

    `head_width` other than `width` gives the paper's @128-256 variant (a 1×1 conv between them).
    """
    from ..models.detector import FCOSDecoder

    problem = validate(genotype)
    if problem:
        raise SpecError(f"genotype: {problem}")
    head_width = head_width or width
    fpn = NasFcosFPN(genotype, in_channels, width)
    if head_width != width:
        fpn = Widen(fpn, width, head_width)
    head = FCOSHead(head_width, num_classes, strides=STRIDES, towers=NasFcosTowers(genotype, head_width))
    return FCOSDecoder(in_channels, num_classes, fpn=fpn, head=head)


class Space(base.Space):
    """The NAS-FCOS space bundled for strategies and trials."""

    module = sys.modules[__name__]


def from_spec(spec) -> Space:
    """The space a proxy spec sizes (inputs, width, blocks, the op lists it allows)."""
    return Space(SpaceSpec(inputs=tuple(spec.inputs), width=spec.width, fpn_blocks=spec.fpn_blocks,
                           head_blocks=spec.head_blocks, fpn_ops=tuple(spec.fpn_ops), head_ops=tuple(spec.head_ops)))
