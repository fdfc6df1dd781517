"""ONNX export: the network under ONNX Runtime equals torch's, detections included; eval times it."""

import json

import numpy as np
import pytest
import torch

from nascli.deploy import OnnxDetector, export_onnx
from nascli.evaluate import detect, evaluate, load_detector
from nascli.runtime import load_checkpoint, save_checkpoint
from nascli.spaces import zoo

from test_latency import faked_promotion
from test_retrain import run, searched_run  # noqa: F401  (fixtures)

pytest.importorskip("onnxruntime")


def searched_checkpoint(tiny_checkpoint, tmp_path):
    """The tiny baseline with a searched NAS-FCOS decoder (separable, dilated, concat) instead of
    its FPN + head, random decoder weights: the ops the CPU shortcuts rewrite."""
    from nascli.train import build_detector

    ckpt = load_checkpoint(tiny_checkpoint)
    args = {**ckpt["model_args"], "genotype": json.loads(zoo.NAS_FCOS.to_json())}
    torch.manual_seed(0)
    model = build_detector(args)
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
    r = export_onnx(checkpoint, tmp_path / "det.onnx")
    assert r["max_relative_difference"] < 1e-4 and r["input_size"] == [64, 64]
    assert r["outputs"] == ["cls_logits", "box_ltrb", "ctr_logits"]
    model, _ = load_detector(checkpoint)
    onnx = OnnxDetector(r["onnx"], model.postprocess)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
    got = onnx.network(x.numpy())
    for name in r["outputs"]:
        np.testing.assert_allclose(got[name], expected[name].numpy(), rtol=1e-4, atol=1e-4)
    target = {"size": (64, 64), "scale": 1.0}
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
