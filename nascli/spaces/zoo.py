"""Published architectures as named genotypes, so a user can retrain them on their data
(`--arch zoo:NAME`). Facts from the authors' released code (see docs/design.md, the zoo)."""

from __future__ import annotations

from ..errors import unknown_name
from . import detnas, fpn_fcos, fpn_retinanet, nas_fcos, nas_fpn, spnas

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

#: NAS-FPN's published 7-cell pyramid (paper Fig. 6; mmdetection's NASFPN wiring), 7 stages as
#: in "R-50 (7 @ 256)". Candidates 0..4 are P3..P7; P5 and P7 join cells 4 and 5 by the
#: unused-candidate rule, which is mmdetection's gp_43_5 + sum_55_5 and gp_54_7 + sum_77_7.
NAS_FPN = nas_fpn.Genotype(
    cells=((3, 1, 4, 1),    # gp(P6, P4) -> P4_1 (node 5)
           (5, 1, 4, 0),    # sum(P4_1, P4) -> P4_2 (node 6)
           (6, 0, 3, 0),    # sum(P4_2, P3) -> P3' (output)
           (7, 6, 4, 0),    # sum(P3', P4_2) -> P4' (output)
           (8, 7, 5, 1),    # gp(P4', P3') at P5, + unused P5 -> P5' (output)
           (9, 6, 7, 1),    # gp(P5', P4_2) at P7, + unused P7 -> P7' (output)
           (10, 9, 6, 1)),  # gp(P7', P5') -> P6' (output)
    repeats=7,
)

#: The hand-designed FPN + RetinaNet head: the reference NAS-FPN searches are compared to.
FPN_RETINANET = fpn_retinanet.Genotype(num_convs=4)

ZOO = {"nas-fcos": NAS_FCOS, "fpn-fcos": FPN_FCOS, "nas-fpn": NAS_FPN, "fpn-retinanet": FPN_RETINANET,
       "spnet-voc": spnas.SPNET_VOC, "detnasnet-fpn-300m": detnas.FPN_300M,
       "detnasnet-retinanet-300m": detnas.RETINANET_300M, "detnasnet-fpn-1.3g": detnas.FPN_1_3G,
       "shufflenetv2-20": detnas.SHUFFLENETV2_20, "shufflenetv2-40": detnas.SHUFFLENETV2_40}


def get(name: str):
    """A zoo genotype by name (`zoo:` prefix allowed)."""
    name = name.removeprefix("zoo:")
    if name not in ZOO:
        raise unknown_name("zoo architecture", name, ZOO)
    return ZOO[name]
