"""NAS-FPN: the merging-cell space, RetinaNet parts, the AP-reward proxy, anytime detection."""

import json
import random

import numpy as np
import pytest
import torch

from nascli.errors import SpecError
from nascli.cache import pyramid_sizes
from nascli.models.retinanet import anchor_targets, anchors_for, decode, encode
from nascli.spaces import build_decoder, load_genotype, nas_fpn, zoo

TINY_FPN_PROXY = """
space: nas-fpn
inputs: [c3, c4, c5]
cells: 6
repeats: 2
width: 8
epochs: 1
batch_size: 6
lr: 0.002
controller: {batch: 2}
"""


def _feats(crop=128, channels=(16, 24, 32), n=2):
    sizes = [crop // 8, crop // 16, crop // 32]
    return {lv: torch.randn(n, c, s, s) for lv, c, s in zip(("c3", "c4", "c5"), channels, sizes)}


def test_every_sampled_genotype_builds_and_returns_five_levels_at_the_right_strides():
    spec = nas_fpn.SpaceSpec(cells=7, width=8, repeats=2)
    space = nas_fpn.Space(spec)
    rng = random.Random(0)
    feats = _feats()
    for _ in range(25):
        choices = [rng.randrange(d.options) for d in space.decisions()]
        g = space.decode(choices)
        assert nas_fpn.validate(g) is None and space.encode(g) == choices
        assert all(level != 3 for _, _, level, _ in g.cells[:-5])   # intermediate cells avoid stride 8
        assert sorted(c[2] for c in g.cells[-5:]) == [3, 4, 5, 6, 7]
        assert nas_fpn.Genotype.from_json(g.to_json()) == g
        fpn = nas_fpn.NasFpn(g, {"c3": 16, "c4": 24, "c5": 32}, 8, g.repeats)
        levels = fpn(feats)[-1]
        assert [tuple(p.shape[-2:]) for p in levels] == pyramid_sizes(128)
        assert all(p.shape[:2] == (2, 8) for p in levels)


def test_zoo_nas_fpn_has_the_papers_parameter_count():
    """Paper Table 1: RetinaNet R-50 + NAS-FPN (7 @ 256) has 60.3 M parameters (80 classes)."""
    from nascli.models.backbones import build_backbone

    net = build_backbone("resnet50")
    decoder = build_decoder(zoo.NAS_FPN, net.out_channels, 80, 256)
    total = sum(p.numel() for p in net.parameters()) + sum(p.numel() for p in decoder.parameters())
    assert total == 60_343_604                       # 23.51 M backbone + 30.37 M pyramid + 6.47 M head
    assert abs(total / 60.3e6 - 1) < 0.001
    per_stage = sum(p.numel() for p in decoder.fpn.stages[0].parameters())
    assert per_stage == 7 * (256 * 256 * 9 + 2 * 256)  # seven ReLU-conv3x3-BN cells, no conv bias


def test_zoo_wiring_sums_unused_inputs_into_p5_and_p7():
    stage = nas_fpn.Pyramid(zoo.NAS_FPN, 8)
    assert stage.extras == [(), (), (), (), (2,), (4,), ()]   # P5 into cell 4, P7 into cell 5


def test_invalid_genotypes_are_refused_with_the_field():
    cells = list(zoo.NAS_FPN.cells)
    cells[0] = (3, 3, 4, 1)
    with pytest.raises(SpecError, match=r"cells\[0\]"):
        load_genotype(json.dumps({"space": "nas-fpn", "version": 1, "cells": cells}))
    cells = list(zoo.NAS_FPN.cells)
    cells[1] = (5, 1, 3, 0)
    with pytest.raises(SpecError, match="never output P3"):
        load_genotype(json.dumps({"space": "nas-fpn", "version": 1, "cells": cells}))


def test_anchor_encoding_round_trips_and_matching_labels_positives():
    anchors = anchors_for(pyramid_sizes(128))
    assert anchors.shape == (sum(h * w for h, w in pyramid_sizes(128)) * 9, 4)
    boxes = np.array([[10, 12, 50, 70], [60, 60, 120, 100]], np.float32)
    deltas = encode(anchors[:2].repeat(1, 0), boxes)
    assert np.allclose(decode(anchors[:2], deltas), boxes, atol=1e-3)
    labels, target = anchor_targets(anchors, boxes, np.array([2, 0]))
    assert set(np.unique(labels)) <= {-2, -1, 0, 2} and (labels == 2).any() and (labels == 0).any()
    pos = labels >= 0
    assert np.allclose(decode(anchors[pos], target[pos]).min(0), boxes.min(0), atol=0.5)
    empty_labels, _ = anchor_targets(anchors, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    assert (empty_labels == -1).all()


def test_retinanet_decoder_overfits_one_batch_and_then_detects_it():
    """The searched-pyramid RetinaNet learns: 80 Adam steps on one batch cut the loss by 70 %,
    and the best detection of the first image is its box with its label."""
    torch.manual_seed(0)
    g = nas_fpn.Genotype(cells=zoo.NAS_FPN.cells, repeats=2)
    decoder = build_decoder(g, {"c3": 16, "c4": 24, "c5": 32}, 3, 16)
    feats = _feats()
    targets = [{"boxes": np.array([[8, 8, 60, 40]], np.float32), "labels": np.array([1])},
               {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64)}]
    opt = torch.optim.Adam(decoder.parameters(), 3e-3)
    losses = []
    for _ in range(80):
        parts = decoder.loss(decoder(feats), targets)
        loss = sum(parts.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert set(parts) == {"cls", "box"} and losses[-1] < 0.3 * losses[0]
    decoder.eval()
    with torch.no_grad():
        dets = decoder.postprocess(decoder(feats), [(128, 128)] * 2)
    assert len(dets) == 2 and dets[0]["labels"][0] == 1
    assert np.abs(dets[0]["boxes"][0] - [8, 8, 60, 40]).max() < 12


def test_anytime_exit_after_k_stops_after_k_stages_and_deep_supervision_trains_each():
    g = nas_fpn.Genotype(cells=zoo.NAS_FPN.cells, repeats=3)
    decoder = build_decoder(g, {"c3": 16, "c4": 24, "c5": 32}, 3, 8).eval()
    feats = _feats()
    calls = []
    for stage in decoder.fpn.stages:
        stage.register_forward_hook(lambda m, i, o: calls.append(m))
    full = decoder(feats)
    decoder.exit_after = 1
    early = decoder(feats)
    assert len(calls) == 3 + 1
    assert not torch.equal(full["box_deltas"], early["box_deltas"])
    decoder.exit_after = None
    decoder.train()
    decoder.deep_supervision = True
    out = decoder(feats)
    assert len(out["stage_outputs"]) == 2       # stages 1 and 2 feed the shared head too
    labels = torch.full(out["cls_logits"].shape[:2], -1)
    labels[:, 0] = 1
    deltas = torch.zeros(*out["cls_logits"].shape[:2], 4)
    loss = sum(decoder.loss_from_targets(out, labels, deltas).values())
    loss.backward()
    first_stage_conv = decoder.fpn.stages[0].cells[0].conv.weight
    assert first_stage_conv.grad is not None and first_stage_conv.grad.abs().sum() > 0


@pytest.fixture
def tiny_fpn_proxy(tmp_path):
    path = tmp_path / "fpn.yaml"
    path.write_text(TINY_FPN_PROXY)
    return path


def test_proxy_reward_is_the_meta_val_ap(tiny_cache, tiny_fpn_proxy):
    from nascli.config import ProxySpec, load_spec
    from nascli.methods.decoder import evaluate
    from nascli.spaces import space_for
    from nascli.strategies.random import RandomStrategy

    spec = load_spec(ProxySpec, tiny_fpn_proxy)
    g = RandomStrategy(space_for(spec), seed=0).ask(1)[0]
    r = evaluate(g, spec, tiny_cache, seed=0)
    assert r.status == "done" and 0.0 <= r.reward <= 1.0 and r.reward == r.ap["AP"]
    assert set(r.losses) == {"cls", "box"} and r.params > 0 and r.flops > 0


def test_nas_fpn_search_runs_and_shows(tiny_cache, tiny_fpn_proxy, tmp_path, run_cli):
    code, out, err = run_cli("search", "--method", "nas-fpn", "--proxy", tiny_fpn_proxy, "--cache", tiny_cache,
                             "--trials", 3, "--run", tmp_path / "run", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["finished"] == 3 and r["space"] == "nas-fpn"
    code, out, _ = run_cli("runs", "show", tmp_path / "run", "--json")
    shown = json.loads(out)
    assert code == 0 and json.loads(shown["top"][0]["genotype"])["space"] == "nas-fpn"
    # the control of a NAS-FPN search is the hand-designed RetinaNet (FPN + the same head), scored
    # by the same AP reward, and it is the reference row retraining promotes
    assert json.loads(shown["control"]["genotype"])["space"] == "fpn-retinanet"
    assert 0.0 <= shown["control"]["mean"] <= 1.0 and shown["control"]["seeds"] == 3  # the default
    from nascli.retrain import candidates
    from nascli.store import RunStore

    reference = candidates(RunStore(tmp_path / "run", create=False), 1, (), baseline_convs=1)[0]
    assert reference.name == "baseline" and reference.genotype.space == "fpn-retinanet"
    code, out, _ = run_cli("runs", "show", tmp_path / "run")
    assert code == 0 and "control" in out and "verdict:" in out
    code, _, err = run_cli("search", "--method", "nas-fcos", "--proxy", tiny_fpn_proxy, "--cache", tiny_cache,
                           "--trials", 1, "--run", tmp_path / "other")
    assert code == 2 and "field 'space'" in err


def test_zoo_fpn_retinanet_matches_torchvision_up_to_its_bn_towers():
    # torchvision's RetinaNet (v1: FPN with P6/P7 from P5, 4-conv towers with bias, no norm); ours
    # puts BN after every tower conv as NAS-FPN does, without the conv bias: +8 x (2·256) - 8 x 256.
    from torchvision.models.detection import retinanet_resnet50_fpn

    from nascli.spaces import build_decoder, zoo

    tv = retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=80)
    expected = sum(p.numel() for m in (tv.backbone.fpn, tv.head) for p in m.parameters()) + 8 * 256
    decoder = build_decoder(zoo.get("zoo:fpn-retinanet"), {"c3": 512, "c4": 1024, "c5": 2048}, 80, 256)
    assert sum(p.numel() for p in decoder.parameters()) == expected
    out = decoder({"c3": torch.zeros(1, 512, 32, 32), "c4": torch.zeros(1, 1024, 16, 16),
                   "c5": torch.zeros(1, 2048, 8, 8)})
    assert out["cls_logits"].shape == (1, 9 * (32 * 32 + 16 * 16 + 8 * 8 + 4 * 4 + 2 * 2), 80)


def test_anytime_training_and_evaluation_at_every_exit(tiny_coco, tiny_config, tmp_path, run_cli):
    from nascli.runtime import load_checkpoint
    from nascli.train import train

    g = nas_fpn.Genotype(cells=zoo.NAS_FPN.cells, repeats=2)
    cfg = tiny_config(tiny_coco[0], tmp_path / "fpn", genotype=json.loads(g.to_json()), deep_supervision=True)
    train(cfg)
    ckpt = tmp_path / "fpn" / "last.pt"
    assert load_checkpoint(ckpt)["model_args"]["deep_supervision"] is True
    code, out, err = run_cli("eval", ckpt, "--data", tiny_coco[1], "--all-exits", "--device", "cpu", "--json")
    assert code == 0, err
    exits = json.loads(out)
    assert [r["exit_after"] for r in exits] == [1, 2] and exits[0]["flops"] < exits[1]["flops"]
    code, _, err = run_cli("eval", ckpt, "--data", tiny_coco[1], "--exit-after", 3, "--device", "cpu")
    assert code == 2 and "--exit-after 3" in err and "2 stacked" in err
    code, out, _ = run_cli("predict", ckpt, tiny_coco[0].parent / "synth" / "images" / "000001.png",
                           "--out", tmp_path / "p", "--exit-after", 1, "--device", "cpu", "--json")
    assert code == 0 and json.loads(out)["images"]


def test_deep_supervision_on_a_single_pyramid_is_a_spec_error(tiny_coco, tiny_config, tmp_path):
    from nascli.train import train

    with pytest.raises(SpecError, match="deep_supervision"):
        train(tiny_config(tiny_coco[0], tmp_path / "x", deep_supervision=True))
