"""The contract every search space keeps, so strategies, trials and retraining treat them alike.

A space module (nas_fcos, nas_fpn, auto_fpn, detnas, spnas) defines:
- `SPACE`, its tag (stored in every genotype's json), and `SEARCHES`: "decoder" (the FPN + head
  over a fixed backbone) or "backbone" (the backbone under the family's fixed FPN + FCOS head);
- `Genotype` (a frozen dataclass with `from_json` / `to_json` / `describe`);
- `from_spec(proxy_spec) -> Space`: the space sized by a proxy spec;
- `build(genotype, in_channels, num_classes, width, head_width)`: the decoder it describes;
- backbone spaces also `build_backbone(genotype)`;
- spaces searched by decision sequences: `SpaceSpec`, `decisions`, `decode`, `encode`, `is_valid`,
  bundled by a `Space` subclass naming its module.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

DECODER, BACKBONE = "decoder", "backbone"


@dataclass(frozen=True)
class Decision:
    """One categorical choice of an architecture: its name and how many options it has."""

    name: str
    options: int


class Space:
    """A space bundled for strategies and trials: they see only decisions and genotypes. A
    subclass sets `module` (its space module); everything else comes from that module."""

    module = None

    def __init__(self, spec=None):
        self.spec = spec if spec is not None or not hasattr(self.module, "SpaceSpec") else self.module.SpaceSpec()

    @property
    def name(self) -> str:
        return self.module.SPACE

    @property
    def genotype_class(self):
        return self.module.Genotype

    @property
    def searches(self) -> str:
        return self.module.SEARCHES

    def decisions(self) -> list[Decision]:
        return self.module.decisions(self.spec)

    def decode(self, choices):
        return self.module.decode(choices, self.spec)

    def encode(self, genotype) -> list[int]:
        return self.module.encode(genotype, self.spec)

    def is_valid(self, choices) -> bool:
        return self.module.is_valid(choices, self.spec)

    def build(self, genotype, in_channels: dict, num_classes: int):
        return self.module.build(genotype, in_channels, num_classes, self.spec.width)


def cost(decoder: nn.Module, feature_shapes: dict) -> dict:
    """Params and FLOPs of a built decoder for features of the given shapes (N=1); deformable
    convolutions, which FlopCounterMode cannot see, are counted analytically, and dilated ones with
    their whole kernel (`nominal_taps`). One measurement
    for every decoder space."""
    from torch.utils.flop_counter import FlopCounterMode

    from .ops import DeformConv, deform_conv_flops, nominal_taps

    extra, hooks = [0], []
    for m in decoder.modules():
        if isinstance(m, DeformConv):
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out: extra.__setitem__(0, extra[0] + deform_conv_flops(mod, inp[0].shape))))
    feats = {lv: torch.zeros(1, *shape) for lv, shape in feature_shapes.items()}
    counter = FlopCounterMode(display=False)
    was_training = decoder.training
    decoder.eval()
    try:
        with counter, torch.no_grad(), nominal_taps():
            decoder(feats)
    finally:
        decoder.train(was_training)
        for h in hooks:
            h.remove()
    return {"params": sum(p.numel() for p in decoder.parameters()),
            "flops": int(counter.get_total_flops()) + extra[0]}
