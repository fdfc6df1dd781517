"""Trials on a GPU: the same rewards as on the CPU up to floating-point noise (skipped without one),
and asking for one that is not there is a one-line error. Mixed precision (spec `amp: true`):
bfloat16 autocast on the CPU, float16 with loss scaling on CUDA, for training only."""

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
    from nascli.methods.decoder import evaluate
    from nascli.spaces import zoo

    spec = load_spec(ProxySpec, tiny_proxy)
    cpu = evaluate(zoo.get("zoo:fpn-fcos"), spec, tiny_cache, seed=1, device="cpu")
    gpu = evaluate(zoo.get("zoo:fpn-fcos"), spec, tiny_cache, seed=1, device="cuda")
    assert cpu.status == gpu.status == "done"
    assert gpu.reward == pytest.approx(cpu.reward, rel=1e-3, abs=1e-3)


@CUDA
def test_backbone_rewards_agree_on_cpu_and_gpu(tiny_image_cache, tmp_path):
    from nascli.methods.sp_nas import baseline_of, evaluate, start_genotype
    from nascli.config import ProxySpec

    spec = ProxySpec(space="sp-nas", epochs=1, lr=0.01, batch_size=4, reward="loss")
    g = start_genotype(baseline_of(tiny_image_cache))
    cpu = evaluate(g, spec, tiny_image_cache, 1, 0, weights_dir=tmp_path / "cpu", device="cpu")
    gpu = evaluate(g, spec, tiny_image_cache, 1, 0, weights_dir=tmp_path / "gpu", device="cuda")
    assert gpu.reward == pytest.approx(cpu.reward, rel=1e-3, abs=1e-3)



def _amp_spec(tiny_proxy, amp: bool):
    """The tiny proxy with every op a deformable conv (which runs float32 inside autocast)."""
    from nascli.config import ProxySpec, load_spec

    spec = load_spec(ProxySpec, tiny_proxy)
    return spec.model_copy(update={"amp": amp, "fpn_ops": ["deform3x3", "sep3x3"], "head_ops": ["deform3x3", "sep3x3"],
                                   "epochs": 2})


def _all_deform(spec):
    from nascli.spaces import space_for

    space = space_for(spec)
    g = space.decode([0] * len(space.decisions()))
    assert 4 in g.fpn[0][2:4]  # deform3x3 is FPN op id 4
    return g


def test_amp_on_the_cpu_trains_in_float32(tiny_cache, tiny_proxy):
    from nascli.methods.decoder import evaluate

    g = _all_deform(_amp_spec(tiny_proxy, False))
    fp32, amp = (evaluate(g, _amp_spec(tiny_proxy, a), tiny_cache, seed=1, device="cpu") for a in (False, True))
    assert amp.status == "done" and amp.reward == fp32.reward


@pytest.fixture
def amp_on_the_cpu(monkeypatch):
    """The CUDA mixed-precision path (float16 autocast, loss scaling) made to run on the CPU."""
    from nascli.methods import decoder, detnas, sp_nas
    from nascli.runtime import MixedPrecision

    for module in (decoder, sp_nas, detnas):
        monkeypatch.setattr(module, "training_precision", lambda device, amp: MixedPrecision(device, amp))


def test_mixed_precision_path_trains_decoders_close_to_float32(tiny_cache, tiny_proxy, amp_on_the_cpu):
    from nascli.trial import open_split
    from nascli.methods.decoder import evaluate, train_candidate

    plain, mixed = _amp_spec(tiny_proxy, False), _amp_spec(tiny_proxy, True)
    g = _all_deform(plain)
    fp32 = evaluate(g, plain, tiny_cache, seed=1, device="cpu")
    amp = evaluate(g, mixed, tiny_cache, seed=1, device="cpu")
    assert fp32.status == amp.status == "done", amp.reason
    assert amp.reward != fp32.reward  # autocast did run: float16 rounding changes the trajectory ...
    assert amp.reward == pytest.approx(fp32.reward, rel=0.05)  # ... by little on a short run
    scorer, _ = train_candidate(g, mixed, open_split(str(tiny_cache), "train"), seed=1)
    assert {p.dtype for p in scorer.parameters()} == {torch.float32}  # weights and their average stay fp32


def test_mixed_precision_path_trains_backbones_and_the_supernet(tiny_image_cache, tmp_path, amp_on_the_cpu):
    from nascli.methods.sp_nas import baseline_of, evaluate, start_genotype
    from nascli.config import ProxySpec, load_spec, proxy_specs
    from nascli.methods.detnas import train_supernet

    spec = ProxySpec(space="sp-nas", epochs=1, lr=0.01, batch_size=4, reward="loss")
    g = start_genotype(baseline_of(tiny_image_cache))
    fp32 = evaluate(g, spec, tiny_image_cache, 1, 0, weights_dir=tmp_path / "fp32")
    amp = evaluate(g, spec.model_copy(update={"amp": True}), tiny_image_cache, 1, 0, weights_dir=tmp_path / "amp")
    assert fp32.status == amp.status == "done", amp.reason
    assert amp.reward != fp32.reward and amp.reward == pytest.approx(fp32.reward, rel=0.05)

    detnas = load_spec(ProxySpec, proxy_specs()["detnas"])
    tiny = {**detnas.supernet, "width": 0.25, "depth": 0.25, "pretrain_epochs": 1, "finetune_epochs": 1,
            "batch_size": 4}
    runs = {amp: train_supernet(tmp_path / f"supernet-{amp}.pt",
                                detnas.model_copy(update={"amp": amp, "supernet": tiny, "width": 8}),
                                tiny_image_cache)["history"] for amp in (False, True)}
    for (a, b) in zip(runs[False], runs[True]):
        assert a["phase"] == b["phase"] and a["loss"] != b["loss"]
        assert b["loss"] == pytest.approx(a["loss"], rel=0.1)


def test_mixed_precision_runs_half_and_skips_an_overflowing_step():
    from nascli.runtime import MixedPrecision

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    precision = MixedPrecision("cpu", True)
    with precision.autocast():
        assert model(torch.randn(3, 4)).dtype == torch.float16
    out = precision.forward(model, torch.randn(3, 4))
    assert out.dtype == torch.float32
    before, scale = model.weight.detach().clone(), precision.scaler.get_scale()
    precision.step(optimizer, out.sum() * float("inf"), clip_norm=1.0)  # overflow: no step, lower scale
    assert torch.equal(model.weight, before) and precision.scaler.get_scale() < scale
    # a mean: scaled gradients that fit in float16 (a sum's bias gradient, 3 x 2^15, would not)
    precision.step(optimizer, precision.forward(model, torch.randn(3, 4)).mean(), clip_norm=1.0)
    assert not torch.equal(model.weight, before) and torch.isfinite(model.weight).all()


@CUDA
def test_mixed_precision_on_gpu_agrees_with_float32(tiny_cache, tiny_proxy):
    from nascli.methods.decoder import evaluate

    plain, mixed = _amp_spec(tiny_proxy, False), _amp_spec(tiny_proxy, True)
    g = _all_deform(plain)
    fp32 = evaluate(g, plain, tiny_cache, seed=1, device="cuda")
    amp = evaluate(g, mixed, tiny_cache, seed=1, device="cuda")
    assert fp32.status == amp.status == "done", amp.reason
    assert amp.reward != fp32.reward and amp.reward == pytest.approx(fp32.reward, rel=0.05)


def test_threads_default_to_the_free_cores_and_an_oversubscribing_choice_is_warned():
    from nascli.runtime import choose_threads

    assert choose_threads(None, 2, 0.1) == (2, None)  # an idle machine: every core
    threads, note = choose_threads(None, 2, 1.2)  # one other job busy: the free core only
    assert threads == 1 and "busy" in note and "--threads" in note
    assert choose_threads(None, 2, 5.0)[0] == 1  # never below one
    assert choose_threads(1, 2, 1.0) == (1, None)  # a choice that fits is kept silently
    threads, note = choose_threads(2, 2, 1.0)  # a choice that oversubscribes is kept, with a warning
    assert threads == 2 and note.startswith("warning: --threads 2") and "--threads 1 fits" in note
    assert choose_threads(4, 8, 0.0) == (4, None)


def test_set_threads_holds_numba_to_torchs_threads():
    import numba

    from nascli.runtime import set_threads

    before = torch.get_num_threads()
    try:
        set_threads(2)
        assert torch.get_num_threads() == 2 and numba.get_num_threads() == min(2, numba.config.NUMBA_NUM_THREADS)
        set_threads(1)
        assert torch.get_num_threads() == 1 and numba.get_num_threads() == 1
    finally:
        set_threads(before)


def test_more_local_workers_than_threads_is_warned():
    from nascli.runtime import workers_note

    assert workers_note(None, 2) is None and workers_note(2, 2) is None and workers_note(2, 4) is None
    note = workers_note(3, 2)
    assert note.startswith("warning: --workers 3 with 2 threads to share") and "--workers 2 fits" in note


def test_cli_threads_option_sets_torch_threads_and_warns_on_stderr(run_cli, monkeypatch, capsys):
    import nascli.cli as cli
    import nascli.runtime as runtime

    monkeypatch.setattr(runtime, "usable_cores", lambda: 2)
    monkeypatch.setattr(runtime, "busy_cores", lambda: 1.1)  # another job holds a core
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        cli._use_threads(None)
        assert torch.get_num_threads() == 1 and "busy" in capsys.readouterr().err
        cli._use_threads(2)
        assert torch.get_num_threads() == 2 and "oversubscribes" in capsys.readouterr().err
        cli._use_threads(None, workers=2)  # two workers on the one free core
        assert "--workers 2 with 1 thread to share" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)
    code, _, err = run_cli("search", "--threads", "0", "--resume", "nowhere")
    assert code == 2 and "--threads" in err


def test_busy_cores_sees_another_process_at_work():
    import subprocess
    import sys

    from nascli.runtime import busy_cores

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import os
        import time

        time.sleep(0.3)
        busy = busy_cores(0.5)  # at least the spinner's core (more if other jobs run), never more than all
        assert 0.6 <= busy <= (os.cpu_count() or 1) + 0.01
    finally:
        spinner.kill()
