"""The hand-designed RetinaNet decoder (Lin et al. 2017): FPN (P3..P7, P6/P7 from P5) + RetinaNet
head, as a one-point "space". It is the control of every NAS-FPN search: the same head and
anchors as the searched pyramids, only the pyramid is hand-designed."""

from __future__ import annotations

from dataclasses import dataclass

from . import fpn_fcos
from .base import DECODER

SPACE = "fpn-retinanet"
SEARCHES = DECODER
VERSION = fpn_fcos.VERSION


@dataclass(frozen=True)
class Genotype(fpn_fcos.Genotype):
    num_convs: int = 4  # RetinaNet head tower depth
    space: str = SPACE


def build(genotype: Genotype, in_channels: dict, num_classes: int, width: int = 256,
          head_width: int | None = None):
    """FPN + RetinaNet head (9 anchors, `num_convs`-deep towers with BN as NAS-FPN's), at `width`."""
    from ..errors import SpecError
    from ..models.fpn import FPN
    from ..models.retinanet import RetinaDecoder, RetinaNetHead

    if head_width not in (None, width):
        raise SpecError(f"--head-width {head_width}: the RetinaNet head runs at the pyramid width ({width})")
    pyramid = FPN([in_channels[k] for k in ("c3", "c4", "c5")], width)
    return RetinaDecoder(pyramid, RetinaNetHead(width, num_classes, genotype.num_convs), num_classes)
