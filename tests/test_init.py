"""Initialisation fair to every op: each conv followed by a normalisation starts with the weight
norm of the hand design's 3×3 conv at that width, so SGD's effective step (lr / ||w||²) is the same."""

import math

import pytest
import torch
from torch import nn
from torchvision.ops import DeformConv2d

from nascli.models.heads import FCOSHead, init_head_convs
from nascli.spaces import zoo
from nascli.spaces.nas_fcos import build as build_nas_fcos
from nascli.spaces.ops import OPS

WIDTH = 64


def filter_norms(module: nn.Module) -> list[float]:
    """Mean L2 norm of one output filter, for every conv in `module` an initialisation touches."""
    out = []
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, DeformConv2d)) and not getattr(m, "keep_init", False):
            out.append(m.weight.detach().flatten(1).norm(dim=1).mean().item())
    return out


def reference_norm(norm: str) -> float:
    """The plain 3×3 conv's filter norm under the same initialisation."""
    torch.manual_seed(0)
    conv = OPS["conv3x3"](WIDTH, norm)
    if norm == "gn":
        init_head_convs(conv, WIDTH)
    return filter_norms(conv)[0]


@pytest.mark.parametrize("norm", ["gn", "bn"])  # heads (FCOS init) and searched FPN cells (torch's default)
@pytest.mark.parametrize("name", sorted(n for n in OPS if n not in ("none", "skip")))
def test_every_op_starts_with_the_weight_norm_of_a_plain_3x3(name, norm):
    torch.manual_seed(0)
    op = OPS[name](WIDTH, norm)
    if norm == "gn":
        init_head_convs(op, WIDTH)
    norms = filter_norms(op)
    assert norms, f"{name} has no conv to initialise"
    ref = reference_norm(norm)
    for n in norms:  # a depthwise filter under the old N(0, 0.01) was 8x smaller: 0.03 vs 0.24
        assert n == pytest.approx(ref, rel=0.15), f"{name}: filter norm {n:.4f} vs a plain 3x3's {ref:.4f}"


def test_plain_3x3_keeps_fcos_std_and_the_head_keeps_its_priors():
    torch.manual_seed(0)
    head = FCOSHead(WIDTH, num_classes=3, num_convs=2)
    conv = head.towers.cls_tower[0]
    assert conv.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert head.cls_logits.bias[0].item() == pytest.approx(-math.log(99))
    assert torch.all(head.box_pred.bias == 1.0)


def test_searched_head_convs_match_the_hand_designs_norm():
    """The released NAS-FCOS head (deformable, conv1x1, conv3x3) and a separable-op head alike."""
    torch.manual_seed(0)
    channels = {"c2": 16, "c3": 32, "c4": 64, "c5": 128}
    decoder = build_nas_fcos(zoo.NAS_FCOS, channels, num_classes=3, width=WIDTH)
    ref = 0.01 * math.sqrt(9 * WIDTH)
    for n in filter_norms(decoder.head.towers):
        assert n == pytest.approx(ref, rel=0.15)
