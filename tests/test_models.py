"""Backbones, FPN, FCOS head and losses: shapes, local weights, frozen BN, and that it learns."""

import contextlib

import numpy as np
import pytest
import torch
from torchvision import models
from torchvision.ops import FrozenBatchNorm2d

from nascli.errors import CheckpointError, UnknownNameError
from nascli.models.backbones import BACKBONES, build_backbone
from nascli.models.detector import FCOS, FCOSDecoder, build_fcos
from nascli.models.fpn import FPN

EXPECTED_CHANNELS = {"resnet18": [64, 128, 256, 512], "resnet34": [64, 128, 256, 512],
                     "resnet50": [256, 512, 1024, 2048], "mobilenet_v2": [24, 32, 96, 1280]}


@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_levels_and_strides(name):
    net = build_backbone(name).eval()
    with torch.no_grad():
        feats = net(torch.zeros(1, 3, 64, 96))
    assert list(feats) == ["c2", "c3", "c4", "c5"]
    for (level, f), stride, ch in zip(feats.items(), (4, 8, 16, 32), EXPECTED_CHANNELS[name]):
        assert f.shape == (1, ch, 64 // stride, 96 // stride), level
        assert net.out_channels[level] == ch


def test_local_weights_load_and_classifier_is_ignored(tmp_path):
    torch.manual_seed(0)
    reference = models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "r18.pth")  # torchvision format, fc.* included
    net = build_backbone("resnet18", weights=tmp_path / "r18.pth").eval()
    reference.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = reference.layer4(reference.layer3(reference.layer2(reference.layer1(
            reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))))))
        torch.testing.assert_close(net(x)["c5"], want)


def test_bad_weights_files_are_user_errors(tmp_path):
    with pytest.raises(CheckpointError, match="weights file not found"):
        build_backbone("resnet18", weights=tmp_path / "none.pth")
    state = models.resnet18(weights=None).state_dict()
    torch.save(state, tmp_path / "r18.pth")
    with pytest.raises(CheckpointError, match="tensors missing, e.g. 'layer1.0.conv3.weight'"):
        build_backbone("resnet50", weights=tmp_path / "r18.pth")
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(state, tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError, match="'conv1.weight' has shape"):
        build_backbone("resnet18", weights=tmp_path / "wrong.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a torch state_dict"):
        build_backbone("resnet18", weights=tmp_path / "junk.pth")
    with pytest.raises(UnknownNameError, match="unknown backbone 'vgg'"):
        build_backbone("vgg")


def test_frozen_bn_does_not_train():
    net = build_backbone("resnet18", frozen_bn=True)
    assert any(isinstance(m, FrozenBatchNorm2d) for m in net.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    before = {k: v.clone() for k, v in net.state_dict().items() if "bn" in k}
    net.train()
    net(torch.randn(2, 3, 64, 64))
    after = net.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())


def test_fpn_outputs_p3_to_p7():
    fpn = FPN([8, 16, 32], width=12)
    feats = {"c3": torch.randn(2, 8, 32, 32), "c4": torch.randn(2, 16, 16, 16), "c5": torch.randn(2, 32, 8, 8)}
    outs = fpn(feats)
    assert [tuple(o.shape) for o in outs] == [(2, 12, s, s) for s in (32, 16, 8, 4, 2)]


def test_fcos_forward_shapes():
    model = build_fcos(num_classes=3, backbone="resnet18", width=16, num_convs=1)
    out = model(torch.zeros(2, 3, 128, 160))
    sizes = [(16, 20), (8, 10), (4, 5), (2, 3), (1, 2)]
    p = sum(h * w for h, w in sizes)
    assert out["feature_sizes"] == sizes
    assert out["cls_logits"].shape == (2, p, 3)
    assert out["box_ltrb"].shape == (2, p, 4) and (out["box_ltrb"] >= 0).all()
    assert out["ctr_logits"].shape == (2, p)


@pytest.mark.parametrize("sizes", [[(12, 12), (6, 6), (3, 3), (2, 2), (1, 1)], [(16, 20), (8, 10), (4, 5), (2, 3), (1, 2)]])
def test_the_head_predicting_small_levels_in_one_call_gives_each_level_its_own_outputs(sizes, monkeypatch):
    from nascli.models import heads

    torch.manual_seed(0)
    head = heads.FCOSHead(16, num_classes=3, num_convs=1)
    for m in (head.cls_logits, head.box_pred, head.ctr_pred):  # weights large enough to see a wrong pixel
        torch.nn.init.normal_(m.weight, std=0.5)
    feats = [torch.randn(2, 16, h, w) for h, w in sizes]

    def outputs_and_grads():
        head.zero_grad()
        xs = [f.clone().requires_grad_() for f in feats]
        out = head(xs)
        sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in out).backward()
        return [*out, *(x.grad for x in xs), head.cls_logits.weight.grad, head.box_pred.weight.grad,
                head.ctr_pred.weight.grad]

    def flops(nominal):
        from torch.utils.flop_counter import FlopCounterMode

        from nascli.spaces.ops import nominal_taps

        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad(), (nominal_taps() if nominal else contextlib.nullcontext()):
            head(feats)
        return counter.get_total_flops()

    packed, counted, canvas = outputs_and_grads(), flops(nominal=True), flops(nominal=False)
    monkeypatch.setattr(heads, "PACK_PIXELS", 0)  # every level in its own call
    for a, b in zip(packed, outputs_and_grads(), strict=True):
        assert (a - b).abs().max() <= 1e-5 * b.abs().max()  # float summation order only
    assert counted == flops(nominal=False) < canvas  # FLOPs count each level's own call, not the canvas


def test_fcos_overfits_one_batch_and_then_detects_it():
    torch.manual_seed(0)
    model = build_fcos(num_classes=2, backbone="resnet18", width=32, num_convs=1, score_thresh=0.05)
    images = torch.randn(2, 3, 64, 64)
    targets = [{"boxes": np.array([[8, 8, 40, 40]], np.float32), "labels": np.array([0])},
                {"boxes": np.array([[20, 24, 60, 56], [0, 0, 16, 16]], np.float32), "labels": np.array([1, 0])}]
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    losses = []
    for _ in range(60):
        loss = sum(model.loss(model(images), targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    model.eval()
    with torch.no_grad():
        det = model.postprocess(model(images), [(64, 64), (64, 64)])
    best = det[0]["boxes"][0]
    assert det[0]["labels"][0] == 0 and np.abs(best - [8, 8, 40, 40]).max() < 8


def test_postprocess_keeps_boxes_inside_the_image_and_sorted():
    model = build_fcos(num_classes=2, width=16, num_convs=1, score_thresh=0.0, detections_per_img=30).eval()
    with torch.no_grad():
        det = model.postprocess(model(torch.randn(1, 3, 64, 96)), [(60, 90)])[0]
    assert len(det["boxes"]) == 30
    assert (det["boxes"][:, [0, 2]] <= 90).all() and (det["boxes"][:, [1, 3]] <= 60).all()
    assert (det["boxes"] >= 0).all() and np.all(np.diff(det["scores"]) <= 0)


def test_fcos_accepts_a_custom_fpn_and_head():
    backbone = build_backbone("resnet18")
    fpn = FPN([128, 256, 512], width=8)
    model = FCOS(backbone, FCOSDecoder(backbone.out_channels, num_classes=4, fpn=fpn, width=8, num_convs=0))
    assert model.decoder.fpn is fpn
    assert model(torch.zeros(1, 3, 64, 64))["cls_logits"].shape[-1] == 4


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torchvision cache ($TORCH_HOME) with downloads failing as they do offline."""
    import urllib.error

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "torch-home" / "hub" / "checkpoints"


@pytest.mark.parametrize("name", ["default", "IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1"])
def test_weights_by_torchvision_name_come_from_torch_home(torch_home, name):
    torch.manual_seed(1)
    reference = models.resnet18(weights=None)
    torch_home.mkdir(parents=True)
    torch.save(reference.state_dict(), torch_home / "resnet18-f37072fd.pth")  # torchvision's file name
    net = build_backbone("resnet18", weights=name)
    torch.testing.assert_close(net.body.conv1.weight, reference.conv1.weight)
    assert build_backbone("resnet18", weights="none").body.conv1.weight.abs().sum() != reference.conv1.weight.abs().sum()


def test_weights_name_offline_and_not_cached_says_where_to_put_the_file(torch_home):
    with pytest.raises(CheckpointError, match=r"ResNet18_Weights.IMAGENET1K_V1: not in torchvision's cache .*"
                                              r"put https://download.pytorch.org/models/resnet18-f37072fd.pth at "
                                              + str(torch_home)):
        build_backbone("resnet18", weights="default")
    with pytest.raises(CheckpointError, match="not weights for backbone 'resnet18'"):
        build_backbone("resnet18", weights="ResNet50_Weights.IMAGENET1K_V2")
    with pytest.raises(CheckpointError, match=r"weights file not found, and not a weights name for 'mobilenet_v2' "
                                              r"\(none, default, IMAGENET1K_V1, IMAGENET1K_V2\)"):
        build_backbone("mobilenet_v2", weights="IMAGENET1K_V9")


def test_cli_weights_offline_is_one_line_exit_2(torch_home, tiny_coco, tmp_path, run_cli):
    code, out, err = run_cli("train", "--data", tiny_coco[0], "--out", tmp_path / "run", "--weights", "default",
                             "--epochs", "1", "--device", "cpu")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "not in torchvision's cache" in err
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize("arch, frozen_bn", [("fpn-fcos", False), ("nas-fcos", True), ("nas-fpn", False),
                                             ("fpn-retinanet", False)])
def test_folding_batchnorm_changes_outputs_only_by_float_order(arch, frozen_bn):
    """Every conv -> BatchNorm pair of the backbone and the decoder folded into the conv (with
    running statistics and affine parameters far from identity, so a wrong fold shows), and the
    detector's outputs as before within float tolerance; the original is left as it was."""
    import json

    from nascli.models.inference import NORMS, fold_batchnorm
    from nascli.spaces import zoo
    from nascli.train import build_detector

    torch.manual_seed(0)
    model = build_detector({"num_classes": 3, "backbone": "resnet18", "frozen_bn": frozen_bn, "width": 16,
                            "num_convs": 2, "genotype": json.loads(zoo.ZOO[arch].to_json()), "head_width": None,
                            "deep_supervision": False}).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, NORMS):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    before = sum(isinstance(m, NORMS) for m in model.modules())
    folded, count = fold_batchnorm(model)
    left = [n for n, m in folded.named_modules() if isinstance(m, NORMS)]
    assert count >= 20 and count == before - len(left)  # ResNet-18 alone has 20
    assert not any(n.startswith("backbone") for n in left)
    assert sum(isinstance(m, NORMS) for m in model.modules()) == before  # a copy was folded
    x = torch.rand(1, 3, 64, 96)
    with torch.inference_mode():
        want, got = model(x), folded(x)
    for key, value in want.items():
        if isinstance(value, torch.Tensor):
            assert torch.allclose(got[key], value, rtol=1e-4, atol=1e-4), key
