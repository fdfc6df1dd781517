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
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from ..errors import SpecError

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
    """A copy of `net` with an identity-initialised block inserted before block `position`
    (1..number of blocks; not before a stage's first block, whose stride it would change)."""
    serial = net.serial
    where = serial.stage_of()
    if not 1 <= position <= len(where):
        raise SpecError(f"expand at {position}: a block position in 1..{len(where)}")
    s, k = where[position - 1] if position < len(where) else (where[-1][0], where[-1][1] + 1)
    if k == 0:
        s, k = s - 1, len(serial.stages[s - 1])  # before a stage's stride-2 block: end of the stage before
    stages = list(serial.stages)
    stages[s] = stages[s][:k] + "1" + stages[s][k:]
    new = SerialNet(Serial(serial.block, tuple(stages)), net.base_channels, net.stem_kind)
    flat = sum(len(st) for st in stages[:s]) + k  # the new block's index
    _carry(net, new, {i: i - (i > flat) for i in range(len(_blocks(new))) if i != flat})
    new.inserted = flat
    inserted = _blocks(new)[flat]
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
    stages = list(serial.stages)
    before, this = stages[stage - 2], stages[stage - 1]
    if later:
        if len(this) < 2:
            raise SpecError(f"swap stage {stage} later: the stage has one block; it would vanish")
        stages[stage - 2], stages[stage - 1] = before + this[0], this[1:]
    else:
        if len(before) < 2:
            raise SpecError(f"swap stage {stage} earlier: stage {stage - 1} has one block; it would vanish")
        stages[stage - 2], stages[stage - 1] = before[:-1], before[-1] + this
    new = SerialNet(Serial(serial.block, tuple(stages)), net.base_channels, net.stem_kind)
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
