"""SP-NAS serial space: encodings (paper <-> Vega), ResNets as encodings with torchvision's weights,
and the function-preserving morphisms expand and swap."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from torchvision import models

from nascli.errors import SpecError
from nascli.spaces import spnas
from conftest import trained_like as _trained_like
from nascli.spaces.spnas import RESNET18, RESNET50, Serial, SerialNet, expand, swap

SPNET_VOC = "BB(11d,1111,d11111111,d111,1,1111)"  # the paper's Table 7


@pytest.mark.parametrize("text, vega", [("BB(11,d1,d1,d1)", "11-21-21-21"),
                                        ("BNB(111,d111,d11111,d11)", "111-2111-211111-211"),
                                        (SPNET_VOC, "112-1111-211111111-2111-1-1111")])
def test_paper_and_vega_encodings_round_trip(text, vega):
    serial = Serial.parse(text)
    assert str(serial) == text and serial.to_vega() == vega
    assert Serial.from_vega(vega, serial.block) == serial


@pytest.mark.parametrize("bad", ["BB(11,d1)", "CB(11,d1,d1,d1)", "BB(11,x1,d1,d1)", "BB(11,,d1,d1)",
                                 "BB(" + ",".join(["1"] * 8) + ")"])
def test_malformed_encodings_name_what_is_wrong(bad):
    with pytest.raises(SpecError, match="serial encoding"):
        Serial.parse(bad)


@pytest.mark.parametrize("serial, factory", [(RESNET18, models.resnet18), (RESNET50, models.resnet50),
                                             (Serial.parse("XB(111,d111,d11111,d11)"), models.resnext50_32x4d)])
def test_resnets_are_their_encodings_and_load_torchvision_weights(serial, factory):
    torch.manual_seed(0)
    reference = factory(weights=None).eval()
    net = SerialNet(serial, stem="resnet").eval()
    net.load_state_dict({k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")})  # strict
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = reference.layer4(reference.layer3(reference.layer2(reference.layer1(
            reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))))))
        torch.testing.assert_close(net(x)["c5"], want)


def _flops(net, size=64):
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(torch.zeros(1, 3, size, size))
    return counter.get_total_flops()


@pytest.mark.parametrize("serial", [RESNET18, Serial.parse("BNB(11,d1,d1,d1)")])
@pytest.mark.parametrize("position", [1, 2, 5, 8])
def test_expand_leaves_the_output_unchanged_and_adds_one_blocks_flops(serial, position):
    net = _trained_like(SerialNet(serial, base_channels=16))
    grown = expand(net, position).eval()
    assert len(grown.serial.codes) == len(serial.codes) + 1
    stage, k = serial.stage_of()[position - 1]  # it joins block `position`'s stage, right after it
    assert grown.serial.stages[stage] == serial.stages[stage][:k + 1] + "1" + serial.stages[stage][k + 1:]
    assert grown.inserted == position
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before, after = net(x), grown(x)
    for level in before:  # exactly: the new block adds zero to its residual
        torch.testing.assert_close(after[level], before[level], rtol=0, atol=1e-6)
    added = _flops(grown) - _flops(net)
    inserted = [b for layer in grown.stages() for b in layer][grown.inserted]
    shapes = []
    hook = inserted.register_forward_hook(lambda module, inputs, output: shapes.append(inputs[0].shape))
    grown(torch.zeros(1, 3, 64, 64))
    hook.remove()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        inserted(torch.zeros(shapes[0]))
    assert added == counter.get_total_flops() > 0  # exactly one more block's FLOPs


@pytest.mark.parametrize("stage, later", [(2, True), (2, False), (3, True), (4, False)])
def test_swap_keeps_every_weight_and_the_output_shapes(stage, later):
    net = _trained_like(SerialNet(RESNET18, base_channels=16))
    moved = swap(net, stage, later).eval()
    assert moved.dropped == []
    assert [len(s) for s in moved.serial.stages] != [len(s) for s in net.serial.stages]
    new_blocks = [b for layer in moved.stages() for b in layer]
    for i, old in enumerate(b for layer in net.stages() for b in layer):
        new_state = new_blocks[i].state_dict()
        for key, value in old.state_dict().items():
            assert torch.equal(new_state[key], value), (i, key)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before, after = net(x), moved(x)
    assert before["c5"].shape == after["c5"].shape
    assert not torch.allclose(before["c5"], after["c5"])  # the stride moved: values move


def test_morphisms_refuse_what_would_remove_a_stage():
    net = SerialNet(Serial.parse("BB(11,d,d1,d1)"), base_channels=8)
    with pytest.raises(SpecError, match="would vanish"):
        swap(net, 2, later=True)
    with pytest.raises(SpecError, match="a block position"):
        expand(net, 0)
    assert spnas.MIN_STAGES <= len(net.serial.stages) <= spnas.MAX_STAGES


def test_parallel_level_with_no_subnets_is_the_serial_network_and_subnets_copy_their_stage():
    import numpy as np

    net = _trained_like(SerialNet(RESNET18, base_channels=8))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        serial = net(x)
        plain = spnas.ParallelNet(net, (0, 0, 0, 0)).eval()(x)
        grown = spnas.ParallelNet(net, (0, 2, 1, 0)).eval()
        parallel = grown(x)
    for level in serial:
        torch.testing.assert_close(plain[level], serial[level], rtol=0, atol=0)
        assert parallel[level].shape == serial[level].shape
    torch.testing.assert_close(parallel["c2"], serial["c2"])  # stage 1 has no subnet
    assert not torch.allclose(parallel["c3"], serial["c3"])
    for copy in grown.subnets[1]:
        for (_, a), (_, b) in zip(copy.state_dict().items(), net.layer2.state_dict().items()):
            assert torch.equal(a, b)
    deep_first = SerialNet(Serial.parse("BB(1111,d1,d1,d1)"), base_channels=8)  # stage 1 costs ~2x stage 3
    counts = [spnas.sample_parallel(deep_first, np.random.default_rng(s), size=64) for s in range(200)]
    share = np.mean(counts, axis=0)  # cheaper stages get subnets more often
    assert all(0 <= c <= 3 for cs in counts for c in cs)
    assert share[0] < share[2]
