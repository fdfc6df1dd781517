"""The hand-designed decoder (FPN + FCOS head) as a one-point "space", so that it is a genotype
like any searched one: the zoo's reference row, exported and retrained the same way."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SpecError
from .base import DECODER
from .genotype_json import JsonGenotype, fields_of, read_fields

SPACE = "fpn-fcos"
SEARCHES = DECODER
VERSION = 1


@dataclass(frozen=True)
class Genotype(JsonGenotype):
    num_convs: int = 4  # FCOS head tower depth
    space: str = SPACE
    version: int = VERSION

    @classmethod
    def from_json(cls, text, source: str = "genotype") -> Genotype:
        space = cls.__dataclass_fields__["space"].default  # a subclass's own tag (fpn-retinanet)
        data = read_fields(text, source, space, VERSION)
        with fields_of(source):
            num_convs = int(data.get("num_convs", 4))
        if not 0 <= num_convs <= 8:
            raise SpecError(f"{source}: field 'num_convs' is {num_convs}, expected 0..8")
        return cls(num_convs=num_convs)


def build(genotype: Genotype, in_channels: dict, num_classes: int, width: int = 256,
          head_width: int | None = None):
    """FPN at `width` + FCOS head with `num_convs` tower convs at `head_width` (default: width)."""
    from ..models.detector import STRIDES, FCOSDecoder
    from ..models.fpn import FPN, Widen
    from ..models.heads import FCOSHead

    head_width = head_width or width
    if head_width == width:
        return FCOSDecoder(in_channels, num_classes, width=width, num_convs=genotype.num_convs)
    fpn = Widen(FPN([in_channels[k] for k in ("c3", "c4", "c5")], width), width, head_width)
    return FCOSDecoder(in_channels, num_classes, fpn=fpn,
                       head=FCOSHead(head_width, num_classes, genotype.num_convs, STRIDES))
