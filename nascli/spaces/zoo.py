"""Published architectures as named genotypes, so a user can retrain them on their data
(`--arch zoo:NAME`). Facts from the authors' released code (see DESIGN.md, zoo section)."""

from __future__ import annotations

from ..errors import unknown_name
from . import fpn_fcos, nas_fcos

#: NAS-FCOS, released R-50 config: FPN blocks over the pool C2..C5 (nodes 0..3); the released
#: head is the sequential dconv, conv3, dconv, conv1, skip, skip, fully shared across levels.
NAS_FCOS = nas_fcos.Genotype(
    fpn=((3, 3, 4, 4, 1), (3, 3, 4, 4, 1), (4, 3, 4, 3, 1), (1, 3, 4, 3, 1),
         (5, 3, 4, 4, 1), (4, 7, 4, 4, 1), (7, 2, 4, 4, 1)),
    head_sequence=(5, 1, 5, 0, 4, 4),
    head_share=(0, 0, 0, 0, 0),
)

#: The hand-designed FPN + FCOS head (Tian et al. 2019), the reference every search is compared to.
FPN_FCOS = fpn_fcos.Genotype(num_convs=4)

ZOO = {"nas-fcos": NAS_FCOS, "fpn-fcos": FPN_FCOS}


def get(name: str):
    """A zoo genotype by name (`zoo:` prefix allowed)."""
    name = name.removeprefix("zoo:")
    if name not in ZOO:
        raise unknown_name("zoo architecture", name, ZOO)
    return ZOO[name]
