"""The SP-NAS serial backbone space (Jiang et al. 2020, §3.1; papers/sp-nas.md) and its
function-preserving morphisms.

Encoding: `BLOCK(stage,stage,...)`, BLOCK one of BB (basic), BNB (bottleneck), XB (ResNeXt
bottleneck, 32 groups; Table 2); one character per block, `1` a regular block and `d` a block that
doubles the base channels; every stage after the first opens with a stride-2 block. ResNet-18 is
`BB(11,d1,d1,d1)`, ResNet-50 `BNB(111,d111,d11111,d11)`. The released Vega code writes the same
network as `111-2111-211111-211` (stages split by `-`, `2` for a doubling block) with the block type
given apart; `to_vega` / `from_vega` convert.

Networks: the paper's stem (two 3×3 stride-2 convs, to half then all of the base channels) or,
to load torchvision ResNet weights, torchvision's (7×7 stride-2 conv, max-pool); blocks are
torchvision's BasicBlock / Bottleneck, named `layer{stage}.{block}` as in torchvision, so a
ResNet's state_dict loads as it is. Stage outputs are C2, C3, ... (strides 4, 8, ...).

Morphisms (§3.1), each returning a new network with the old weights carried over:
- `expand` inserts a block (stride 1, no channel change) whose last BatchNorm is zero: it adds
  zero to its residual, so the network's output is unchanged (IdMorph for residual blocks);
- `swap` moves a stage boundary by one block (the stride-2 moves to the neighbouring block):
  every weight is kept, except the projection shortcut of a regular (`1`) block that loses its
  stride (the new network's `dropped` lists it); a block that gains the stride without a
  projection gets a 1×1 stride-2 identity one. The output keeps its shape; its values move, as the
  paper says ("as much as possible").
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from ..errors import SpecError
from . import base
from .genotype_json import JsonGenotype, fields_of, read_fields

BLOCKS = {"BB": (BasicBlock, {}), "BNB": (Bottleneck, {}), "XB": (Bottleneck, {"groups": 32, "base_width": 4})}
MIN_STAGES, MAX_STAGES = 4, 7  # the paper's 5-7 counts the stem; ResNets have 4 body stages
MIN_BLOCKS, MAX_BLOCKS = 2, 60
_PAPER = re.compile(r"^(BB|BNB|XB)\(([1d]+(?:,[1d]+)*)\)$")


@dataclass(frozen=True)
class Serial:
    """A serial backbone: block type and one string of `1`/`d` per stage."""

    block: str
    stages: tuple

    def __str__(self) -> str:
        return f"{self.block}({','.join(self.stages)})"

    @property
    def codes(self) -> str:
        """Every block's code, in order."""
        return "".join(self.stages)

    def to_vega(self) -> str:
        return "-".join(stage.replace("d", "2") for stage in self.stages)

    @classmethod
    def from_vega(cls, code: str, block: str = "BB") -> Serial:
        if not re.fullmatch(r"[12]+(-[12]+)*", code or ""):
            raise SpecError(f"Vega encoding {code!r}: stages of 1/2 digits split by '-', e.g. 111-2111-211111-211")
        return cls.parse(f"{block}({code.replace('2', 'd').replace('-', ',')})")

    @classmethod
    def parse(cls, text: str) -> Serial:
        m = _PAPER.match(str(text).replace(" ", ""))
        if not m:
            raise SpecError(f"serial encoding {text!r}: BLOCK(stage,...) with BLOCK one of BB, BNB, XB and "
                            f"stages of 1/d, e.g. BB(11,d1,d1,d1)")
        serial = cls(m.group(1), tuple(m.group(2).split(",")))
        problem = serial.problem()
        if problem:
            raise SpecError(f"serial encoding {text!r}: {problem}")
        return serial

    def problem(self) -> str | None:
        if not MIN_STAGES <= len(self.stages) <= MAX_STAGES:
            return f"{len(self.stages)} stages, expected {MIN_STAGES}..{MAX_STAGES}"
        if not MIN_BLOCKS <= len(self.codes) <= MAX_BLOCKS:
            return f"{len(self.codes)} blocks, expected {MIN_BLOCKS}..{MAX_BLOCKS}"
        return None

    def stage_of(self) -> list[tuple[int, int]]:
        """(stage, index in stage) of every block."""
        return [(s, k) for s, stage in enumerate(self.stages) for k in range(len(stage))]


RESNET18 = Serial("BB", ("11", "d1", "d1", "d1"))
RESNET50 = Serial("BNB", ("111", "d111", "d11111", "d11"))


class SerialNet(nn.Module):
    """The backbone a `Serial` describes; forward returns {"c2": ..., "c3": ..., ...}."""

    def __init__(self, serial: Serial, base_channels: int = 64, stem: str = "two-conv"):
        super().__init__()
        if stem not in ("two-conv", "resnet"):
            raise SpecError(f"stem {stem!r}: two-conv (the paper's) or resnet (torchvision's, for its weights)")
        self.serial, self.base_channels, self.stem_kind = serial, base_channels, stem
        if stem == "resnet":  # torchvision's names, so that its state_dict loads as it is
            self.conv1 = nn.Conv2d(3, base_channels, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(base_channels)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        else:
            half = base_channels // 2
            self.stem = nn.Sequential(nn.Conv2d(3, half, 3, 2, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
                                      nn.Conv2d(half, base_channels, 3, 2, 1, bias=False),
                                      nn.BatchNorm2d(base_channels), nn.ReLU(inplace=True))
        block, extra = BLOCKS[serial.block]
        inplanes, planes, widths = base_channels, base_channels, []
        for s, stage in enumerate(serial.stages):
            layer = []
            for k, code in enumerate(stage):
                planes *= 2 if code == "d" else 1
                stride = 2 if s > 0 and k == 0 else 1
                out = planes * block.expansion
                down = None
                if stride != 1 or inplanes != out:
                    down = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))
                layer.append(block(inplanes, planes, stride, down, **extra))
                inplanes = out
            self.add_module(f"layer{s + 1}", nn.Sequential(*layer))
            widths.append(inplanes)
        self.out_channels = {f"c{s + 2}": w for s, w in enumerate(widths)}

    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{s + 1}") for s in range(len(self.serial.stages))]

    def run_stem(self, x):
        return self.stem(x) if self.stem_kind == "two-conv" else self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward(self, x):
        x = self.run_stem(x)
        out = {}
        for s, layer in enumerate(self.stages()):
            x = layer(x)
            out[f"c{s + 2}"] = x
        return out


def _blocks(net: SerialNet) -> list[nn.Module]:
    return [b for layer in net.stages() for b in layer]


def _carry(old: SerialNet, new: SerialNet, mapping: dict) -> list[str]:
    """Copies the stem and, for each new block index, the old block `mapping[index]`'s weights;
    a block that gained a projection shortcut gets an identity one. Returns the old weights the
    new network has no place for (a regular block that lost its stride drops its projection)."""
    new.load_state_dict({k: v for k, v in old.state_dict().items() if not k.startswith("layer")}, strict=False)
    new_blocks, old_blocks, dropped = _blocks(new), _blocks(old), []
    for i, j in mapping.items():
        dst, src = new_blocks[i], old_blocks[j]
        if dst.downsample is not None and src.downsample is None:
            channels = dst.downsample[0].out_channels
            with torch.no_grad():
                dst.downsample[0].weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))
        state = dst.state_dict()
        for key, value in src.state_dict().items():
            if key in state:
                state[key] = value
            else:
                dropped.append(f"block {j}: {key}")
        dst.load_state_dict(state)
    return dropped


def expand(net: SerialNet, position: int) -> SerialNet:
    """A copy of `net` with an identity-initialised block inserted right after block `position`
    (1..number of blocks), in that block's stage: it becomes block `position` counting from 0."""
    blocks = len(net.serial.codes)
    if not 1 <= position <= blocks:
        raise SpecError(f"expand at {position}: a block position in 1..{blocks}")
    new = SerialNet(morphed_serial(net.serial, [("expand", position)]), net.base_channels, net.stem_kind)
    _carry(net, new, {i: i - (i > position) for i in range(blocks + 1) if i != position})
    new.inserted = position  # the new block's index
    inserted = _blocks(new)[position]
    last_norm = inserted.bn3 if hasattr(inserted, "bn3") else inserted.bn2
    nn.init.zeros_(last_norm.weight)
    nn.init.zeros_(last_norm.bias)
    return new


def swap(net: SerialNet, stage: int, later: bool) -> SerialNet:
    """A copy of `net` whose stage `stage` (2..) opens one block later (its stride-2 moves to its
    second block, the first joins the stage before) or, `later=False`, one block earlier."""
    serial = net.serial
    if not 2 <= stage <= len(serial.stages):
        raise SpecError(f"swap stage {stage}: a stage in 2..{len(serial.stages)}")
    if later and len(serial.stages[stage - 1]) < 2:
        raise SpecError(f"swap stage {stage} later: the stage has one block; it would vanish")
    if not later and len(serial.stages[stage - 2]) < 2:
        raise SpecError(f"swap stage {stage} earlier: stage {stage - 1} has one block; it would vanish")
    new = SerialNet(morphed_serial(serial, [("swap", stage, later)]), net.base_channels, net.stem_kind)
    new.dropped = _carry(net, new, {i: i for i in range(len(_blocks(new)))})
    return new


# ------------------------------------------------------------------ the parallel level (§3.2)


class ParallelNet(nn.Module):
    """A SerialNet with `counts[l]` parallel subnets at stage l (0..K each; the paper's K = 3),
    each a copy of the stage with its weights. With x_l^0 = s_l(x_{l-1}^0) (the serial path),
    subnet k of stage l computes x_l^k = p_l^k(x_{l-1}^k + up(x_l^(k-1))), `up` a 1×1 conv and an
    upsampling to the previous stage's channels and size (x_{l-1}^k is the previous stage's last
    output when it has fewer subnets; the stem's output before stage 1). The stage's output, C_l,
    is its last x_l^k. All-zero counts give the serial network itself."""

    def __init__(self, serial_net: SerialNet, counts):
        super().__init__()
        import copy

        counts = tuple(int(c) for c in counts)
        stages = serial_net.stages()
        if len(counts) != len(stages) or any(c < 0 for c in counts):
            raise SpecError(f"parallel level {counts}: one count >= 0 per stage ({len(stages)})")
        self.serial_net, self.counts = serial_net, counts
        widths = [serial_net.base_channels] + list(serial_net.out_channels.values())
        self.subnets = nn.ModuleList(nn.ModuleList(copy.deepcopy(stage) for _ in range(c))
                                     for stage, c in zip(stages, counts))
        self.ups = nn.ModuleList(nn.ModuleList(nn.Conv2d(widths[l + 1], widths[l], 1) for _ in range(c))
                                 for l, c in enumerate(counts))
        self.out_channels = serial_net.out_channels

    def forward(self, x):
        net = self.serial_net
        previous, out = [net.run_stem(x)], {}
        for l, stage in enumerate(net.stages()):
            outputs = [stage(previous[0])]
            for k, (subnet, up) in enumerate(zip(self.subnets[l], self.ups[l]), start=1):
                below = previous[min(k, len(previous) - 1)]
                lifted = nn.functional.interpolate(up(outputs[-1]), size=below.shape[-2:], mode="nearest")
                outputs.append(subnet(below + lifted))
            out[f"c{l + 2}"] = outputs[-1]
            previous = outputs
        return out


def sample_parallel(serial_net: SerialNet, rng, max_subnets: int = 3, size: int = 224) -> tuple:
    """A random parallel level: 1..stages additions, each to a stage drawn with probability
    proportional to the inverse of its subnet's FLOPs (on a size×size image), up to `max_subnets`
    per stage (§3.2: cheap subnets are added more often)."""
    from torch.utils.flop_counter import FlopCounterMode

    stages = serial_net.stages()
    flops = []
    x = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        x = serial_net.run_stem(x)
        for stage in stages:
            counter = FlopCounterMode(display=False)
            with counter:
                y = stage(x)
            flops.append(counter.get_total_flops())
            x = y
    counts = [0] * len(stages)
    for _ in range(int(rng.integers(1, len(stages) + 1))):
        open_ = [l for l in range(len(stages)) if counts[l] < max_subnets]
        if not open_:
            break
        weights = [1 / max(1, flops[l]) for l in open_]
        counts[int(rng.choice(open_, p=[w / sum(weights) for w in weights]))] += 1
    return tuple(counts)


# ------------------------------------------------------------------ genotypes and proposals

SPACE, VERSION = "sp-nas", 1
SEARCHES = base.BACKBONE
STARTS = {"resnet18": RESNET18, "resnet34": Serial("BB", ("111", "d111", "d11111", "d11")), "resnet50": RESNET50}


@dataclass(frozen=True)
class Genotype(JsonGenotype):
    """An SP-NAS backbone and how the search reached its weights. The architecture: `serial` (the
    paper's encoding), `parallel` (subnets per stage; () for none), the stem and base channels.
    The lineage (morphisms inherit weights, so a candidate is trained from its parent's): `tag`
    names the weights this candidate's training leaves, `parent` the weights it starts from ("" =
    the start network's), `morphs` the steps from the parent's architecture to this one:
    ["swap", stage, later], ["expand", position], ["parallel", counts], ["reignite"]."""

    serial: str
    parallel: tuple = ()
    stem: str = "resnet"
    base_channels: int = 64
    tag: str = "start"
    parent: str = ""
    morphs: tuple = ()
    space: str = SPACE
    version: int = VERSION

    @classmethod
    def from_json(cls, text, source: str = "genotype") -> Genotype:
        data = read_fields(text, source, SPACE, VERSION)
        try:
            serial = Serial.parse(data.get("serial"))
        except SpecError as e:
            raise SpecError(f"{source}: field 'serial': {e}") from None
        with fields_of(source):
            g = cls(serial=str(serial), parallel=tuple(int(c) for c in data.get("parallel", ())),
                    stem=data.get("stem", "resnet"), base_channels=int(data.get("base_channels", 64)),
                    tag=str(data.get("tag", "start")), parent=str(data.get("parent", "")),
                    morphs=tuple(tuple(step) for step in data.get("morphs", ())))
        problem = g.problem()
        if problem:
            raise SpecError(f"{source}: {problem}")
        return g

    def problem(self) -> str | None:
        stages = len(Serial.parse(self.serial).stages)
        if self.parallel and (len(self.parallel) != stages or not all(0 <= c <= MAX_SUBNETS for c in self.parallel)):
            return f"field 'parallel' {list(self.parallel)}: one count in 0..{MAX_SUBNETS} per stage ({stages})"
        if self.stem not in ("two-conv", "resnet"):
            return f"field 'stem' {self.stem!r}: two-conv or resnet"
        if not 8 <= self.base_channels <= 512:
            return f"field 'base_channels' {self.base_channels}: expected 8..512"
        if not re.fullmatch(r"[\w.-]{1,64}", self.tag) or (self.parent and not re.fullmatch(r"[\w.-]{1,64}", self.parent)):
            return "fields 'tag' / 'parent': names of letters, digits, '.', '-', '_'"
        for step in self.morphs:
            if not step or step[0] not in MORPHS or len(step) != MORPHS[step[0]]:
                return (f"field 'morphs': step {list(step)} is not one of [swap, STAGE, LATER], [expand, POSITION], "
                        f"[parallel, COUNTS], [reignite]")
        return None

    def describe(self) -> str:
        """The architecture alone, as the paper writes it (and its parallel level)."""
        return self.serial + (f" parallel {tuple(self.parallel)}" if any(self.parallel) else "")


MORPHS = {"swap": 3, "expand": 2, "parallel": 2, "reignite": 1}  # kind: length of its step
MAX_SUBNETS = 3  # the paper's K


def build_backbone(genotype: Genotype) -> nn.Module:
    """The (untrained) backbone a genotype describes: SerialNet, or ParallelNet with subnets."""
    net = SerialNet(Serial.parse(genotype.serial), genotype.base_channels, genotype.stem)
    return ParallelNet(net, genotype.parallel) if any(genotype.parallel) else net


def apply_morph(net: nn.Module, step) -> nn.Module:
    """One lineage step on a trained backbone, weights carried over (function-preserving except a
    swap, which keeps every weight but moves the output; see the module docstring)."""
    kind = step[0]
    if kind == "reignite":
        return net
    if isinstance(net, ParallelNet):
        raise SpecError(f"morph {list(step)}: only the serial network is morphed; the parallel level comes last")
    if kind == "swap":
        return swap(net, int(step[1]), bool(step[2]))
    if kind == "expand":
        return expand(net, int(step[1]))
    if kind == "parallel":
        return ParallelNet(net, step[1])
    raise SpecError(f"morph {list(step)}: one of {', '.join(MORPHS)}")


def possible_morphs(serial: Serial) -> dict:
    """Every single swap and expand that keeps `serial` within the space's bounds."""
    swaps = []
    for stage in range(2, len(serial.stages) + 1):
        if len(serial.stages[stage - 1]) >= 2:
            swaps.append(("swap", stage, True))
        if len(serial.stages[stage - 2]) >= 2:
            swaps.append(("swap", stage, False))
    expands = [("expand", p) for p in range(1, len(serial.codes) + 1)] if len(serial.codes) < MAX_BLOCKS else []
    return {"swap": swaps, "expand": expands}


def morphed_serial(serial: Serial, steps) -> Serial:
    """The encoding after swap / expand steps (no network built)."""
    stages = list(serial.stages)
    for step in steps:
        if step[0] == "expand":
            s, k = Serial(serial.block, tuple(stages)).stage_of()[step[1] - 1]
            stages[s] = stages[s][:k + 1] + "1" + stages[s][k + 1:]
        elif step[0] == "swap":
            i = step[1] - 1
            if step[2]:
                stages[i - 1], stages[i] = stages[i - 1] + stages[i][0], stages[i][1:]
            else:
                stages[i - 1], stages[i] = stages[i - 1][:-1], stages[i - 1][-1] + stages[i]
    return Serial(serial.block, tuple(stages))


def propose(serial: Serial, rng) -> tuple:
    """One random modification (§3.1, Algorithm 1): a swap, an expand, or a swap then an expand,
    each kind equally likely among those possible."""
    first = possible_morphs(serial)
    kinds = [k for k in ("swap", "expand", "both") if k != "both" and first[k] or
             k == "both" and first["swap"] and first["expand"]]
    kind = kinds[int(rng.integers(len(kinds)))]
    steps = []
    if kind in ("swap", "both"):
        steps.append(first["swap"][int(rng.integers(len(first["swap"])))])
    if kind in ("expand", "both"):
        expands = possible_morphs(morphed_serial(serial, steps))["expand"]
        steps.append(expands[int(rng.integers(len(expands)))])
    return tuple(steps)


class Space(base.Space):
    """The sp-nas space as a search needs it: the genotype class (its strategy proposes
    morphisms itself; there is no decision sequence)."""

    module = sys.modules[__name__]


def from_spec(spec) -> Space:
    return Space(spec)


def build(genotype: Genotype, in_channels: dict, num_classes: int, width: int, head_width: int | None = None):
    """A backbone genotype's decoder: the family's fixed FPN + FCOS head (the backbone is what is searched)."""
    from . import fpn_fcos

    return fpn_fcos.build(fpn_fcos.Genotype(), in_channels, num_classes, width, head_width)


#: SPNet-VOC, the paper's Table 7: six stages, one parallel subnet on the last. It grew from an
#: ImageNet ResNet-18 by morphisms, which never touch the stem: so it has ResNet's stem.
SPNET_VOC = Genotype(serial="BB(11d,1111,d11111111,d111,1,1111)", parallel=(0, 0, 0, 0, 0, 1), stem="resnet")
