"""The Auto-FPN search space (Xu et al. 2019, §3.2-3.3; papers/auto-fpn.md), on the one-stage FCOS
detector (the paper's §3.2.1 extension).

Auto-fusion (the neck): L layers, each fully connected between the pyramid levels. The link from
level j of layer l-1 to level i of layer l is a 1×1 conv to the search width, then one op of
NECK_OPS, then resized to level i (max-pooling down, bilinear up); a level's output is the sum of
its incoming links. Layer 0 is the backbone's C3..C5; the last layer's levels are P3..P5, and
P6/P7 are stride-2 convs on P5 as in FCOS.

Auto-head: the FCOS classification and box towers (separate weights, the same structure) are M
cells of 7 nodes: two inputs (the outputs of cells m-2 and m-1, each mapped to the width by a 1×1
conv; the level's feature for the first cells), four intermediate nodes each summing one op of
HEAD_OPS on every earlier node, and the output: the concatenation of the four, mapped back to the
width after the last cell. Each cell has its own op choices.

A genotype holds one op id per link and per head edge (0 = none: no connection). The same modules
build the supernet (`Supernet`: every op on every edge, mixed by softmax(α)) and the discrete
network a genotype describes, so a supernet with one-hot mixing weights computes what the
decoded network computes. Ops use GroupNorm: the paper searches without batch norm, and the
proxy's and the retraining's small batches make BN statistics noisy.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SpecError
from ..models.detector import STRIDES
from ..models.heads import FCOSHead, group_count
from .genotype_json import JsonGenotype, fields_of, read_fields
from . import base
from .base import Decision
from .ops import OPS

SPACE = "auto-fpn"
SEARCHES = base.DECODER
VERSION = 1
NECK_OPS = ("none", "skip", "sep3x3", "sep5x5", "dil3x3_r2", "dil3x3_r3", "dil5x5_r2", "dil5x5_r3")
HEAD_OPS = ("none", "skip", "sep3x3", "sep5x5", "dil3x3_r2", "dil5x5_r2", "conv3x3", "conv5x5")
HEAD_NODES = 4
LEVELS = ("c3", "c4", "c5")  # P3..P5; P6/P7 come from P5
NORM = "gn"


def head_edges() -> list[tuple[int, int]]:
    """(node, input) of every edge in a head cell: node n (0..3) reads the 2 inputs and nodes < n."""
    return [(n, k) for n in range(HEAD_NODES) for k in range(2 + n)]


def op_shares(genotype: "Genotype") -> dict:
    """How much of a decoded network is parameter-free: the share of its neck links and head edges
    that are none, skip or a parametric op (DARTS collapse shows as none + skip near 1)."""
    ops = [NECK_OPS[o] for layer in genotype.neck for row in layer for o in row]
    ops += [HEAD_OPS[o] for cell in genotype.head for o in cell]
    none, skip = ops.count("none") / len(ops), ops.count("skip") / len(ops)
    return {"none": none, "skip": skip, "parametric": 1 - none - skip}


@dataclass(frozen=True)
class SpaceSpec:
    """Size knobs (paper: L = 2 neck layers, M = 2 head cells, width 256)."""

    layers: int = 2
    head_cells: int = 2
    width: int = 64

    def __post_init__(self):
        if self.layers < 1 or self.head_cells < 1:
            raise SpecError("field 'layers'/'head_cells': at least 1 each")


@dataclass(frozen=True)
class Genotype(JsonGenotype):
    """neck[l][i][j]: op id (NECK_OPS) of the link from level j of layer l to level i of layer l+1;
    head[m][e]: op id (HEAD_OPS) of edge e (in `head_edges()` order) of head cell m."""

    neck: tuple
    head: tuple
    space: str = field(default=SPACE)
    version: int = field(default=VERSION)

    @classmethod
    def from_json(cls, text, source: str = "genotype") -> Genotype:
        data = read_fields(text, source, SPACE, VERSION)
        with fields_of(source):
            g = cls(neck=tuple(tuple(tuple(int(o) for o in row) for row in layer) for layer in data["neck"]),
                    head=tuple(tuple(int(o) for o in cell) for cell in data["head"]))
        problem = validate(g)
        if problem:
            raise SpecError(f"{source}: {problem}")
        return g


def validate(g: Genotype) -> str | None:
    """Why a genotype is not a buildable Auto-FPN decoder (a level or a head node left without
    any input, an id out of range), or None."""
    n = len(LEVELS)
    if not g.neck or not g.head:
        return "field 'neck'/'head': at least one layer and one cell"
    for l, layer in enumerate(g.neck):
        if len(layer) != n or any(len(row) != n for row in layer):
            return f"field 'neck[{l}]': {n}×{n} links (output level × input level)"
        for i, row in enumerate(layer):
            if any(not 0 <= o < len(NECK_OPS) for o in row):
                return f"field 'neck[{l}][{i}]': op id out of range 0..{len(NECK_OPS) - 1}"
            if all(o == 0 for o in row):
                return f"field 'neck[{l}][{i}]': every link is none, level P{3 + i} would be disconnected"
    edges = head_edges()
    for m, cell in enumerate(g.head):
        if len(cell) != len(edges):
            return f"field 'head[{m}]': {len(edges)} edges"
        if any(not 0 <= o < len(HEAD_OPS) for o in cell):
            return f"field 'head[{m}]': op id out of range 0..{len(HEAD_OPS) - 1}"
        for node in range(HEAD_NODES):
            if all(cell[e] == 0 for e, (n_, _) in enumerate(edges) if n_ == node):
                return f"field 'head[{m}]': node {node} has no input (every edge is none)"
    return None


# ------------------------------------------------------------------ decisions (random / RL search)


def decisions(spec: SpaceSpec = SpaceSpec()) -> list[Decision]:
    n = len(LEVELS)
    out = [Decision(f"neck{l}.p{3 + i}<p{3 + j}", len(NECK_OPS))
           for l in range(spec.layers) for i in range(n) for j in range(n)]
    out += [Decision(f"head{m}.n{node}<{k}", len(HEAD_OPS))
            for m in range(spec.head_cells) for node, k in head_edges()]
    return out


def decode(choices, spec: SpaceSpec = SpaceSpec()) -> Genotype:
    expected = len(decisions(spec))
    if len(choices) != expected:
        raise ValueError(f"expected {expected} choices, got {len(choices)}")
    it = iter(int(c) for c in choices)
    n = len(LEVELS)
    neck = tuple(tuple(tuple(next(it) for _ in range(n)) for _ in range(n)) for _ in range(spec.layers))
    head = tuple(tuple(next(it) for _ in head_edges()) for _ in range(spec.head_cells))
    return Genotype(neck=neck, head=head)


def encode(genotype: Genotype, spec: SpaceSpec = SpaceSpec()) -> list[int]:
    return [o for layer in genotype.neck for row in layer for o in row] + [o for cell in genotype.head for o in cell]


def is_valid(choices, spec: SpaceSpec = SpaceSpec()) -> bool:
    return validate(decode(choices, spec)) is None


# ------------------------------------------------------------------ modules (discrete and supernet)


class Edge(nn.Module):
    """One edge's ops, mixed by `weights` (one per name; "none" adds nothing) or, in a discrete
    network (a single op), applied as they are."""

    def __init__(self, names, channels: int):
        super().__init__()
        self.names = tuple(names)
        self.ops = nn.ModuleList(OPS[name](channels, NORM) for name in self.names if name != "none")
        self.slots = [k for k, name in enumerate(self.names) if name != "none"]

    def forward(self, x, weights=None):
        if weights is None:
            return sum(op(x) for op in self.ops)
        return sum(weights[k] * op(x) for k, op in zip(self.slots, self.ops))


def resize_level(x: torch.Tensor, size) -> torch.Tensor:
    """Max-pooling to a coarser level, bilinear upsampling to a finer one (the paper's choice)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-1] > size[-1]:
        return F.adaptive_max_pool2d(x, size)
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class Link(nn.Module):
    """1×1 conv to the width, then the edge's op(s); resized to the target level by the caller."""

    def __init__(self, in_channels: int, width: int, names):
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, width, 1, bias=False)
        self.edge = Edge(names, width)

    def forward(self, x, weights=None):
        return self.edge(self.reduce(x), weights)


class AutoFusion(nn.Module):
    """The neck: `links[l][i][j]` the names of the ops on each link (all of NECK_OPS in the
    supernet, the chosen one in a decoded network; a none link is left out). Output P3..P7."""

    def __init__(self, in_channels: dict, width: int, links):
        super().__init__()
        n = len(LEVELS)
        self.shape = [[[bool(names) and names != ("none",) for names in row] for row in layer] for layer in links]
        self.layers = nn.ModuleList()
        for l, layer in enumerate(links):
            widths = [in_channels[lv] for lv in LEVELS] if l == 0 else [width] * n
            self.layers.append(nn.ModuleList(
                nn.ModuleList(Link(widths[j], width, layer[i][j]) if self.shape[l][i][j] else nn.Identity()
                              for j in range(n)) for i in range(n)))
        self.p6 = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.p7 = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.in_channels = dict(in_channels)
        self.weights = None  # set by the supernet before each forward: (L, n, n, ops)

    def forward(self, feats: dict):
        xs = [feats[lv] for lv in LEVELS]
        sizes = [x.shape[-2:] for x in xs]
        for l, layer in enumerate(self.layers):
            xs = [sum(resize_level(link(xs[j], None if self.weights is None else self.weights[l, i, j]), sizes[i])
                      for j, link in enumerate(row) if self.shape[l][i][j]) for i, row in enumerate(layer)]
        p6 = self.p6(xs[-1])
        return xs + [p6, self.p7(F.relu(p6))]


class HeadCell(nn.Module):
    """A 7-node cell: inputs s0, s1 (1×1 conv + GN + ReLU to the width), 4 intermediate nodes, the
    concatenation of those 4 as output (4 × width channels)."""

    def __init__(self, c0: int, c1: int, width: int, edges):
        super().__init__()
        self.pre = nn.ModuleList(nn.Sequential(nn.Conv2d(c, width, 1, bias=False),
                                               nn.GroupNorm(group_count(width), width), nn.ReLU(inplace=True))
                                 for c in (c0, c1))
        self.edges = nn.ModuleList(Edge(names, width) for names in edges)
        self.used = [bool(e.ops) for e in self.edges]

    def forward(self, s0, s1, weights=None):
        states = [self.pre[0](s0), self.pre[1](s1)]
        for node in range(HEAD_NODES):
            states.append(sum(self.edges[e](states[k], None if weights is None else weights[e])
                              for e, (n_, k) in enumerate(head_edges()) if n_ == node and self.used[e]))
        return torch.cat(states[2:], 1)


class AutoHeadTower(nn.Module):
    def __init__(self, width: int, cells):
        super().__init__()
        out = HEAD_NODES * width
        self.cells = nn.ModuleList(HeadCell(width if m < 2 else out, width if m == 0 else out, width, edges)
                                   for m, edges in enumerate(cells))
        self.out = nn.Sequential(nn.Conv2d(out, width, 1, bias=False), nn.GroupNorm(group_count(width), width),
                                 nn.ReLU(inplace=True))

    def forward(self, x, weights=None):
        s0 = s1 = x
        for m, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, None if weights is None else weights[m])
        return self.out(s1)


class AutoHeadTowers(nn.Module):
    """Classification and box towers of the same cells (separate weights, as FCOS)."""

    def __init__(self, width: int, cells):
        super().__init__()
        self.cls_tower, self.box_tower = AutoHeadTower(width, cells), AutoHeadTower(width, cells)
        self.weights = None  # set by the supernet before each forward: (M, edges, ops)

    def forward(self, x, level: int):
        return self.cls_tower(x, self.weights), self.box_tower(x, self.weights)


def _decoder(in_channels: dict, num_classes: int, width: int, links, cells):
    from ..models.detector import FCOSDecoder

    head = FCOSHead(width, num_classes, strides=STRIDES, towers=AutoHeadTowers(width, cells))
    return FCOSDecoder(in_channels, num_classes, fpn=AutoFusion(in_channels, width, links), head=head)


def build(genotype: Genotype, in_channels: dict, num_classes: int, width: int = 64, head_width: int | None = None):
    """The decoded network: each link / edge with its one op (none: left out)."""
    problem = validate(genotype)
    if problem:
        raise SpecError(f"genotype: {problem}")
    if head_width not in (None, width):
        raise SpecError(f"--head-width {head_width}: Auto-FPN decoders run the head at the neck's width")
    links = [[[(NECK_OPS[o],) if o else () for o in row] for row in layer] for layer in genotype.neck]
    cells = [[(HEAD_OPS[o],) if o else () for o in cell] for cell in genotype.head]
    return _decoder(in_channels, num_classes, width, links, cells)


# State-dict keys of the one op on a decoded link / head edge (slot 0), and of the same op in the
# supernet (slot id - 1: the supernet's edges hold every op but none).
_NECK_OP_KEY = re.compile(r"^(fpn\.layers\.(\d+)\.(\d+)\.(\d+)\.edge\.ops\.)0\.(.*)$")
_HEAD_OP_KEY = re.compile(r"^(head\.towers\.(?:cls|box)_tower\.cells\.(\d+)\.edges\.(\d+)\.ops\.)0\.(.*)$")


class Supernet(nn.Module):
    """Every op on every edge, mixed by softmax(α); `alpha_neck` (L, 3, 3, |NECK_OPS|) and
    `alpha_head` (M, 14, |HEAD_OPS|) are the architecture parameters, the rest the weights."""

    def __init__(self, spec: SpaceSpec, in_channels: dict, num_classes: int):
        super().__init__()
        n = len(LEVELS)
        links = [[[NECK_OPS] * n for _ in range(n)] for _ in range(spec.layers)]
        cells = [[HEAD_OPS] * len(head_edges()) for _ in range(spec.head_cells)]
        self.decoder = _decoder(in_channels, num_classes, spec.width, links, cells)
        self.width = spec.width
        self.alpha_neck = nn.Parameter(1e-3 * torch.randn(spec.layers, n, n, len(NECK_OPS)))
        self.alpha_head = nn.Parameter(1e-3 * torch.randn(spec.head_cells, len(head_edges()), len(HEAD_OPS)))

    def arch_parameters(self) -> list:
        return [self.alpha_neck, self.alpha_head]

    def weight_parameters(self) -> list:
        return list(self.decoder.parameters())

    def mixing(self) -> tuple[torch.Tensor, torch.Tensor]:
        return F.softmax(self.alpha_neck, -1), F.softmax(self.alpha_head, -1)

    def forward(self, feats: dict, weights=None):
        """`weights` (neck, head) overrides softmax(α), e.g. one-hot to run a single path."""
        neck, head = weights if weights is not None else self.mixing()
        self.decoder.fpn.weights, self.decoder.head.towers.weights = neck, head
        return self.decoder(feats)

    def loss_from_batch(self, outputs, batch):
        return self.decoder.loss_from_batch(outputs, batch)

    def resource(self, op_cost: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """C(α) = softmax(α) · C(op) averaged over every link and head edge. The paper (§3.5) sums
        over edges; summed over our 46 edges the term outweighed the detection loss at λ small and
        middle and both decoded to skip/none, so it is a mean per edge (issue 28): λ then weighs
        one edge's cost against the loss whatever the space's size."""
        neck, head = self.mixing()
        edges = neck.shape[:-1].numel() + head.shape[:-1].numel()
        return ((neck * op_cost[0]).sum() + (head * op_cost[1]).sum()) / edges

    def expected_latency(self, edge_ms: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Σ softmax(α)·ms over every link and head edge (`edge_latency`'s tables): the decoded
        network's predicted latency less its fixed part, in expectation over the supernet's
        distribution (FBNet's latency term); for one-hot α exactly that network's (`edges_ms`)."""
        neck, head = self.mixing()
        return (neck * edge_ms[0]).sum() + (head * edge_ms[1]).sum()

    def extract(self, genotype: Genotype) -> nn.Module:
        """The decoded network of `genotype` with the supernet's weights for its ops (the path's
        weights, inherited): run on the same features it computes what the supernet computes
        with one-hot mixing weights for that genotype."""
        net = build(genotype, self.decoder.fpn.in_channels, self.decoder.num_classes, self.width)
        own = self.decoder.state_dict()
        state = {}
        for key in net.state_dict():
            neck = _NECK_OP_KEY.match(key)
            head = _HEAD_OP_KEY.match(key)
            if neck:
                l, i, j = (int(v) for v in neck.group(2, 3, 4))
                key_in = f"{neck.group(1)}{genotype.neck[l][i][j] - 1}.{neck.group(5)}"
            elif head:
                m, e = int(head.group(2)), int(head.group(3))
                key_in = f"{head.group(1)}{genotype.head[m][e] - 1}.{head.group(4)}"
            else:
                key_in = key
            state[key] = own[key_in]
        net.load_state_dict(state)
        return net

    def decode(self) -> Genotype:
        """Argmax per link / edge; a level or head node whose every argmax is none keeps its
        strongest non-none op instead (it would be disconnected)."""
        neck_w, head_w = (w.detach() for w in self.mixing())
        neck = []
        for layer in neck_w:
            rows = []
            for row in layer:
                ops = [int(w.argmax()) for w in row]
                if all(o == 0 for o in ops):
                    j = int(row[:, 1:].max(1).values.argmax())
                    ops[j] = 1 + int(row[j, 1:].argmax())
                rows.append(tuple(ops))
            neck.append(tuple(rows))
        head = []
        for cell in head_w:
            ops = [int(w.argmax()) for w in cell]
            for node in range(HEAD_NODES):
                mine = [e for e, (n_, _) in enumerate(head_edges()) if n_ == node]
                if all(ops[e] == 0 for e in mine):
                    e = max(mine, key=lambda e: float(cell[e, 1:].max()))
                    ops[e] = 1 + int(cell[e, 1:].argmax())
            head.append(tuple(ops))
        return Genotype(neck=tuple(neck), head=tuple(head))


def op_costs(names, width: int, size: int = 8) -> torch.Tensor:
    """C(op) per name: params, FLOPs and memory-access cost (MAC) of the op at `width` channels on
    a size×size map, each normalised by its largest value over `names`, then summed (§3.5). MAC
    counts feature maps read and written plus weights, so skip costs more than none."""
    rows = []
    for name in names:
        params = flops = 0
        mac = 0 if name == "none" else 2 * width * size * size  # read the input, write the output
        for m in OPS[name](width, NORM).modules():
            if isinstance(m, nn.Conv2d):
                k = m.weight.numel()
                params += k
                flops += 2 * k * size * size
                mac += k + (m.in_channels + m.out_channels) * size * size
        rows.append((params, flops, mac))
    table = torch.tensor(rows, dtype=torch.float64)
    return (table / table.max(0).values.clamp(min=1)).sum(1).float()


def edge_latency(cost, feats: dict, pyramid: list, width: int, spec: SpaceSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted ms of every op on every link (L, 3, 3, |NECK_OPS|) and head edge (M, 14,
    |HEAD_OPS|) of a decoded network at `width`, each timed as it runs there by `cost(fn)` (the
    machine's table, latency_table.py): a link's 1×1 conv, its op, the resize to its level and its
    add into the level's sum, on `feats` (C3..C5 at the promoted input size); a head edge's op and
    its add into the node's sum on every level of `pyramid` (P3..P7 sizes), in both towers. none
    costs 0. The rest of a decoded network (backbone, P6/P7, the cells' input and output convs,
    the first add of every sum, post-processing) is the same for every genotype: a network's
    latency is that fixed part plus `edges_ms`."""
    n, device = len(LEVELS), feats[LEVELS[0]].device
    sizes = [tuple(feats[lv].shape[-2:]) for lv in LEVELS]
    gen = torch.Generator().manual_seed(0)
    wide = [torch.randn(1, width, *size, generator=gen).to(device) for size in sizes]
    neck = torch.zeros(spec.layers, n, n, len(NECK_OPS))
    for l in range(min(spec.layers, 2)):  # layers after the first read the same shapes
        xs = [feats[lv] for lv in LEVELS] if l == 0 else wide
        for i in range(n):
            node = torch.zeros(1, width, *sizes[i], device=device)
            for j in range(n):
                for k, name in enumerate(NECK_OPS[1:], start=1):
                    link = Link(xs[j].shape[1], width, (name,)).to(device).eval()
                    neck[l, i, j, k] = cost(lambda: node + resize_level(link(xs[j]), sizes[i]))
    if spec.layers > 2:
        neck[2:] = neck[1]
    per_op = torch.zeros(len(HEAD_OPS))  # every head edge runs on the width at every level
    for size in pyramid:
        x = torch.randn(1, width, *size, generator=gen).to(device)
        node = torch.zeros_like(x)
        for k, name in enumerate(HEAD_OPS[1:], start=1):
            edge = Edge((name,), width).to(device).eval()
            per_op[k] += 2 * cost(lambda: node + edge(x))  # the classification and the box tower
    return neck, per_op.expand(spec.head_cells, len(head_edges()), len(HEAD_OPS)).clone()


def edges_ms(genotype: Genotype, edge_ms: tuple[torch.Tensor, torch.Tensor]) -> float:
    """The sum of `edge_latency`'s tables over the ops a genotype chose."""
    neck, head = edge_ms
    return float(sum(neck[l, i, j, o] for l, layer in enumerate(genotype.neck) for i, row in enumerate(layer)
                     for j, o in enumerate(row)) +
                 sum(head[m, e, o] for m, cell in enumerate(genotype.head) for e, o in enumerate(cell)))


class Space(base.Space):
    """The Auto-FPN space bundled for strategies and trials."""

    module = sys.modules[__name__]


def from_spec(spec) -> Space:
    """The space a proxy spec sizes; it fuses P3..P5, which the spec's inputs must hold."""
    if not set(LEVELS) <= set(spec.inputs):  # (C2, in the default inputs, is not used)
        raise SpecError(f"field 'inputs': Auto-FPN fuses {list(LEVELS)} (P3..P5); {spec.inputs} lacks some")
    return Space(SpaceSpec(layers=spec.layers, head_cells=spec.head_cells, width=spec.width))
