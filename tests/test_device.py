"""Trials on a GPU: the same rewards as on the CPU up to floating-point noise (skipped without one),
and asking for one that is not there is a one-line error."""

import pytest
import torch

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def test_search_on_a_missing_gpu_is_a_one_line_error(run_cli, tiny_cache, tiny_proxy, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    code, _, err = run_cli("search", "--method", "random", "--proxy", tiny_proxy, "--cache", tiny_cache,
                           "--trials", 1, "--run", tmp_path / "r", "--device", "cuda")
    assert code == 2 and "no CUDA device" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()  # refused before anything was written


@CUDA
def test_decoder_rewards_agree_on_cpu_and_gpu(tiny_cache, tiny_proxy):
    from nascli.config import ProxySpec, load_spec
    from nascli.proxy import evaluate
    from nascli.spaces import zoo

    spec = load_spec(ProxySpec, tiny_proxy)
    cpu = evaluate(zoo.get("zoo:fpn-fcos"), spec, tiny_cache, seed=1, device="cpu")
    gpu = evaluate(zoo.get("zoo:fpn-fcos"), spec, tiny_cache, seed=1, device="cuda")
    assert cpu.status == gpu.status == "done"
    assert gpu.reward == pytest.approx(cpu.reward, rel=1e-3, abs=1e-3)


@CUDA
def test_backbone_rewards_agree_on_cpu_and_gpu(tiny_image_cache, tmp_path):
    from nascli.backbone_proxy import baseline_of, evaluate, start_genotype
    from nascli.config import ProxySpec

    spec = ProxySpec(space="sp-nas", epochs=1, lr=0.01, batch_size=4, reward="loss")
    g = start_genotype(baseline_of(tiny_image_cache))
    cpu = evaluate(g, spec, tiny_image_cache, 1, 0, weights_dir=tmp_path / "cpu", device="cpu")
    gpu = evaluate(g, spec, tiny_image_cache, 1, 0, weights_dir=tmp_path / "gpu", device="cuda")
    assert gpu.reward == pytest.approx(cpu.reward, rel=1e-3, abs=1e-3)
