"""ONNX export: the network under ONNX Runtime equals torch's, detections included; eval times it."""

import json

import numpy as np
import pytest
import torch

from nascli.deploy import OnnxDetector, export_onnx
from nascli.evaluate import detect, evaluate, load_detector
from nascli.runtime import load_checkpoint, save_checkpoint

from test_latency import faked_promotion
from test_retrain import run, searched_run  # noqa: F401  (fixtures)

pytest.importorskip("onnxruntime")


SMALL_SPACE = """
space: nas-fcos
inputs: [c3, c4, c5]
width: 8
fpn_blocks: 4
head_blocks: 2
fpn_ops: [sep3x3_d3, deform3x3]
head_ops: [sep5x5_d6, deform3x3]
"""


def searched_checkpoint(tiny_checkpoint, tmp_path):
    """The tiny baseline with a small searched NAS-FCOS decoder (dilated separable and deformable
    ops, sums and concatenations) instead of its FPN + head, random decoder weights: the ops the CPU
    paths rewrite (a decoder of the published size takes ~40 s to export)."""
    from nascli.config import ProxySpec, load_spec
    from nascli.spaces import space_for
    from nascli.strategies.random import RandomStrategy
    from nascli.train import build_detector

    (tmp_path / "small.yaml").write_text(SMALL_SPACE)
    [genotype] = RandomStrategy(space_for(load_spec(ProxySpec, tmp_path / "small.yaml")), seed=2).ask(1)
    ckpt = load_checkpoint(tiny_checkpoint)
    args = {**ckpt["model_args"], "genotype": json.loads(genotype.to_json())}
    torch.manual_seed(0)
    model = build_detector(args)
    from nascli.spaces.ops import DeformConv, ReachConv2d

    kinds = {type(m) for m in model.decoder.modules()}
    assert DeformConv in kinds and any(isinstance(m, ReachConv2d) and m.dilation != (1, 1) for m in model.modules())
    for m in model.modules():  # trained-like statistics, so BatchNorm is not an identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "searched.pt"
    save_checkpoint({**ckpt, "model": model.state_dict(), "model_args": args,
                     "config": {**ckpt["config"], "genotype": args["genotype"]}}, path)
    return path


@pytest.mark.parametrize("kind", ["baseline", "searched"])
def test_onnx_runtime_outputs_and_detections_equal_torch(kind, tiny_checkpoint, tiny_test, tmp_path):
    checkpoint = tiny_checkpoint if kind == "baseline" else searched_checkpoint(tiny_checkpoint, tmp_path)
    size = (64, 64) if kind == "baseline" else (64, 96)  # the promoted size, or one given (not square)
    r = export_onnx(checkpoint, tmp_path / "det.onnx", size=None if kind == "baseline" else size)
    assert r["max_relative_difference"] < 1e-4 and r["input_size"] == list(size)
    assert r["outputs"] == ["cls_logits", "box_ltrb", "ctr_logits"]
    model, _ = load_detector(checkpoint)
    onnx = OnnxDetector(r["onnx"], model.postprocess)
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        expected = model(x)
    got = onnx.network(x.numpy())
    for name in r["outputs"]:
        np.testing.assert_allclose(got[name], expected[name].numpy(), rtol=1e-4, atol=1e-4)
    target = {"size": size, "scale": 1.0}
    mine = onnx(x, [target["size"]])[0]
    with torch.no_grad():
        theirs = detect(model, x, [target], "cpu")[0]
    assert len(mine["scores"]) == len(theirs["scores"])
    np.testing.assert_allclose(mine["boxes"], theirs["boxes"], atol=1e-3)


def test_eval_times_latency_under_onnx_runtime_with_torch_ap(tiny_checkpoint, tiny_test):
    torch_run = evaluate(tiny_checkpoint, tiny_test, device="cpu", latency_images=5)
    ort_run = evaluate(tiny_checkpoint, tiny_test, device="cpu", latency_images=5, runtime="onnxruntime")
    assert ort_run["runtime"] == "onnxruntime" and torch_run["runtime"] == "torch" and ort_run["latency_ms"] > 0
    assert ort_run["AP"] == torch_run["AP"]  # AP is torch's either way


def test_export_cli_writes_a_promoted_architecture_and_refuses_an_unknown_one(run, tiny_test, run_cli, tmp_path):
    faked_promotion(run, tiny_test)
    code, out, _ = run_cli("export", run, "--arch", "trial-1", "--onnx", tmp_path / "t1.onnx")
    assert code == 0 and (tmp_path / "t1.onnx").stat().st_size > 1000 and "ONNX Runtime matches torch" in out
    code, _, err = run_cli("export", run, "--arch", "trial-9", "--onnx", tmp_path / "t9.onnx")
    assert code == 2 and "--arch trial-9" in err and "baseline, trial-1" in err
    assert not (tmp_path / "t9.onnx").exists()
    code, _, err = run_cli("export", run, "--onnx", tmp_path / "x.onnx")
    assert code == 2 and "--arch and --onnx together" in err


def test_compare_times_under_onnx_runtime_and_says_so(run, tiny_test):
    from nascli.report import compare

    faked_promotion(run, tiny_test)
    c = compare([run], latency_images=3, runtime="onnxruntime")
    lat = {a["arch"]: a["latency"] for a in c["architectures"]}
    assert lat["trial-1"]["runtime"] == "onnxruntime" and lat["baseline"]["ratio"] == 1.0
    assert "under onnxruntime" in c["test_verdict"][str(run)]["text"]
