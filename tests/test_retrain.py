"""Promotion: retraining a run's winners and the baseline, resume after kill, compare, fidelity."""

import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats
import torch

from nascli.errors import SpecError
from nascli.report import compare, kendall_tau, pareto_front, spearman_rho
from nascli.retrain import retrain
from nascli.runtime import load_checkpoint
from nascli.search import ranked, run_search
from nascli.spaces import load_genotype, zoo
from nascli.store import RunStore
from nascli.train import TrainingDiverged, build_detector, train


@pytest.fixture(scope="module")
def searched_run(tiny_cache, tmp_path_factory):
    """A finished 3-trial random search on the tiny cache (copied per test by `run`)."""
    from conftest import TINY_PROXY

    root = tmp_path_factory.mktemp("searched")
    proxy = root / "tiny.yaml"
    proxy.write_text(TINY_PROXY)
    run_search("random", proxy, tiny_cache, 3, root / "run", seed=0)
    return root / "run"


@pytest.fixture
def run(searched_run, tmp_path):
    import shutil

    return shutil.copytree(searched_run, tmp_path / "run")


# ---------------------------------------------------------------- statistics


@pytest.mark.parametrize("x, y", [
    ([1.0, 2.0, 3.0, 4.0, 5.0], [0.1, 0.4, 0.2, 0.8, 0.9]),
    ([-4.1, -4.5, -3.9, -5.2, -4.4, -4.0], [0.31, 0.22, 0.35, 0.10, 0.22, 0.30]),  # ties in y
    ([1, 1, 2, 2, 3, 3, 4], [3, 2, 2, 1, 5, 5, 4]),                                 # ties in both
    ([3.0, 2.0, 1.0], [0.1, 0.2, 0.3]),                                             # perfectly reversed
])
def test_kendall_and_spearman_equal_scipy(x, y):
    assert kendall_tau(x, y) == pytest.approx(scipy.stats.kendalltau(x, y).statistic, abs=1e-12)
    assert spearman_rho(x, y) == pytest.approx(scipy.stats.spearmanr(x, y).statistic, abs=1e-12)


def test_kendall_and_spearman_equal_scipy_on_random_inputs():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(2, 30))
        x, y = rng.integers(0, 6, n).astype(float), rng.normal(size=n)
        if len(set(x)) == 1:
            continue
        assert kendall_tau(x, y) == pytest.approx(scipy.stats.kendalltau(x, y).statistic, abs=1e-12)
        assert spearman_rho(x, y) == pytest.approx(scipy.stats.spearmanr(x, y).statistic, abs=1e-12)


def test_pareto_front_keeps_only_undominated_points():
    flops = [1.0, 2.0, 3.0, 2.5, 1.0]
    ap = [0.2, 0.3, 0.5, 0.25, 0.1]
    assert pareto_front(flops, ap) == [0, 1, 2]


# ---------------------------------------------------------------- building retrained detectors


def test_searched_decoder_builds_at_retraining_widths():
    args = {"num_classes": 3, "backbone": "resnet18", "frozen_bn": False, "width": 16, "num_convs": 2,
            "genotype": json.loads(zoo.NAS_FCOS.to_json())}
    plain = build_detector({**args, "head_width": None})
    wide = build_detector({**args, "head_width": 32})   # the @128-256 shape, scaled down
    x = torch.zeros(1, 3, 64, 64)
    assert plain(x)["cls_logits"].shape == wide(x)["cls_logits"].shape
    count = lambda m: sum(p.numel() for p in m.decoder.parameters())  # noqa: E731
    assert count(wide) > count(plain)
    baseline = build_detector({**args, "genotype": None, "head_width": 32})
    assert baseline(x)["cls_logits"].shape[-1] == 3


def test_load_genotype_from_file_zoo_and_bad_input(tmp_path):
    assert load_genotype("zoo:nas-fcos") == zoo.NAS_FCOS
    path = tmp_path / "g.json"
    path.write_text(json.dumps({**json.loads(zoo.NAS_FCOS.to_json()), "reward": -4.2}))  # as export writes
    assert load_genotype(path) == zoo.NAS_FCOS
    path.write_text('{"space": "nope"}')
    with pytest.raises(SpecError, match="g.json: field 'space'"):
        load_genotype(path)


# ---------------------------------------------------------------- retrain


def test_retrain_trains_top_k_and_the_baseline_then_evaluates(run, tiny_checkpoint, tiny_test):
    r = retrain(run, val=tiny_test, top=2, epochs=1, device="cpu")
    names = [x["name"] for x in r["rows"]]
    store = RunStore(run, create=False)
    best = [f"trial-{t['trial']}" for t in ranked(store)[:2]]  # re-scored ones first, by their mean
    assert names == ["baseline", *best]
    for x in r["rows"]:
        assert x["status"] == "done" and 0 <= x["metrics"]["AP"] <= 1 and x["metrics"]["params"] > 0
        ckpt = load_checkpoint(x["checkpoint"])
        assert ckpt["epoch"] == 1 and ckpt["config"]["init_from"] == str(tiny_checkpoint)
    # the reference row is the run's control with its mean reward; trials carry their re-scored mean
    rows = {x["name"]: x for x in r["rows"]}
    assert rows["baseline"]["reward"] == pytest.approx(store.control().reward) and rows["baseline"]["reward"] < 0
    assert json.loads(rows["baseline"]["genotype"]) == json.loads(store.control().genotype)
    assert rows[best[0]]["reward"] == ranked(store)[0]["mean"]
    # the backbone started from the baseline's trained weights, then trained on
    base = load_checkpoint(tiny_checkpoint)["model"]
    first = load_checkpoint(rows["baseline"]["checkpoint"])["model"]
    assert not torch.equal(first["backbone.body.conv1.weight"], base["backbone.body.conv1.weight"])
    # a second call skips what is done
    def refuse(*a, **k):
        raise AssertionError("retrained again")
    again = retrain(run, val=tiny_test, top=2, epochs=1, device="cpu", train_fn=refuse)
    assert [x["metrics"]["AP"] for x in again["rows"]] == [x["metrics"]["AP"] for x in r["rows"]]


def test_retrain_refuses_a_changed_request_on_existing_checkpoints(run, tiny_test):
    retrain(run, val=tiny_test, top=0, epochs=1, device="cpu")
    with pytest.raises(Exception, match="field 'epochs' was 1"):
        retrain(run, val=tiny_test, top=0, epochs=2, device="cpu")


def test_diverging_architecture_is_a_failed_row_not_a_crash(run, tiny_test):
    def diverge_trials(config, resume=False, on_progress=None):
        if config.genotype["space"] != "fpn-fcos":
            raise TrainingDiverged("loss became nan")
        return train(config, resume, on_progress)

    r = retrain(run, val=tiny_test, top=1, epochs=1, device="cpu", train_fn=diverge_trials)
    assert [x["status"] for x in r["rows"]] == ["done", "failed"]
    c = compare([run])
    failed = [x for x in c["rows"] if x["status"] == "failed"][0]
    assert "nan" in failed["reason"] and "AP" not in failed


def test_retrain_resumes_after_kill_9(run, tiny_test):
    """The process kills itself right after the first epoch's checkpoint; the rerun continues."""
    script = f"""
import os, signal
from nascli.retrain import retrain
def die(event):
    if event["epoch"] == 2:
        os.kill(os.getpid(), signal.SIGKILL)
retrain({str(run)!r}, val={str(tiny_test)!r}, top=0, epochs=3, device="cpu", on_progress=die)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert proc.returncode == -9
    last = run / "retrain" / "baseline" / "last.pt"
    killed = load_checkpoint(last)
    assert killed["epoch"] == 1
    assert RunStore(run).retrained()[0]["status"] == "training"
    r = retrain(run, val=tiny_test, top=0, epochs=3, device="cpu")
    final = load_checkpoint(last)
    assert final["epoch"] == 3 and r["rows"][0]["status"] == "done"
    assert final["history"][0] == killed["history"][0]  # epoch 1 was not trained again


def test_retrain_arch_and_cli_errors(run, run_cli, tmp_path, tiny_test, tiny_coco):
    code, out, err = run_cli("retrain", run, "--top", "0", "--arch", tmp_path / "missing.json", "--epochs", 1,
                             "--val", tiny_test)
    assert code == 2 and "missing.json: genotype file not found" in err
    code, out, err = run_cli("retrain", tmp_path / "nowhere", "--top", "1")
    assert code == 2 and "run.db" in err
    code, out, _ = run_cli("retrain", run, "--top", "0", "--arch", "zoo:fpn-fcos", "--epochs", 1,
                           "--device", "cpu", "--val", tiny_test, "--json")
    assert code == 0 and [x["name"] for x in json.loads(out)["rows"]] == ["baseline", "zoo-fpn-fcos"]


def test_retrain_of_given_architectures_checks_its_inputs_before_creating_a_run(run_cli, tmp_path, tiny_test,
                                                                              tiny_checkpoint):
    """`retrain NEW --arch ...` makes a run folder; a bad genotype, a missing --checkpoint or an
    unreadable one is a one-line error that leaves no folder behind."""
    new = tmp_path / "new"
    (tmp_path / "bad.json").write_text('{"space": "nas-fcos", "fpn": [[9, 9, 9, 9, 9]]}')
    (tmp_path / "junk.pt").write_bytes(b"junk")
    for args, message in ((["--arch", tmp_path / "bad.json", "--checkpoint", tiny_checkpoint], "bad.json: field"),
                          (["--arch", "zoo:fpn-fcos"], "no search here to take it from"),
                          (["--arch", "zoo:fpn-fcos", "--checkpoint", tmp_path / "junk.pt"], "junk.pt: not a readable")):
        code, _, err = run_cli("retrain", new, "--top", "0", "--val", tiny_test, *args)
        assert code == 2 and message in err, err
        assert not new.exists()


def test_retrain_refuses_to_evaluate_where_the_search_selected(run, run_cli, tiny_coco):
    code, _, err = run_cli("retrain", run, "--top", "1", "--epochs", 1)
    assert code == 2 and "give --val TEST.json" in err
    code, _, err = run_cli("retrain", run, "--top", "1", "--epochs", 1, "--val", tiny_coco[1])
    assert code == 2 and "shares 4 images with the search's meta-val" in err
    assert not (run / "retrain").exists()  # refused before any training


# ---------------------------------------------------------------- compare


def test_compare_handles_failed_training_and_missing_rows(run, run_cli, tiny_test):
    retrain(run, val=tiny_test, top=1, epochs=1, device="cpu")
    store = RunStore(run, create=False)
    g = zoo.FPN_FCOS.to_json()
    store.set_retrained("interrupted", None, g, -5.0, "training", str(run / "nope.pt"), {})
    store.set_retrained("diverged", 7, g, -4.0, "failed", None, {"reason": "loss became nan"})
    store.set_retrained("deleted", 8, g, -3.0, "done", str(run / "gone.pt"), {"AP": 0.9, "flops": 1})
    store.close()
    c = compare([run])
    status = {x["name"]: x["status"] for x in c["rows"]}
    assert status["interrupted"] == "training" and status["diverged"] == "failed" and status["deleted"] == "missing"
    fid = c["fidelity"][str(run)]
    assert fid["n"] == 2 and set(fid["architectures"]) == {"baseline", [n for n in status if n.startswith("trial")][0]}
    assert any(x["pareto"] for x in c["rows"] if x["status"] == "done")
    code, out, _ = run_cli("compare", run)
    assert code == 0 and "diverged" in out and "needs 3+" in out  # no tau over 2 points
    assert (run / "compare.png").stat().st_size > 1000
    code, out, _ = run_cli("compare", run, "--json")
    assert code == 0 and len(json.loads(out)["rows"]) == 5


def test_compare_of_a_run_without_retraining(searched_run, run_cli):
    c = compare([searched_run])
    assert c["rows"] == [] and c["fidelity"][str(searched_run)]["kendall_tau"] is None


def test_fidelity_over_five_architectures_of_known_order(run, tiny_test):
    """Proxy rewards rising -5..-1 against APs .10 .30 .20 .40 .35: 8 concordant pairs and 2
    discordant of 10, so tau = 0.6; rank differences 0, 1, 1, 1, 1, so rho = 1 - 6·4/120 = 0.8.
    Failed and unfinished rows stay out of the count."""
    retrain(run, val=tiny_test, top=0, epochs=1, device="cpu")
    ckpt = RunStore(run).retrained()[0]["checkpoint"]
    store = RunStore(run, create=False)
    g = zoo.FPN_FCOS.to_json()
    for k, (reward, ap) in enumerate(zip([-5.0, -4.0, -3.0, -2.0, -1.0], [0.10, 0.30, 0.20, 0.40, 0.35])):
        store.set_retrained("baseline" if k == 0 else f"arch-{k}", k or None, g, reward, "done", ckpt,
                            {"AP": ap, "flops": 1e9 * (k + 1)})
    store.set_retrained("diverged", 9, g, 10.0, "failed", None, {"reason": "loss became nan"})
    store.close()
    fid = compare([run])["fidelity"][str(run)]
    assert fid["n"] == 5
    assert fid["kendall_tau"] == pytest.approx(0.6) and fid["spearman_rho"] == pytest.approx(0.8)