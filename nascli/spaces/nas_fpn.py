"""The NAS-FPN search space (Ghiasi et al. 2019, §3.1; papers/nas-fpn.md) on RetinaNet.

Inputs C3..C7: C3, C4, C5 by 1×1 lateral conv (+BN) to the pyramid width; C6 by its own 1×1
lateral (+BN) on C5 and stride-2 max-pooling, C7 by max-pooling that (stride 4 from C5), as the
released TF RetinaNet code resamples them. (With this, the published R-50 7 @ 256 has 60.34 M
parameters, the paper's Table 1 says 60.3 M; sharing C5's lateral would give 59.82 M.) They are the first five candidates. Each merging cell
picks a candidate, a second one without replacement, an output level, and a binary op: sum, or
global-pooling attention `x2 + sigmoid(GAP(x2)) · x1`; inputs are resized to the output level
by nearest upsampling or max-pooling; then ReLU -> 3×3 conv -> BN; the result joins the
candidates. Intermediate cells never output stride 8 (P3). The last five cells emit P3..P7 in the
order the controller picks (each chooses among the levels still missing); when an output cell is
built, every candidate of its level that no cell has used yet is summed into it before the conv
(the released TF implementation's rule). The pyramid is stacked `repeats` times with its own
weights per stage (proxy: 3; published: 7 @ 256); the genotype carries `repeats`.

Genotype cells are (first, second, level, op): candidate indices, level 3..7, op 0 sum / 1 gp.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SpecError
from . import base
from .genotype_json import JsonGenotype, fields_of, read_fields
from .base import Decision

SPACE = "nas-fpn"
SEARCHES = base.DECODER
VERSION = 1
LEVELS = (3, 4, 5, 6, 7)
BINARY_OPS = ("sum", "global_pool")
NUM_INPUTS = len(LEVELS)


@dataclass(frozen=True)
class SpaceSpec:
    """The space's size knobs (paper: 7 cells; width 256; 3 stacked pyramids in the proxy)."""

    cells: int = 7
    width: int = 256
    repeats: int = 3

    def __post_init__(self):
        if self.cells < len(LEVELS):
            raise SpecError(f"field 'cells': at least {len(LEVELS)} (the last five emit P3..P7)")


@dataclass(frozen=True)
class Genotype(JsonGenotype):
    """A NAS-FPN pyramid: merging cells (first, second, level, op); the last five emit P3..P7."""

    cells: tuple
    repeats: int = 3
    space: str = field(default=SPACE)
    version: int = field(default=VERSION)

    @classmethod
    def from_json(cls, text, source: str = "genotype") -> Genotype:
        data = read_fields(text, source, SPACE, VERSION)
        with fields_of(source):
            g = cls(cells=tuple(tuple(int(v) for v in c) for c in data["cells"]),
                    repeats=int(data.get("repeats", 3)))
            problem = validate(g)
        if problem:
            raise SpecError(f"{source}: {problem}")
        return g


def validate(g: Genotype) -> str | None:
    """Why a genotype cannot be built, or None."""
    n = len(g.cells)
    if g.repeats < 1:
        return f"field 'repeats': {g.repeats}, at least 1"
    if n < len(LEVELS):
        return f"field 'cells': {n} cells, at least {len(LEVELS)} needed"
    for k, cell in enumerate(g.cells):
        if len(cell) != 4:
            return f"field 'cells[{k}]': expected (first, second, level, op)"
        a, b, level, op = cell
        if not (0 <= a < NUM_INPUTS + k and 0 <= b < NUM_INPUTS + k) or a == b:
            return f"field 'cells[{k}]': inputs {a}, {b} must be two different earlier candidates"
        if level not in LEVELS or op not in (0, 1):
            return f"field 'cells[{k}]': level {level} / op {op} out of range"
        if k < n - len(LEVELS) and level == LEVELS[0]:
            return f"field 'cells[{k}]': intermediate cells never output P3 (stride 8)"
    outputs = sorted(c[2] for c in g.cells[-len(LEVELS):])
    if outputs != list(LEVELS):
        return f"field 'cells': the last five cells must emit P3..P7 once each, not {outputs}"
    return None


def decisions(spec: SpaceSpec = SpaceSpec()) -> list[Decision]:
    """Per cell: first input, second input (without replacement), level, op. Option counts are
    fixed per position: the pool grows by one per cell; intermediate cells choose among P4..P7,
    output cell j among the 5 - j levels not yet emitted."""
    out = []
    for k in range(spec.cells):
        pool = NUM_INPUTS + k
        j = k - (spec.cells - len(LEVELS))
        levels = len(LEVELS) - 1 if j < 0 else len(LEVELS) - j
        out += [Decision(f"cell{k}.first", pool), Decision(f"cell{k}.second", pool - 1),
                Decision(f"cell{k}.level", levels), Decision(f"cell{k}.op", len(BINARY_OPS))]
    return out


def decode(choices, spec: SpaceSpec = SpaceSpec()) -> Genotype:
    expected = len(decisions(spec))
    if len(choices) != expected:
        raise ValueError(f"expected {expected} choices, got {len(choices)}")
    it = iter(int(c) for c in choices)
    cells, missing = [], list(LEVELS)
    for k in range(spec.cells):
        a, b, lv, op = (next(it) for _ in range(4))
        b = b + (b >= a)  # the second pick skips the first
        if k < spec.cells - len(LEVELS):
            level = LEVELS[1:][lv]
        else:
            level = missing.pop(lv)
        cells.append((a, b, level, op))
    return Genotype(cells=tuple(cells), repeats=spec.repeats)


def encode(genotype: Genotype, spec: SpaceSpec = SpaceSpec()) -> list[int]:
    out, missing = [], list(LEVELS)
    for k, (a, b, level, op) in enumerate(genotype.cells):
        if k < spec.cells - len(LEVELS):
            lv = LEVELS[1:].index(level)
        else:
            lv = missing.index(level)
            missing.pop(lv)
        out += [a, b - (b > a), lv, op]
    return out


def is_valid(choices, spec: SpaceSpec = SpaceSpec()) -> bool:
    return validate(decode(choices, spec)) is None


# ------------------------------------------------------------------ the modules


def resize_to(x, level_from: int, level_to: int, size):
    """Nearest upsampling to a finer level, max-pooling to a coarser one (paper §3.1)."""
    if level_from > level_to:
        return F.interpolate(x, size=size, mode="nearest")
    if level_from < level_to:
        k = 2 ** (level_to - level_from)
        x = F.max_pool2d(x, k, k, ceil_mode=True)
        return x[..., :size[0], :size[1]]
    return x


class MergingCell(nn.Module):
    """Binary op on two resized inputs (+ unused same-level candidates), then ReLU-Conv3×3-BN."""

    def __init__(self, op: int, width: int):
        super().__init__()
        self.op = BINARY_OPS[op]
        self.conv = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)

    def forward(self, x1, x2, extra):
        if self.op == "sum":
            x = x1 + x2
        else:
            x = x2 + torch.sigmoid(F.adaptive_avg_pool2d(x2, 1)) * x1
        for e in extra:
            x = x + e
        return self.bn(self.conv(F.relu(x)))


class Pyramid(nn.Module):
    """One NAS-FPN stage: five levels in (P3..P7 at `width`), five levels out."""

    def __init__(self, genotype: Genotype, width: int):
        super().__init__()
        self.genotype = genotype
        self.cells = nn.ModuleList(MergingCell(op, width) for _, _, _, op in genotype.cells)
        n = len(genotype.cells)
        # which unused candidates each output cell sums in (static given the genotype)
        used = [0] * (NUM_INPUTS + n)
        levels = list(LEVELS)
        self.extras = []
        for k, (a, b, level, _) in enumerate(genotype.cells):
            used[a] += 1
            used[b] += 1
            extra = []
            if k >= n - len(LEVELS):
                for c in range(NUM_INPUTS + k):
                    if used[c] == 0 and levels[c] == level:
                        used[c] += 1
                        extra.append(c)
            self.extras.append(tuple(extra))
            levels.append(level)
        self.levels = levels

    def forward(self, inputs: list):
        sizes = {lv: tuple(x.shape[-2:]) for lv, x in zip(LEVELS, inputs)}
        nodes = list(inputs)
        outputs = {}
        n = len(self.genotype.cells)
        for k, ((a, b, level, _), cell) in enumerate(zip(self.genotype.cells, self.cells)):
            x1 = resize_to(nodes[a], self.levels[a], level, sizes[level])
            x2 = resize_to(nodes[b], self.levels[b], level, sizes[level])
            node = cell(x1, x2, [nodes[c] for c in self.extras[k]])
            nodes.append(node)
            if k >= n - len(LEVELS):
                outputs[level] = node
        return [outputs[lv] for lv in LEVELS]


class NasFpn(nn.Module):
    """Laterals (C3..C5 -> width, C6/C7 by 1×1 + max-pooling) and `repeats` stacked pyramids.

    forward(feats, exit_after=K, all_stages=False) -> list of pyramids: the last computed one, or
    with `all_stages` every stage's output (deep supervision)."""

    def __init__(self, genotype: Genotype, in_channels: dict, width: int, repeats: int):
        super().__init__()
        self.lateral = nn.ModuleDict({lv: nn.Sequential(nn.Conv2d(in_channels[src], width, 1, bias=False),
                                                        nn.BatchNorm2d(width))
                                      for lv, src in (("c3", "c3"), ("c4", "c4"), ("c5", "c5"), ("c6", "c5"))})
        self.stages = nn.ModuleList(Pyramid(genotype, width) for _ in range(repeats))

    def forward(self, feats: dict, exit_after: int | None = None, all_stages: bool = False):
        c3, c4, c5 = (self.lateral[lv](feats[lv]) for lv in ("c3", "c4", "c5"))
        c6 = F.max_pool2d(self.lateral["c6"](feats["c5"]), 2, 2, ceil_mode=True)
        c7 = F.max_pool2d(c6, 2, 2, ceil_mode=True)
        x = [c3, c4, c5, c6, c7]
        stages = len(self.stages) if exit_after is None else max(1, min(exit_after, len(self.stages)))
        outs = []
        for stage in self.stages[:stages]:
            x = stage(x)
            outs.append(x)
        return outs if all_stages else outs[-1:]


def build(genotype: Genotype, in_channels: dict, num_classes: int, width: int = 256,
          head_width: int | None = None):
    """RetinaNet decoder: `genotype.repeats` stacked NAS-FPN stages + RetinaNet head (4-conv
    towers, 9 anchors), all at `width` (the @128-256 split is NAS-FCOS's, not NAS-FPN's)."""
    from ..models.retinanet import RetinaDecoder, RetinaNetHead

    problem = validate(genotype)
    if problem:
        raise SpecError(f"genotype: {problem}")
    if head_width not in (None, width):
        raise SpecError(f"--head-width {head_width}: NAS-FPN's head runs at the pyramid width ({width})")
    return RetinaDecoder(NasFpn(genotype, in_channels, width, genotype.repeats), RetinaNetHead(width, num_classes),
                         num_classes)


class Space(base.Space):
    """The NAS-FPN space bundled for strategies and trials."""

    module = sys.modules[__name__]


def from_spec(spec) -> Space:
    """The space a proxy spec sizes (cells, width, stacked repeats)."""
    return Space(SpaceSpec(cells=spec.cells, width=spec.width, repeats=spec.repeats))
