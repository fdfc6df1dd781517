"""A sixth method, written the way a user adds one and kept outside nascli/: this one module (its
space, spaces/base.py's contract) and one `Method` entry, nothing else. Its space searches the depth
of the FCOS head's towers over a fixed FPN; random search proposes, the decoder trial scores, the
hand design is the control. tests/test_toy_method.py registers it and runs every command on it."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from nascli.errors import SpecError
from nascli.methods import decoder
from nascli.methods.base import FEATURES, Method
from nascli.spaces import base, fpn_fcos
from nascli.spaces.genotype_json import JsonGenotype, fields_of, read_fields
from nascli.strategies.random import RandomStrategy

SPACE = "toy-depth"
SEARCHES = base.DECODER
VERSION = 1
DEPTHS = (0, 1, 2, 3)


@dataclass(frozen=True)
class Genotype(JsonGenotype):
    depth: int = 1
    space: str = SPACE
    version: int = VERSION

    @classmethod
    def from_json(cls, text, source: str = "genotype") -> Genotype:
        data = read_fields(text, source, SPACE, VERSION)
        with fields_of(source):
            depth = int(data["depth"])
        if depth not in DEPTHS:
            raise SpecError(f"{source}: field 'depth' is {depth}, expected one of {DEPTHS}")
        return cls(depth=depth)

    def describe(self) -> str:
        return f"FPN + FCOS head, towers of {self.depth}"


@dataclass(frozen=True)
class SpaceSpec:
    width: int = 8


def decisions(spec) -> list[base.Decision]:
    return [base.Decision("depth", len(DEPTHS))]


def decode(choices, spec) -> Genotype:
    return Genotype(depth=DEPTHS[choices[0]])


def encode(genotype: Genotype, spec) -> list[int]:
    return [DEPTHS.index(genotype.depth)]


def is_valid(choices, spec) -> bool:
    return True


def build(genotype: Genotype, in_channels: dict, num_classes: int, width: int = 256, head_width: int | None = None):
    return fpn_fcos.build(fpn_fcos.Genotype(num_convs=genotype.depth), in_channels, num_classes, width, head_width)


class Space(base.Space):
    module = sys.modules[__name__]


def from_spec(spec) -> Space:
    return Space(SpaceSpec(width=spec.width))


METHOD = Method(name="toy", space=sys.modules[__name__], strategy=RandomStrategy, proxy="toy", reward="loss",
                cache=FEATURES, control=decoder.fcos_control, trial=decoder.trial)
