"""Promotion: retraining a run's winners and the baseline, resume after kill, compare, fidelity."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch

from nascli.errors import SpecError
from nascli.report import compare, kendall_tau, pareto_front, spearman_rho
from nascli.retrain import Promotion, retrain
from nascli.runtime import load_checkpoint
from nascli.protocol import ranked
from nascli.search import run_search
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
    feats = plain.backbone(x)
    assert [p.shape[1] for p in plain.decoder.fpn(feats)] == [16] * 5   # the pyramid at --width
    assert [p.shape[1] for p in wide.decoder.fpn(feats)] == [32] * 5    # widened for the head
    assert plain.decoder.head.cls_logits.in_channels == 16 and wide.decoder.head.cls_logits.in_channels == 32
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
    r = retrain(run, Promotion(val=tiny_test, top=2, epochs=1, lr=0.01, seeds=1, device="cpu"))
    archs = [x["metrics"]["arch"] for x in r["rows"]]
    store = RunStore(run, create=False)
    best = [f"trial-{t['trial']}" for t in ranked(store)[:2]]  # re-scored ones first, by their mean
    assert archs == ["baseline", *best] and r["grid"] == {}  # one pinned rate: no grid
    for x in r["rows"]:
        assert x["status"] == "done" and 0 <= x["metrics"]["AP"] <= 1 and x["metrics"]["params"] > 0
        assert x["name"].startswith(f"{x['metrics']['arch']}/lr0.01-e1-s0-")
        ckpt = load_checkpoint(x["checkpoint"])
        assert "optimizer" not in ckpt  # pruned once done: eval and compare need the model only
        assert ckpt["epoch"] == 1 and ckpt["config"]["init_from"] == str(tiny_checkpoint)
        # the reference recipe: warm-up from 1/3 of the peak over FCOS's share, at least one epoch
        assert ckpt["config"]["warmup_start"] == pytest.approx(1 / 3)
        assert ckpt["config"]["warmup_fraction"] == pytest.approx(500 / 90000)
    # the reference row is the run's control with its mean reward; trials carry their re-scored mean
    rows = {x["metrics"]["arch"]: x for x in r["rows"]}
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
    again = retrain(run, Promotion(val=tiny_test, top=2, epochs=1, lr=0.01, seeds=1, device="cpu"), train_fn=refuse)
    assert [x["metrics"]["AP"] for x in again["rows"]] == [x["metrics"]["AP"] for x in r["rows"]]


def test_a_changed_recipe_is_a_new_row_not_a_refusal(run, tiny_test):
    retrain(run, Promotion(val=tiny_test, top=0, epochs=1, lr=0.01, seeds=1, device="cpu"))
    retrain(run, Promotion(val=tiny_test, top=0, epochs=2, lr=0.01, seeds=1, device="cpu"))
    retrain(run, Promotion(val=tiny_test, top=0, epochs=1, lr=0.01, seeds=1, width=8, device="cpu"))
    rows = RunStore(run).retrained()
    assert len(rows) == 3 and len({r["checkpoint"] for r in rows}) == 3
    assert sorted(load_checkpoint(r["checkpoint"])["epoch"] for r in rows) == [1, 1, 2]


def test_rows_made_before_a_recipe_field_existed_keep_their_folder_and_are_reused(run, tiny_test):
    """A row trained before `optimizer` / `frozen_backbone_epochs` existed (its checkpoint's config
    lacks them) is the same recipe as one at their defaults: retrain reuses it instead of training
    again or refusing; the new values make new rows."""
    from nascli.runtime import save_checkpoint

    first = retrain(run, Promotion(val=tiny_test, top=0, epochs=1, lr=0.01, seeds=1, device="cpu"))["rows"]
    ckpt = load_checkpoint(first[0]["checkpoint"])
    for field in ("optimizer", "frozen_backbone_epochs"):
        del ckpt["config"][field]
    save_checkpoint(ckpt, first[0]["checkpoint"])
    again = retrain(run, Promotion(val=tiny_test, top=0, epochs=1, lr=0.01, seeds=1, device="cpu"))["rows"]
    assert [r["checkpoint"] for r in again] == [r["checkpoint"] for r in first]
    assert again[0]["metrics"]["AP"] == first[0]["metrics"]["AP"]
    adamw = retrain(run, Promotion(val=tiny_test, top=0, epochs=1, lr=1e-4, seeds=1, device="cpu",
                                   optimizer="adamw"))["rows"]
    assert adamw[0]["checkpoint"] != first[0]["checkpoint"]
    assert load_checkpoint(adamw[0]["checkpoint"])["config"]["optimizer"] == "adamw"


def test_warmup_is_a_share_of_the_schedule_floored_at_what_the_first_epoch_needs(tiny_config):
    from nascli.train import warmup_iterations

    fcos = tiny_config("x.json", "out", warmup_fraction=500 / 90000, epochs=12)
    assert warmup_iterations(fcos, steps_per_epoch=30) == 30          # 2 of 360: floored at the first epoch
    assert warmup_iterations(fcos.model_copy(update={"epochs": 1000}), 30) == 167  # 0.56 % of 30k
    assert warmup_iterations(fcos, steps_per_epoch=2000) == 500        # the floor is capped at FCOS's 500
    one_epoch = fcos.model_copy(update={"epochs": 1})
    assert warmup_iterations(one_epoch, steps_per_epoch=30) == 10      # ... and at a third of the schedule
    assert warmup_iterations(tiny_config("x.json", "out", warmup_iters=7), 30) == 7


def fake_train(calls):
    """A train function that writes a minimal checkpoint (epoch, history, config) and records its config."""
    from nascli.runtime import save_checkpoint
    from nascli.train import model_args

    def fake(config, resume=False, on_progress=None):
        calls.append(config)
        out = Path(config.out)
        out.mkdir(parents=True, exist_ok=True)
        save_checkpoint({"kind": "fcos", "model": {}, "model_args": model_args(config, 3), "epoch": config.epochs,
                         "history": [{"seconds": 1.0, "cls": 0.5}], "config": config.model_dump()}, out / "last.pt")
    return fake


def fake_evaluate(seen, meta_val_ap, test_ap):
    """AP by (split, lr, arch): on meta-val `meta_val_ap(lr)`, on test `test_ap(lr)` (+ seed noise)."""
    def evaluate(checkpoint, data, *, image_dir=None, device="cpu", latency_images=20, detections_out=None):
        config = load_checkpoint(checkpoint)["config"]
        split = "test" if Path(data).name == "test.json" else "meta-val"
        seen.append((split, config["lr"], config["epochs"]))
        ap = (test_ap if split == "test" else meta_val_ap)(config["lr"]) + 0.001 * config["seed"]
        return {"AP": ap, "AP50": ap, "AP75": ap, "APs": ap, "APm": ap, "APl": -1, "params": 1, "flops": 1,
                "flops_input": [64, 64], "latency_ms": 1.0, "device": "cpu"}
    return evaluate


def test_the_grid_chooses_on_meta_val_never_on_test(run, tiny_test):
    """Meta-val prefers the middle rate, test the highest: the chosen rate is meta-val's, for the
    control and the trial alike, and no grid run is ever evaluated on test."""
    calls, seen = [], []
    meta_val = {0.005: 0.2, 0.01: 0.3, 0.02: 0.1}
    test = {0.005: 0.1, 0.01: 0.2, 0.02: 0.9}
    r = retrain(run, Promotion(val=tiny_test, top=1, epochs=3, lr_grid=(0.005, 0.01, 0.02), seeds=2, device="cpu"),
                train_fn=fake_train(calls), evaluate_fn=fake_evaluate(seen, meta_val.get, test.get))
    assert set(r["chosen"].values()) == {"0.01"} and len(r["chosen"]) == 2
    assert r["grid"]["baseline"] == {f"{k:g}": v for k, v in meta_val.items()}
    grid_evals = [s for s in seen if s[2] == 1]       # grid: a third of 3 epochs
    final_evals = [s for s in seen if s[2] == 3]
    assert len(grid_evals) == 6 and {s[0] for s in grid_evals} == {"meta-val"}
    assert len(final_evals) == 4 and {s for s in final_evals} == {("test", 0.01, 3)}
    # done rows keep what compare needs: grid rows their AP in run.db, final rows a model, no optimiser
    rows = RunStore(run).retrained()
    assert all(r["checkpoint"] is None for r in rows if r["metrics"]["stage"] == "grid")
    assert sorted(p.parent.name.split("-")[0] for p in (run / "retrain").glob("*/*/last.pt")) == ["lr0.01"] * 4
    assert sorted(c.seed for c in calls if c.epochs == 3) == [0, 0, 1, 1]   # the same seeds for every arch


def test_each_architecture_keeps_its_own_optimiser_and_rate_from_a_mixed_grid(run, tiny_test):
    """A grid of SGD and AdamW points: meta-val prefers SGD 0.01 for the control and AdamW 4e-4 for
    the searched decoder, so each trains its final seeds with its own; rows keep their names."""
    calls, seen = [], []

    def evaluate(checkpoint, data, *, image_dir=None, device="cpu", latency_images=20, detections_out=None):
        config = load_checkpoint(checkpoint)["config"]
        control = config["genotype"]["space"] == "fpn-fcos"
        split = "test" if Path(data).name == "test.json" else "meta-val"
        seen.append((split, control, config["optimizer"], config["lr"]))
        ap = {(True, "sgd"): 0.3, (True, "adamw"): 0.2, (False, "sgd"): 0.1, (False, "adamw"): 0.25}[
            (control, config["optimizer"])]
        return {"AP": ap, "AP50": ap, "AP75": ap, "APs": ap, "APm": ap, "APl": -1, "params": 1, "flops": 1,
                "flops_input": [64, 64], "latency_ms": 1.0, "device": "cpu"}

    r = retrain(run, Promotion(val=tiny_test, top=1, epochs=3, lr_grid=(0.01, "adamw:4e-4"), seeds=2, device="cpu"),
                train_fn=fake_train(calls), evaluate_fn=evaluate)
    trial = next(name for name in r["chosen"] if name != "baseline")
    assert r["chosen"] == {"baseline": "0.01", trial: "adamw:0.0004"}
    assert r["grid"]["baseline"] == {"0.01": 0.3, "adamw:0.0004": 0.2}
    finals = sorted((s[1], s[2], s[3]) for s in seen if s[0] == "test")
    assert finals == [(False, "adamw", 4e-4)] * 2 + [(True, "sgd", 0.01)] * 2
    folders = sorted(p.parent.name.rsplit("-", 1)[0] for p in (run / "retrain").glob("*/*/last.pt"))
    assert folders == ["adamw-lr0.0004-e3-s0", "adamw-lr0.0004-e3-s1", "lr0.01-e3-s0", "lr0.01-e3-s1"]
    # the same run promoted again with SGD pinned for everyone: compare reports the latest recipe's
    # seeds, never a mean over both
    retrain(run, Promotion(val=tiny_test, top=1, epochs=3, lr=0.01, seeds=2, device="cpu"),
            train_fn=fake_train(calls), evaluate_fn=evaluate)
    trial_row = next(a for a in compare([run])["architectures"] if a["arch"] == trial)
    assert trial_row["optimizer"] == "sgd" and trial_row["AP"] == pytest.approx(0.1) and trial_row["seeds"] == 2
    # the mixed grid again: every row exists, nothing trains, and the choice (AdamW for the trial) is
    # what compare reports, although the SGD rows are the newer ones
    trained = len(calls)
    retrain(run, Promotion(val=tiny_test, top=1, epochs=3, lr_grid=(0.01, "adamw:4e-4"), seeds=2, device="cpu"),
            train_fn=fake_train(calls), evaluate_fn=evaluate)
    assert len(calls) == trained
    rows = {a["arch"]: a for a in compare([run])["architectures"]}
    assert (rows[trial]["optimizer"], rows[trial]["AP"]) == ("adamw", pytest.approx(0.25))
    assert (rows["baseline"]["optimizer"], rows["baseline"]["AP"]) == ("sgd", pytest.approx(0.3))
    per_seed = {a["arch"]: list(a["ap_by_seed"].values()) for a in compare([run])["architectures"]}
    assert per_seed == {"baseline": [pytest.approx(0.30)] * 2, trial: [pytest.approx(0.25)] * 2}  # one recipe's seeds
    with pytest.raises(SpecError, match="adam:1e-4"):
        retrain(run, Promotion(val=tiny_test, top=1, epochs=3, lr_grid=(0.01, "adam:1e-4"), device="cpu"))


def test_the_default_grid_offers_each_architecture_sgd_and_adamw(run, tiny_test):
    """Without --lr-grid every architecture tries FCOS's SGD rate and AdamW's rates on meta-val and
    keeps whichever optimiser does better for it; AdamW's rates follow the batch's square root."""
    from nascli.retrain import default_grid, reference_lr

    def evaluate(checkpoint, data, *, image_dir=None, device="cpu", latency_images=20, detections_out=None):
        config = load_checkpoint(checkpoint)["config"]
        control = config["genotype"]["space"] == "fpn-fcos"
        sgd = config["optimizer"] == "sgd"
        ap = (0.3 if sgd else 0.2) if control else (0.1 if sgd else 0.2 + config["lr"])  # trial: AdamW, fastest
        return {"AP": ap, "AP50": ap, "AP75": ap, "APs": ap, "APm": ap, "APl": -1, "params": 1, "flops": 1,
                "flops_input": [64, 64], "latency_ms": 1.0, "device": "cpu"}

    r = retrain(run, Promotion(val=tiny_test, top=1, epochs=3, seeds=1, device="cpu"),
                train_fn=fake_train([]), evaluate_fn=evaluate)
    trial = next(name for name in r["chosen"] if name != "baseline")
    labels = set(r["grid"]["baseline"])
    assert labels == set(r["grid"][trial]) and len(labels) == 4
    assert sum(label.startswith("adamw:") for label in labels) == 3  # the rest: one SGD rate
    assert r["chosen"]["baseline"] in labels and not r["chosen"]["baseline"].startswith("adamw:")
    assert r["chosen"][trial] == max((lb for lb in labels if lb.startswith("adamw:")), key=lambda lb: float(lb[6:]))
    for small in (2, 8):
        a, b = dict(default_grid(small)), default_grid(4 * small)
        assert [rate for name, rate in b if name == "adamw"] == pytest.approx(
            [2 * rate for name, rate in default_grid(small) if name == "adamw"], rel=1e-2)
        assert dict(b)["sgd"] == pytest.approx(4 * a["sgd"]) == pytest.approx(reference_lr(4 * small))


def test_extend_grid_doubles_an_edge_choice_until_it_stops_winning_on_meta_val(run, tiny_test):
    """--extend-grid: the trial's meta-val AP rises with AdamW's rate up to 1.6e-3, so from a grid
    ending at 4e-4 it tries 8e-4, 1.6e-3 and 3.2e-3 and keeps 1.6e-3; the control's best (SGD 0.01,
    its optimiser's only rate) is tried at 0.02, loses, and stays."""
    import math

    def evaluate(checkpoint, data, *, image_dir=None, device="cpu", latency_images=20, detections_out=None):
        config = load_checkpoint(checkpoint)["config"]
        control, sgd, lr = config["genotype"]["space"] == "fpn-fcos", config["optimizer"] == "sgd", config["lr"]
        if control:
            ap = 0.3 - 5 * (lr - 0.01) if sgd else 0.1
        else:
            ap = 0.05 if sgd else 0.3 - 0.01 * abs(math.log2(lr / 1.6e-3))
        return {"AP": ap, "AP50": ap, "AP75": ap, "APs": ap, "APm": ap, "APl": -1, "params": 1, "flops": 1,
                "flops_input": [64, 64], "latency_ms": 1.0, "device": "cpu"}

    r = retrain(run, Promotion(val=tiny_test, top=1, epochs=3, lr_grid=(0.01, "adamw:2e-4", "adamw:4e-4"), seeds=1,
                               device="cpu", extend_grid=4), train_fn=fake_train([]), evaluate_fn=evaluate)
    trial = next(name for name in r["chosen"] if name != "baseline")
    assert r["chosen"] == {"baseline": "0.01", trial: "adamw:0.0016"}
    assert set(r["grid"]["baseline"]) == {"0.01", "adamw:0.0002", "adamw:0.0004", "0.02"}
    assert set(r["grid"][trial]) == {"0.01", "adamw:0.0002", "adamw:0.0004", "adamw:0.0008", "adamw:0.0016",
                                     "adamw:0.0032"}


def test_a_killed_grid_resumes_without_redoing_finished_rows(run, tiny_test):
    calls, seen = [], []
    rates = {0.005: 0.2, 0.01: 0.3}
    train_ok = fake_train(calls)

    def dies_on_third(config, resume=False, on_progress=None):
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the grid
        train_ok(config, resume, on_progress)

    with pytest.raises(KeyboardInterrupt):
        retrain(run, Promotion(val=tiny_test, top=1, epochs=3, lr_grid=tuple(rates), seeds=1, device="cpu"),
                train_fn=dies_on_third, evaluate_fn=fake_evaluate(seen, rates.get, rates.get))
    status = sorted(r["status"] for r in RunStore(run).retrained())
    assert status == ["done", "done", "training"]
    before = len(calls)
    r = retrain(run, Promotion(val=tiny_test, top=1, epochs=3, lr_grid=tuple(rates), seeds=1, device="cpu"),
                train_fn=train_ok, evaluate_fn=fake_evaluate(seen, rates.get, rates.get))
    assert len(calls) - before == 2 + 2  # the grid's two remaining rows, then one final seed per arch
    assert all(x["status"] == "done" for x in r["rows"]) and len(r["rows"]) == 6


def test_an_architecture_diverging_at_every_rate_is_failed_not_a_crash(run, tiny_test):
    calls, seen = [], []
    ok = fake_train(calls)

    def diverge_trials(config, resume=False, on_progress=None):
        if config.genotype["space"] != "fpn-fcos":
            raise TrainingDiverged("loss became nan")
        ok(config, resume, on_progress)

    rates = {0.005: 0.2, 0.01: 0.3}
    r = retrain(run, Promotion(val=tiny_test, top=1, epochs=3, lr_grid=tuple(rates), seeds=2, device="cpu"),
                train_fn=diverge_trials, evaluate_fn=fake_evaluate(seen, rates.get, rates.get))
    failed = [x for x in r["rows"] if x["metrics"]["arch"] != "baseline" and x["metrics"]["stage"] == "final"]
    assert len(failed) == 1 and failed[0]["status"] == "failed" and "every rate" in failed[0]["metrics"]["reason"]
    c = compare([run])
    arch = [a for a in c["architectures"] if a["arch"] != "baseline"][0]
    assert arch["status"] == "failed" and "AP" not in arch
    assert "no promoted architecture finished" in c["test_verdict"][str(run)]["text"]


def test_diverging_architecture_is_a_failed_row_not_a_crash(run, tiny_test):
    def diverge_trials(config, resume=False, on_progress=None):
        if config.genotype["space"] != "fpn-fcos":
            raise TrainingDiverged("loss became nan")
        return train(config, resume, on_progress)

    r = retrain(run, Promotion(val=tiny_test, top=1, epochs=1, lr=0.01, seeds=1, device="cpu"), train_fn=diverge_trials)
    assert [x["status"] for x in r["rows"]] == ["done", "failed"]
    c = compare([run])
    failed = [x for x in c["rows"] if x["status"] == "failed"][0]
    assert "nan" in failed["reason"] and "AP" not in failed


def test_retrain_resumes_after_kill_9(run, tiny_test):
    """The process kills itself right after the first epoch's checkpoint; the rerun continues."""
    script = f"""
import os, signal
from nascli.retrain import Promotion, retrain
def die(event):
    if event["epoch"] == 2:
        os.kill(os.getpid(), signal.SIGKILL)
retrain({str(run)!r}, Promotion(val={str(tiny_test)!r}, top=0, epochs=3, lr=0.01, seeds=1, device="cpu"),
        on_progress=die)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert proc.returncode == -9
    [last] = (run / "retrain" / "baseline").glob("*/last.pt")
    killed = load_checkpoint(last)
    assert killed["epoch"] == 1
    assert RunStore(run).retrained()[0]["status"] == "training"
    r = retrain(run, Promotion(val=tiny_test, top=0, epochs=3, lr=0.01, seeds=1, device="cpu"))
    final = load_checkpoint(last)
    assert final["epoch"] == 3 and r["rows"][0]["status"] == "done"
    assert final["history"][0] == killed["history"][0]  # epoch 1 was not trained again


def test_retrain_arch_and_cli_errors(run, run_cli, tmp_path, tiny_test, tiny_coco):
    code, out, err = run_cli("retrain", run, "--top", "0", "--arch", tmp_path / "missing.json", "--epochs", 1,
                             "--val", tiny_test)
    assert code == 2 and "missing.json: genotype file not found" in err
    code, out, err = run_cli("retrain", tmp_path / "nowhere", "--top", "1")
    assert code == 2 and "run.db" in err
    code, out, err = run_cli("retrain", run, "--top", "0", "--val", tiny_test, "--lr-grid", "0.01,fast")
    assert code == 2 and "--lr-grid: '0.01,fast'" in err
    code, out, _ = run_cli("retrain", run, "--top", "0", "--arch", "zoo:fpn-fcos", "--epochs", 1, "--lr", 0.01,
                           "--seeds", 1, "--device", "cpu", "--val", tiny_test, "--json")
    assert code == 0 and [x["metrics"]["arch"] for x in json.loads(out)["rows"]] == ["baseline", "zoo-fpn-fcos"]


def test_a_grid_without_a_meta_val_asks_for_one(run_cli, tmp_path, tiny_test, tiny_checkpoint):
    code, _, err = run_cli("retrain", tmp_path / "new", "--top", "0", "--arch", "zoo:fpn-fcos", "--checkpoint",
                           tiny_checkpoint, "--val", tiny_test, "--epochs", 1)
    assert code == 2 and "give --select-val META_VAL.json, or pin one rate with --lr" in err


def test_retrain_of_given_architectures_checks_its_inputs_before_creating_a_run(run_cli, tmp_path, tiny_test,
                                                                              tiny_checkpoint):
    """`retrain NEW --arch ...` makes a run folder; a bad genotype, a missing --checkpoint or an
    unreadable one is a one-line error that leaves no folder behind."""
    new = tmp_path / "new"
    (tmp_path / "bad.json").write_text('{"space": "nas-fcos", "fpn": [[9, 9, 9, 9, 9]]}')
    (tmp_path / "junk.pt").write_bytes(b"junk")
    for args, message in ((["--arch", tmp_path / "bad.json", "--checkpoint", tiny_checkpoint], "bad.json: field"),
                          (["--arch", "zoo:fpn-fcos"], "no search here to take it from"),
                          (["--arch", "zoo:fpn-fcos", "--checkpoint", tmp_path / "junk.pt"], "junk.pt: not a readable"),
                          (["--arch", "zoo:fpn-fcos", "--checkpoint", tiny_checkpoint, "--val", tiny_test.parent / "train.json"],
                           "images the baseline")):
        code, _, err = run_cli("retrain", new, "--top", "0", "--val", tiny_test, *args)
        assert code == 2 and message in err, err
        assert not new.exists()


def test_retrain_refuses_to_evaluate_where_the_search_selected(run, run_cli, tiny_coco):
    code, _, err = run_cli("retrain", run, "--top", "1", "--epochs", 1)
    assert code == 2 and "give --val TEST.json" in err
    code, _, err = run_cli("retrain", run, "--top", "1", "--epochs", 1, "--val", tiny_coco[1])
    assert code == 2 and "shares 4 images with the search's meta-val" in err
    # nor on the images the baseline trained on (its checkpoint records them): meta-train is refused too
    code, _, err = run_cli("retrain", run, "--top", "1", "--epochs", 1, "--val", tiny_coco[0])
    assert code == 2 and "shares 12 images with the images the baseline" in err and "train.json" in err
    assert not (run / "retrain").exists()  # refused before any training


# ---------------------------------------------------------------- compare


def add_final(store, arch, seed, ap, checkpoint, reward=None, trial=None, flops=1e9, **metrics):
    """A finished final-stage row as retrain records it."""
    store.set_retrained(f"{arch}/lr0.01-e1-s{seed}", trial, zoo.FPN_FCOS.to_json(), reward, "done", checkpoint,
                        {"arch": arch, "stage": "final", "lr": 0.01, "epochs": 1, "seed": seed, "split": "test",
                         "AP": ap, "AP50": ap, "flops": flops, "params": 1, "latency_ms": 1.0, **metrics})


def test_test_verdict_pairs_seeds_and_uses_the_t_threshold(run, tiny_test):
    """Control 20/22/21 AP, trial-1 +1.5/+1.4/+1.6 on the same seeds: mean +1.5, sd 0.1, se 0.0577,
    threshold t(0.975, 2)·se = 4.303·0.0577 = 0.25 AP -> beats (p = 0.0007, within Holm's 0.025/2).
    trial-2 +3/-1/+1: mean +1, sd 2, threshold 4.97 -> does not."""
    retrain(run, Promotion(val=tiny_test, top=0, epochs=1, lr=0.01, seeds=1, device="cpu"))
    ckpt = RunStore(run).retrained()[0]["checkpoint"]
    store = RunStore(run, create=False)
    store.db.execute("DELETE FROM retrained")
    store.db.commit()
    control = {0: 0.20, 1: 0.22, 2: 0.21}
    for seed, ap in control.items():
        add_final(store, "baseline", seed, ap, ckpt)
        add_final(store, "trial-1", seed, ap + {0: 0.015, 1: 0.014, 2: 0.016}[seed], ckpt, trial=1)
        add_final(store, "trial-2", seed, ap + {0: 0.03, 1: -0.01, 2: 0.01}[seed], ckpt, trial=2)
    store.close()
    v = compare([run])["test_verdict"][str(run)]
    one, two = v["per_arch"]["trial-1"], v["per_arch"]["trial-2"]
    assert one["n"] == 3 and one["difference"] == pytest.approx(1.5)
    assert one["threshold"] == pytest.approx(scipy.stats.t.ppf(0.975, 2) * 0.1 / 3 ** 0.5, rel=1e-4)
    assert one["holm"] is True and one["family"] == 2 and "Holm over 2 architectures" in v["text"]
    assert one["beats"] is True and two["beats"] is False
    assert v["beats_control"] is True and v["text"].startswith("on test, trial-1 beats the control by +1.5 AP")
    archs = {a["arch"]: a for a in compare([run])["architectures"]}
    assert archs["baseline"]["AP"] == pytest.approx(0.21) and archs["baseline"]["AP_std"] == pytest.approx(0.01)
    assert archs["trial-1"]["seeds"] == 3
    # beyond noise but below the gain that counts as a win: reported as such, not as a win
    strict = compare([run], min_gain=2.0)["test_verdict"][str(run)]
    assert strict["beats_control"] is False and strict["per_arch"]["trial-1"]["beyond_noise"] is True
    assert "2 AP that counts as a win" in strict["text"]


def test_a_win_of_one_architecture_alone_is_no_win_after_holm_over_two(run, tiny_test):
    """trial-1 +1.5/+1.0/+2.0 over the control: one-sided p = 0.0176, a win tested alone (< 0.025).
    Beside a noisy trial-2 (+3/-1/+1, p = 0.24) Holm's ladder starts at trial-1 with 0.025/2 and
    stops: no win. Beside a strong trial-2 (+1.0/+1.1/+0.9, p = 0.0016) trial-2 takes the first step
    (<= 0.025/2) and trial-1 the second (<= 0.025/1): both pass - Holm is not Bonferroni."""
    retrain(run, Promotion(val=tiny_test, top=0, epochs=1, lr=0.01, seeds=1, device="cpu"))
    ckpt = RunStore(run).retrained()[0]["checkpoint"]

    def verdict(second: dict):
        store = RunStore(run, create=False)
        store.db.execute("DELETE FROM retrained")
        store.db.commit()
        for seed, ap in {0: 0.20, 1: 0.22, 2: 0.21}.items():
            add_final(store, "baseline", seed, ap, ckpt)
            add_final(store, "trial-1", seed, ap + {0: 0.015, 1: 0.010, 2: 0.020}[seed], ckpt, trial=1)
            if second:
                add_final(store, "trial-2", seed, ap + second[seed], ckpt, trial=2)
        store.close()
        return compare([run])["test_verdict"][str(run)]

    alone = verdict({})
    assert alone["beats_control"] is True and alone["per_arch"]["trial-1"]["p"] == pytest.approx(
        scipy.stats.ttest_rel([0.215, 0.23, 0.23], [0.2, 0.22, 0.21], alternative="greater").pvalue, rel=1e-4)
    with_noise = verdict({0: 0.03, 1: -0.01, 2: 0.01})
    one = with_noise["per_arch"]["trial-1"]
    assert one["beyond_noise"] is True and one["holm"] is False and with_noise["beats_control"] is False
    assert "no architecture beats the control after Holm over 2 architectures" in with_noise["text"]
    # its threshold (1.24 AP at sd 0.5) is above the 1 AP that counts: the verdict says what it would take
    from nascli.stats import seeds_for_power

    needed = seeds_for_power(0.5, 1.0, 0.025 / 2)
    assert needed > 3 and f"80 % power needs about {needed} seeds" in with_noise["text"]
    with_strong = verdict({0: 0.010, 1: 0.011, 2: 0.009})
    assert with_strong["per_arch"]["trial-1"]["holm"] is True and with_strong["per_arch"]["trial-2"]["holm"] is True


def test_a_seed_win_needs_the_image_bootstrap_above_zero(run, tiny_test):
    """retrain keeps each final row's test detections; the verdict resamples the test images (the
    same draws for both arms and every seed). Seed APs +1.5 beyond noise over the control: with
    detections that find every object where the control's find one image's, the interval is above 0 and
    it wins; with the control's own detections the interval is [0, 0] and it does not."""
    from nascli.data.coco import load_coco

    retrain(run, Promotion(val=tiny_test, top=0, epochs=1, lr=0.01, seeds=1, device="cpu"))
    [row] = RunStore(run).retrained()
    ckpt = Path(row["checkpoint"])
    assert (ckpt.parent / row["metrics"]["detections"]).is_file()  # kept: the bootstrap needs no model
    gt = load_coco(tiny_test, usable_boxes=True)
    every = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
             for a in gt.dataset["annotations"]]
    first = min(gt.getImgIds())  # of 4 test images: a draw of that image alone is 1 in 256
    few = [d for d in every if d["image_id"] == first]
    for name, dets in (("every.json", every), ("few.json", few)):
        (ckpt.parent / name).write_text(json.dumps(dets))

    def verdict(arm_detections: str):
        store = RunStore(run, create=False)
        store.db.execute("DELETE FROM retrained")
        store.db.commit()
        for seed, ap in {0: 0.20, 1: 0.22, 2: 0.21}.items():
            add_final(store, "baseline", seed, ap, str(ckpt), detections="few.json", data=str(tiny_test))
            add_final(store, "trial-1", seed, ap + {0: 0.015, 1: 0.014, 2: 0.016}[seed], str(ckpt), trial=1,
                      detections=arm_detections, data=str(tiny_test))
        store.close()
        return compare([run])["test_verdict"][str(run)]

    wins = verdict("every.json")
    images = wins["per_arch"]["trial-1"]["images"]
    assert images["low"] > 0 and images["seeds"] == 3 and wins["beats_control"] is True
    assert "test images resampled: 95 % [+" in wins["text"]
    same = verdict("few.json")
    assert same["per_arch"]["trial-1"]["images"]["high"] == 0 and same["beats_control"] is False
    assert "no architecture beats the control on other images" in same["text"]


def test_test_verdict_needs_two_paired_seeds(run, tiny_test):
    retrain(run, Promotion(val=tiny_test, top=1, epochs=1, lr=0.01, seeds=1, device="cpu"))
    v = compare([run])["test_verdict"][str(run)]
    assert v["beats_control"] is None and "needs 2" in v["text"]


def test_compare_handles_failed_training_and_missing_rows(run, run_cli, tiny_test):
    retrain(run, Promotion(val=tiny_test, top=1, epochs=1, lr=0.01, seeds=1, device="cpu"))
    store = RunStore(run, create=False)
    g = zoo.FPN_FCOS.to_json()
    store.set_retrained("interrupted", None, g, -5.0, "training", str(run / "nope.pt"), {})
    store.set_retrained("diverged", 7, g, -4.0, "failed", None, {"reason": "loss became nan"})
    store.set_retrained("deleted", 8, g, -3.0, "done", str(run / "gone.pt"), {"AP": 0.9, "flops": 1})
    store.close()
    c = compare([run])
    status = {x["arch"]: x["status"] for x in c["architectures"]}
    assert status["interrupted"] == "training" and status["diverged"] == "failed" and status["deleted"] == "missing"
    fid = c["fidelity"][str(run)]
    assert fid["n"] == 2 and fid["tau_interval"] is None and set(fid["architectures"]) == {"baseline", [n for n in status if n.startswith("trial")][0]}
    assert any(x["pareto"] for x in c["architectures"] if x["status"] == "done")
    code, out, _ = run_cli("compare", run)
    assert code == 0 and "diverged" in out and "needs 3+" in out and "test verdict" in out  # no tau over 2 points
    assert (run / "compare.png").stat().st_size > 1000
    code, out, _ = run_cli("compare", run, "--json")
    assert code == 0 and len(json.loads(out)["rows"]) == 5


def test_compare_of_a_run_without_retraining(searched_run, run_cli):
    c = compare([searched_run])
    assert c["rows"] == [] and c["fidelity"][str(searched_run)]["kendall_tau"] is None


def test_fidelity_over_five_architectures_of_known_order(run, tiny_test):
    """Proxy rewards rising -5..-1 against mean APs .10 .30 .20 .40 .35 (two seeds each, +-0.02):
    8 concordant pairs and 2 discordant of 10, so tau = 0.6; rank differences 0, 1, 1, 1, 1, so
    rho = 1 - 6·4/120 = 0.8. Failed and unfinished rows stay out of the count."""
    retrain(run, Promotion(val=tiny_test, top=0, epochs=1, lr=0.01, seeds=1, device="cpu"))
    ckpt = RunStore(run).retrained()[0]["checkpoint"]
    store = RunStore(run, create=False)
    store.db.execute("DELETE FROM retrained")
    store.db.commit()
    g = zoo.FPN_FCOS.to_json()
    for k, (reward, ap) in enumerate(zip([-5.0, -4.0, -3.0, -2.0, -1.0], [0.10, 0.30, 0.20, 0.40, 0.35])):
        for seed, noise in ((0, -0.02), (1, 0.02)):
            add_final(store, "baseline" if k == 0 else f"arch-{k}", seed, ap + noise, ckpt, reward=reward,
                      trial=k or None, flops=1e9 * (k + 1), params=10 - k)
    store.set_retrained("diverged", 9, g, 10.0, "failed", None, {"reason": "loss became nan"})
    store.close()
    fid = compare([run])["fidelity"][str(run)]
    assert fid["n"] == 5
    assert fid["kendall_tau"] == pytest.approx(0.6) and fid["spearman_rho"] == pytest.approx(0.8)
    lo, hi = fid["tau_interval"]  # 5 architectures: the bootstrap interval is given, and is wide
    assert -1 <= lo < 0.6 < hi <= 1 and hi - lo > 0.5
    # ranking by cost alone: FLOPs rise with the proxy here (tau 0.6), parameters fall (-0.6)
    assert fid["baselines"]["flops"] == pytest.approx(0.6) and fid["baselines"]["params"] == pytest.approx(-0.6)


def test_a_moved_run_folder_is_compared_and_resumed_where_it_now_is(run, tiny_test, tmp_path, monkeypatch):
    import shutil

    retrain(run, Promotion(val=tiny_test, top=0, epochs=1, lr=0.01, seeds=1, device="cpu"))
    ap = compare([run])["architectures"][0]["AP"]
    (tmp_path / "elsewhere").mkdir()
    moved = shutil.move(str(run), str(tmp_path / "elsewhere" / "moved"))
    monkeypatch.chdir(tmp_path / "elsewhere")  # and looked at from another folder, by a relative path
    c = compare([Path("moved")])
    assert c["architectures"][0]["status"] == "done" and c["architectures"][0]["AP"] == ap
    assert Path(c["rows"][0]["checkpoint"]).is_file() and Path(moved) in Path(c["rows"][0]["checkpoint"]).resolve().parents

    def refuse(*a, **k):
        raise AssertionError("retrained again")
    again = retrain(Path("moved"), Promotion(val=tiny_test, top=0, epochs=1, lr=0.01, seeds=1, device="cpu"),
                    train_fn=refuse)
    assert again["rows"][0]["status"] == "done"


def test_seeds_auto_counts_from_meta_val_noise_before_any_test(run, tiny_test):
    """`--seeds auto`: each architecture's chosen point trained again with the next seed on meta-val;
    the paired meta-val differences set the count before a test row exists. A steady trial (its
    meta-val AP 1.0 point above the control's at both seeds) needs the minimum 2; a noisy one
    (+3 then -1 points: sd 2.83) needs more than the cap of 5, and says so."""
    from nascli.retrain import AUTO_SEEDS_CAP

    def run_with(noisy: bool, folder):
        seen = []

        def evaluate(checkpoint, data, *, image_dir=None, device="cpu", latency_images=20, detections_out=None):
            config = load_checkpoint(checkpoint)["config"]
            control = config["genotype"]["space"] == "fpn-fcos"
            split = "test" if Path(data).name == "test.json" else "meta-val"
            seen.append((split, config["seed"]))
            first = config["seed"] == 0
            ap = 0.30 if control else 0.31 if not noisy else (0.33 if first else 0.29)
            return {"AP": ap, "AP50": ap, "AP75": ap, "APs": ap, "APm": ap, "APl": -1, "params": 1, "flops": 1,
                    "flops_input": [64, 64], "latency_ms": 1.0, "device": "cpu"}

        import shutil
        copy = folder / "run"
        shutil.copytree(run, copy)
        r = retrain(copy, Promotion(val=tiny_test, top=1, epochs=3, lr_grid=(0.01, 0.02), seeds="auto", device="cpu"),
                    train_fn=fake_train([]), evaluate_fn=evaluate)
        first_test = next(i for i, (split, _) in enumerate(seen) if split == "test")
        assert all(split == "meta-val" for split, _ in seen[:first_test])  # decided before test was read
        assert ("meta-val", 1) in seen[:first_test]
        return r

    steady = run_with(False, run.parent / "steady")
    assert steady["auto_seeds"]["seeds"] == 2 and steady["seeds"] == [0, 1]
    noisy = run_with(True, run.parent / "noisy")
    auto = noisy["auto_seeds"]
    assert auto["sd"] == pytest.approx(2 * 2 ** 0.5) and auto["seeds"] == AUTO_SEEDS_CAP
    assert len(noisy["seeds"]) == AUTO_SEEDS_CAP and "capped at 5" in auto["why"]


# ---------------------------------------------------------------- a promotion beyond one machine


def evaluate_with_detections(seen, meta_val_ap, test_ap):
    """fake_evaluate that also writes a test row's detections, as the real one does."""
    evaluate = fake_evaluate(seen, meta_val_ap, test_ap)

    def with_detections(checkpoint, data, *, detections_out=None, **kw):
        metrics = evaluate(checkpoint, data, **kw)
        if detections_out is not None:
            seed = load_checkpoint(checkpoint)["config"]["seed"]
            Path(detections_out).write_text(json.dumps([{"image_id": 1, "category_id": 1,
                                                         "bbox": [1, 2, 3, 4], "score": 0.5 + seed / 10}]))
        return metrics
    return with_detections


def test_a_promotion_resumes_on_another_machine_from_its_ledger(searched_run, tmp_path, tiny_test):
    """Rows kept in --ledger rebuild the promotion in a fresh copy of the run (a new machine)
    without training: the same choices, APs, verdict and detections; final rows get stand-in
    checkpoints that time but refuse to evaluate. Changed data trains again."""
    import shutil

    from nascli.errors import CheckpointError
    from nascli.evaluate import load_detector

    ledger, rates = tmp_path / "ledger", {0.005: 0.2, 0.01: 0.3}
    first, calls, seen = shutil.copytree(searched_run, tmp_path / "here"), [], []
    job = dict(val=tiny_test, top=1, epochs=3, lr_grid=tuple(rates), seeds=2, device="cpu", ledger=ledger)
    done = retrain(first, Promotion(**job),
                   train_fn=fake_train(calls), evaluate_fn=evaluate_with_detections(seen, rates.get, rates.get))
    kept = json.loads((ledger / "rows.json").read_text())["rows"]
    assert len(kept) == len(done["rows"]) == 8 and len(calls) == 8
    assert sorted(k.split()[0] for k in kept) == sorted(r["name"] for r in done["rows"])
    assert {v["status"] for v in kept.values()} == {"done"} and done["ledger_not_reused"] == {}

    def refuse(*a, **k):
        raise AssertionError("trained again")
    elsewhere = shutil.copytree(searched_run, tmp_path / "elsewhere")  # the run as a new machine rebuilds it
    again = retrain(elsewhere, Promotion(**job), train_fn=refuse, evaluate_fn=refuse)
    assert again["chosen"] == done["chosen"] == {"baseline": "0.01", again["rows"][-1]["metrics"]["arch"]: "0.01"}
    assert [(r["name"], r["metrics"]["AP"]) for r in again["rows"]] == [(r["name"], r["metrics"]["AP"]) for r in done["rows"]]
    verdicts = [compare([run])["test_verdict"][str(run)] for run in (first, elsewhere)]
    assert verdicts[0]["per_arch"] == verdicts[1]["per_arch"]
    for row in (r for r in again["rows"] if r["metrics"]["stage"] == "final"):
        original = Path(next(r for r in done["rows"] if r["name"] == row["name"])["checkpoint"])
        stand_in = Path(row["checkpoint"])
        assert (stand_in.parent / "detections.json").read_bytes() == (original.parent / "detections.json").read_bytes()
        with pytest.raises(CheckpointError, match="stand_in"):
            load_detector(stand_in)
        model, ckpt = load_detector(stand_in, stand_in_ok=True)  # the architecture, for timing
        assert ckpt["history"] == load_checkpoint(original)["history"] and sum(p.numel() for p in model.parameters()) > 0
    timed = compare([elsewhere], latency_images=2)["architectures"]  # the stand-ins time, interleaved
    assert len(timed) == 2 and all(a["latency"]["interleaved"] and a["latency"]["latency_ms"] > 0 for a in timed)

    other_test = tmp_path / "test.json"  # the same images, another file: not the rows' test split
    data = json.loads(Path(tiny_test).read_text())
    other_test.write_text(json.dumps({**data, "info": {**data["info"], "note": "edited"}}))
    third, calls = shutil.copytree(searched_run, tmp_path / "third"), []
    r = retrain(third, Promotion(**{**job, "val": other_test}),
                train_fn=fake_train(calls), evaluate_fn=evaluate_with_detections([], rates.get, rates.get))
    assert len(calls) == 8 and len(r["ledger_not_reused"]) == 8
    assert set(map(tuple, r["ledger_not_reused"].values())) == {("test",)}  # says why they were not reused
    assert len(json.loads((ledger / "rows.json").read_text())["rows"]) == 16  # the first rows are kept too


def test_training_is_bit_identical_across_runs_of_one_seed(tiny_coco, tiny_config, tmp_path):
    """What lets a ledger's rows be reused on another machine: the baseline rebuilt with the same
    seed has the same weights (cache.format.tensors_digest, the ledger's baseline digest)."""
    from nascli.cache.format import tensors_digest as weights_digest

    digests = []
    for k in range(2):
        train(tiny_config(tiny_coco[0], tmp_path / str(k), epochs=1))
        digests.append(weights_digest(load_checkpoint(tmp_path / str(k) / "last.pt")["model"]))
    assert digests[0] == digests[1]
    train(tiny_config(tiny_coco[0], tmp_path / "other-seed", epochs=1, seed=1))
    assert weights_digest(load_checkpoint(tmp_path / "other-seed" / "last.pt")["model"]) != digests[0]
