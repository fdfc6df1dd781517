"""WHAT can be searched: one module per published search space, each keeping the contract of
spaces/base.py (its tag, what it searches - decoder or backbone -, its genotype, `from_spec`,
`build`), and the hand-designed decoders the controls use (fpn_fcos, fpn_retinanet).

`load_genotype`, `build_decoder`, `build_backbone` and `space_for` dispatch on a `space` tag, so
retraining, evaluation and the trials handle every space's genotypes alike.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import SpecError, unknown_name
from . import auto_fpn, detnas, fpn_fcos, fpn_retinanet, nas_fcos, nas_fpn, spnas
from .base import BACKBONE

#: space tag -> module with Genotype.from_json and build(genotype, in_channels, num_classes, width, head_width)
SPACES = {nas_fcos.SPACE: nas_fcos, fpn_fcos.SPACE: fpn_fcos, nas_fpn.SPACE: nas_fpn,
          fpn_retinanet.SPACE: fpn_retinanet, auto_fpn.SPACE: auto_fpn, spnas.SPACE: spnas,
          detnas.SPACE: detnas}


def load_genotype(value, source: str = "genotype"):
    """A genotype from its JSON text, a dict, a `.json` file path, or `zoo:NAME`."""
    if isinstance(value, (str, Path)) and str(value).startswith("zoo:"):
        from . import zoo

        return zoo.get(str(value))
    if isinstance(value, Path) or (isinstance(value, str) and not value.lstrip().startswith("{")):
        path = Path(value)
        if not path.is_file():
            raise SpecError(f"{path}: genotype file not found (give a .json file or zoo:NAME)")
        try:
            source, value = str(path), path.read_text()
        except UnicodeDecodeError:
            raise SpecError(f"{path}: not a text JSON file") from None
    try:
        data = json.loads(value) if isinstance(value, str) else value
    except (ValueError, RecursionError) as e:
        raise SpecError(f"{source}: malformed JSON ({getattr(e, 'msg', type(e).__name__)})") from None
    space = data.get("space") if isinstance(data, dict) else None
    if space not in SPACES:
        raise SpecError(f"{source}: field 'space' is {space!r}, expected one of {sorted(SPACES)}")
    return SPACES[space].Genotype.from_json(data, source)


def build_decoder(genotype, in_channels: dict, num_classes: int, width: int, head_width: int | None = None):
    """The decoder (FPN + head) a genotype describes, at `width` (head at `head_width` if given)."""
    if genotype.space not in SPACES:
        raise unknown_name("space", genotype.space, SPACES)
    return SPACES[genotype.space].build(genotype, in_channels, num_classes, width, head_width)


def space_for(spec):
    """The space a proxy spec searches, sized by it."""
    if spec.space not in SPACES or not hasattr(SPACES[spec.space], "from_spec"):
        raise unknown_name("space", spec.space, [k for k, m in SPACES.items() if hasattr(m, "from_spec")])
    return SPACES[spec.space].from_spec(spec)


def searches_backbone(genotype) -> bool:
    """Whether the genotype describes a backbone (under the family's fixed FPN + FCOS head)."""
    return SPACES[genotype.space].SEARCHES == BACKBONE


def build_backbone(genotype):
    """The backbone a backbone genotype describes (a module with `out_channels`)."""
    return SPACES[genotype.space].build_backbone(genotype)
