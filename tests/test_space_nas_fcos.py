"""The NAS-FCOS search space: decisions, genotypes, builder, cost, and the published decoder."""

import contextlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nascli.errors import SpecError
from nascli.spaces import nas_fcos as S
from nascli.spaces import zoo
from nascli.spaces.ops import DeformConv, PairwiseMix, ReachConv2d, nominal_taps

IN_CHANNELS = {"c2": 64, "c3": 128, "c4": 256, "c5": 512}


def features(n=2, crop=64):
    return {lv: torch.randn(n, c, crop // s, crop // s)
            for (lv, c), s in zip(IN_CHANNELS.items(), (4, 8, 16, 32))}


def sample(rng, spec):
    while True:
        choices = [int(rng.integers(d.options)) for d in S.decisions(spec)]
        if S.is_valid(choices, spec):
            return choices


def test_decision_counts_follow_the_paper():
    ds = S.decisions(S.SpaceSpec())
    assert len(ds) == 7 * 5 + 1 + 5 * 5 + 5
    assert [d.options for d in ds[:5]] == [4, 4, 5, 5, 2]          # block 1 reads C2..C5
    assert [d.options for d in ds[30:32]] == [10, 10]               # block 7: 4 inputs + 6 outputs
    assert ds[35].name == "head.op0" and [d.options for d in ds[36:38]] == [2, 2]  # {p, o0}
    assert [d.options for d in ds[56:58]] == [14, 14]               # 2 + 3·4 head pool nodes
    assert all(d.options == 7 for d in ds[-5:])                     # share index 0..6


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_every_sampled_genotype_builds_and_predicts_every_location(seed):
    spec = S.SpaceSpec(width=8, fpn_ops=("sep3x3", "sep3x3_d3", "sep5x5_d6", "skip"),
                       head_ops=("sep3x3", "sep3x3_d3", "sep5x5_d6", "skip"))
    choices = sample(np.random.default_rng(seed), spec)
    g = S.decode(choices, spec)
    assert S.encode(g, spec) == choices
    assert S.Genotype.from_json(g.to_json()) == g
    decoder = S.build(g, IN_CHANNELS, num_classes=3, width=8)
    out = decoder(features(crop=64))
    assert out["feature_sizes"] == [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    assert out["cls_logits"].shape == (2, 64 + 16 + 4 + 1 + 1, 3)
    assert torch.isfinite(out["box_ltrb"]).all()


def test_deformable_ops_build_and_backpropagate():
    decoder = S.build(zoo.NAS_FCOS, IN_CHANNELS, num_classes=2, width=8)
    out = decoder(features(crop=64))
    (out["cls_logits"].sum() + out["box_ltrb"].sum() + out["ctr_logits"].sum()).backward()
    deform = [m for m in decoder.modules() if isinstance(m, DeformConv)]
    assert len(deform) == 2 * 7 - 2 + 2 * 2  # FPN: 12 deformable ops; head: 2 per tower
    for m in deform:
        assert m.conv.weight.grad is not None and m.conv.weight.grad.abs().sum() > 0
        assert m.conv_offset_mask.weight.grad is not None  # offsets and masks are learned too


def test_dangling_rule_and_validity():
    g = zoo.NAS_FCOS
    # released wiring (mmdetection NASFCOS_FPN): P3, P4, P5 = nodes 10, 9, 8; node 6 joins all three
    assert S.dangling(g) == [6, 8, 9, 10]
    fpn = S.NasFcosFPN(g, IN_CHANNELS, 8)
    assert (fpn.p3_node, fpn.p4_node, fpn.p5_node, fpn.extra_nodes) == (10, 9, 8, [6])
    chain = tuple((4 + k - 1 if k else 3, 0, 3, 3, 0) for k in range(7))  # every output read by the next
    bad = S.Genotype(fpn=chain, head_share=(0,) * 5, head_first=3, head_blocks=())
    assert "fewer than three dangling" in S.validate(bad)
    with pytest.raises(SpecError, match="fewer than three dangling"):
        S.Genotype.from_json(bad.to_json())


def test_published_decoder_shapes_and_output_strides():
    decoder = S.build(zoo.NAS_FCOS, IN_CHANNELS, num_classes=4, width=16)
    out = decoder(features(n=1, crop=128))
    assert out["feature_sizes"] == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    towers = decoder.head.towers.cls_tower
    kinds = [type(towers.layer(0, k)).__name__ for k in range(6)]
    assert kinds == ["DeformConv", "ConvNormAct", "DeformConv", "ConvNormAct", "Identity", "Identity"]
    assert towers.layer(0, 2) is towers.layer(4, 2)  # head_share 0: one weight set for all levels


def test_head_weight_sharing_index():
    g = S.Genotype(fpn=zoo.NAS_FCOS.fpn, head_sequence=(1, 1, 1), head_share=(0, 1, 2, 3, 3))
    tower = S.NasFcosTower(g, 8)
    assert tower.layer(0, 0) is not tower.layer(1, 0)          # level P4 owns layer 0
    assert tower.layer(1, 1) is tower.layer(0, 1)              # ...and shares layer 1 on
    assert tower.layer(4, 2) is not tower.layer(0, 2)          # P7 owns all three layers
    own = sum(p.numel() for p in tower.own.parameters())
    per_layer = sum(p.numel() for p in S.OPS["conv3x3"](8, "gn").parameters())
    assert own == per_layer * (0 + 1 + 2 + 3 + 3)


def test_cost_counts_deformable_flops_and_params():
    g = zoo.NAS_FCOS
    decoder = S.build(g, IN_CHANNELS, 3, width=8)
    shapes = {lv: f.shape[1:] for lv, f in features(crop=64).items()}
    c = S.cost(decoder, shapes)
    assert c["params"] == sum(p.numel() for p in decoder.parameters())
    plain = S.build(S.Genotype(fpn=tuple((a, b, 3, 3, agg) for a, b, _, _, agg in g.fpn),
                               head_sequence=(4,) * 6, head_share=(0,) * 5), IN_CHANNELS, 3, width=8)
    assert c["flops"] > S.cost(plain, shapes)["flops"] > 0


def test_bad_genotype_json_names_the_field():
    with pytest.raises(SpecError, match="field 'space'"):
        S.Genotype.from_json('{"space": "nas-fpn", "version": 1}')
    with pytest.raises(SpecError, match="malformed JSON"):
        S.Genotype.from_json("{")
    with pytest.raises(SpecError, match="field 'fpn_ops'"):
        S.SpaceSpec(fpn_ops=("conv7x7",))


def test_zoo_fpn_fcos_matches_torchvision_parameter_for_parameter():
    # Golden count: torchvision's FPN (P6/P7 from P5) + FCOSHead at width 256 on ResNet-50 C3..C5,
    # plus our 5 per-level regression scales (FCOS's Scale; torchvision's FCOS has none).
    from torchvision.models.detection.fcos import FCOSHead as TVHead
    from torchvision.ops.feature_pyramid_network import (
        FeaturePyramidNetwork,
        LastLevelP6P7,
    )

    from nascli.spaces import fpn_fcos

    r50 = {"c2": 256, "c3": 512, "c4": 1024, "c5": 2048}
    decoder = fpn_fcos.build(zoo.get("zoo:fpn-fcos"), r50, num_classes=80, width=256)
    tv = sum(p.numel() for p in FeaturePyramidNetwork([512, 1024, 2048], 256, LastLevelP6P7(256, 256)).parameters())
    tv += sum(p.numel() for p in TVHead(256, 1, 80, num_convs=4).parameters())
    assert sum(p.numel() for p in decoder.parameters()) == tv + 5
    assert fpn_fcos.Genotype.from_json(zoo.FPN_FCOS.to_json()) == zoo.FPN_FCOS


def test_zoo_nas_fcos_parameter_count_equals_the_released_code():
    # Golden numbers derived op by op from the authors' released R-50 config (docs/design.md, the
    # zoo), not from this builder: modulated DCNv2 with 2 deformable groups and bias, concat
    # reduced by a grouped 1×1 conv without bias, P7 = conv(relu(P6)), GN head towers.

    w, k = 256, 80
    r50 = {"c2": 256, "c3": 512, "c4": 1024, "c5": 2048}
    decoder = S.build(zoo.NAS_FCOS, r50, num_classes=k, width=w)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    fpn = decoder.fpn
    assert count(fpn.adapters) == 985_088
    assert sum(count(m) for m in fpn.blocks.modules() if isinstance(m, DeformConv)) == 8_580_744
    assert sum(count(b.fuse) for b in fpn.blocks) == 10_752
    assert count(fpn.p6) + count(fpn.p7) == 1_180_160
    assert count(decoder.head.towers) == 4_173_016
    outputs = [decoder.head.cls_logits, decoder.head.box_pred, decoder.head.ctr_pred]
    assert sum(count(m) for m in outputs) + decoder.head.scales.numel() == 195_930
    assert count(decoder) == 15_125_690
    with pytest.raises(Exception, match="unknown zoo architecture 'no-such-net'"):
        zoo.get("zoo:no-such-net")


def test_deformable_op_is_modulated_and_starts_as_half_a_plain_conv():
    # DCNv2: offsets and masks from conv_offset_mask (zero at start: no offset, mask sigmoid(0));
    # with the same weights a plain 3×3 conv gives twice the pre-norm output.

    torch.manual_seed(0)
    op = DeformConv(8, "bn").eval()
    assert op.conv_offset_mask.out_channels == 54  # (2 offsets + 1 mask) × 9 points × 2 groups
    x = torch.randn(2, 8, 10, 10)
    plain = torch.nn.functional.conv2d(x, op.conv.weight, op.conv.bias, padding=1)
    with torch.no_grad():
        deformed = op.conv(x, *_offsets_and_mask(op, x))
    torch.testing.assert_close(deformed, 0.5 * plain + 0.5 * op.conv.bias.view(1, -1, 1, 1), atol=1e-5, rtol=1e-4)


def _offsets_and_mask(op, x):
    o1, o2, m = torch.chunk(op.conv_offset_mask(x), 3, dim=1)
    return torch.cat([o1, o2], 1), torch.sigmoid(m)


def test_wider_head_variant_at_128_256_style():
    # The paper's @128-256 decoder: FPN at one width, head at another (a 1×1 conv between them).
    decoder = S.build(zoo.NAS_FCOS, IN_CHANNELS, num_classes=3, width=8, head_width=16)
    pyramid = decoder.fpn(features(crop=64))
    assert [p.shape[1] for p in pyramid] == [16] * 5
    assert decoder(features(crop=64))["cls_logits"].shape == (2, 86, 3)


@pytest.mark.parametrize("kernel,dilation", [(3, 3), (5, 6), (5, 2), (3, 1)])
# 2×2 and the dilated 3×3 and 6×6 run as a matmul (depthwise), 1×1 as a product or a trimmed conv
@pytest.mark.parametrize("size", [(1, 1), (2, 2), (3, 3), (2, 5), (6, 6), (12, 12), (16, 16)])
@pytest.mark.parametrize("groups", [1, 8])
def test_a_dilated_conv_skipping_padding_only_taps_computes_what_the_full_kernel_does(kernel, dilation, size, groups):
    torch.manual_seed(0)
    fast = ReachConv2d(8, 8, kernel, padding=dilation * (kernel // 2), dilation=dilation, groups=groups, bias=False)
    full = torch.nn.Conv2d(8, 8, kernel, padding=dilation * (kernel // 2), dilation=dilation, groups=groups,
                           bias=False)
    full.weight.data.copy_(fast.weight.data)
    x = torch.randn(2, 8, *size)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = fast(xa), full(xb)
    grad = torch.randn_like(ya)
    ya.backward(grad), yb.backward(grad)
    assert torch.allclose(ya, yb, atol=1e-5) and torch.allclose(xa.grad, xb.grad, atol=1e-5)
    assert torch.allclose(fast.weight.grad, full.weight.grad, atol=1e-5)  # skipped taps: zero either way


def test_the_pairwise_mix_computes_the_grouped_convolution_and_counts_its_flops():
    torch.manual_seed(0)
    mix = PairwiseMix(8)
    conv = torch.nn.Conv2d(16, 8, 1, groups=8, bias=False)
    conv.weight.data.copy_(mix.weight.data)
    x = torch.randn(2, 16, 3, 5)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = mix(xa), conv(xb)
    grad = torch.randn_like(ya)
    ya.backward(grad), yb.backward(grad)
    assert torch.allclose(ya, yb, atol=1e-6) and torch.allclose(xa.grad, xb.grad, atol=1e-6)
    assert torch.allclose(mix.weight.grad, conv.weight.grad, atol=1e-5)
    assert mix.state_dict().keys() == conv.state_dict().keys()  # checkpoints unchanged
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad(), nominal_taps():
        mix(x)
    assert counter.get_total_flops() == 2 * (2 * 8 * 15 * 2)  # 2 a MAC; N·C·pixels outputs of 2 inputs each


@pytest.mark.parametrize("size", [(5, 7), (1, 1), (12, 12)])
def test_the_deformable_conv_by_sampling_computes_torchvisions_outputs_and_gradients(size):
    torch.manual_seed(0)
    conv = DeformConv(8, "gn")
    torch.nn.init.normal_(conv.conv_offset_mask.weight, std=0.5)  # offsets of a few pixels, some off the map
    torch.nn.init.normal_(conv.conv_offset_mask.bias, std=2.0)
    x = torch.randn(2, 8, *size)

    def outputs_and_grads(torchvision_kernel: bool):
        conv.zero_grad()
        xi = x.clone().requires_grad_()
        with nominal_taps() if torchvision_kernel else contextlib.nullcontext():
            y = conv(xi)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        return [y, xi.grad, *(p.grad.clone() for p in conv.parameters())]

    for a, b in zip(outputs_and_grads(False), outputs_and_grads(True), strict=True):
        assert (a - b).abs().max() <= 1e-5 * b.abs().max()  # float summation order only


def test_reach_conv_refuses_what_its_trimming_does_not_cover():
    for bad in ({"stride": 2, "padding": 6}, {"padding": 0}):
        with pytest.raises(ValueError, match="stride-1 'same'"):
            ReachConv2d(8, 8, 3, dilation=6, **bad)


def test_a_trimmed_conv_does_less_work_and_flops_count_the_whole_kernel():
    from torch.utils.flop_counter import FlopCounterMode

    from nascli.spaces.base import cost

    conv = ReachConv2d(8, 8, 5, padding=12, dilation=6, bias=False)
    x = torch.zeros(1, 8, 4, 4)  # every tap but the centre reads padding

    def flops():
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            conv(x)
        return counter.get_total_flops()

    trimmed = flops()
    with nominal_taps():
        assert trimmed * 25 == flops() == 2 * 8 * 8 * 25 * 16
    spec = S.SpaceSpec(width=8, fpn_ops=("sep5x5_d6",), head_ops=("sep5x5_d6",))  # every op dilated
    decoder = S.build(S.decode(sample(np.random.default_rng(0), spec), spec), IN_CHANNELS, num_classes=3, width=8)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        decoder.eval()(features(n=1, crop=64))
    shapes = {lv: tuple(f.shape[1:]) for lv, f in features(n=1, crop=64).items()}
    assert counter.get_total_flops() < cost(decoder, shapes)["flops"]  # the cost counts the whole kernels
