"""A baseline that learns, or says it did not: train watches its classification loss and scores
the result; cache-features and search refuse a backbone that learned nothing unless --force;
`train --lr-grid` chooses the recipe on meta-val."""

import h5py
import json

import pytest

from nascli.runtime import load_checkpoint
from nascli.train import TrainingDiverged, diverging, learned_nothing, train

#: The classification loss of a real one-class baseline that diverged (issue 46), epoch by epoch.
SEEN = [0.84, 0.47, 0.36, 0.52, 0.42, 1.02, 0.60, 2.49, 2.07, 3.37, 1.22, 0.99]


def _history(cls):
    return [{"epoch": i + 1, "cls": v} for i, v in enumerate(cls)]


def test_the_watch_stops_where_the_loss_stays_three_times_its_best():
    stops = [n for n in range(1, len(SEEN) + 1) if diverging(_history(SEEN[:n]))]
    assert stops[0] == 9  # 2.49 and 2.07 both over 3 x 0.36; the lone 1.02 of epoch 6 was not enough
    assert "from 0.36 (epoch 3) to 2.49, 2.07 (epochs 8-9)" in diverging(_history(SEEN[:9]))
    assert diverging(_history([1.0, 0.5, 0.4, 0.45, 0.38, 0.41, 1.3])) is None  # one bad epoch is noise


def test_a_diverging_rate_stops_train_and_nothing_caches_or_searches_it(tiny_coco, tiny_config, tmp_path, run_cli):
    with pytest.raises(TrainingDiverged, match=r"classification loss rose from .* over 3x its best.*--lr-grid"):
        train(tiny_config(tiny_coco[0], tmp_path / "hot", epochs=6, lr=4.0, warmup_iters=12))
    last = tmp_path / "hot" / "last.pt"
    ckpt = load_checkpoint(last)
    assert ckpt["diverged"] and ckpt["epoch"] < 6 and "diverged" in learned_nothing(ckpt)
    code, _, err = run_cli("cache-features", "--data", tiny_coco[0], "--val", tiny_coco[1], "--checkpoint", last,
                           "--crop", 64, "--out", tmp_path / "cache", "--device", "cpu")
    assert code == 2 and "its training diverged" in err and "--force" in err
    assert len([line for line in err.splitlines() if line.strip() and "busy" not in line]) == 1
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_a_baseline_scoring_zero_is_refused_and_force_overrides(tiny_coco, tiny_checkpoint, tiny_proxy, tmp_path,
                                                                 run_cli):
    """The tiny baseline (2 epochs on 12 images) records 0 AP on its training images."""
    evaluation = load_checkpoint(tiny_checkpoint)["evaluation"]
    assert evaluation["split"] == "training" and evaluation["images"] == 12 and evaluation["AP"] < 0.01
    args = ("cache-features", "--data", tiny_coco[0], "--val", tiny_coco[1], "--checkpoint", tiny_checkpoint,
            "--crop", 64, "--out", tmp_path / "cache", "--device", "cpu")
    code, _, err = run_cli(*args)
    assert code == 2 and "scored 0.0 AP on 12 training images" in err
    code, out, _ = run_cli(*args, "--force", "--json")
    cache = json.loads(out)["path"]
    assert code == 0
    with h5py.File(cache, "r+") as f:  # a cache made before the guard: no record that the user chose
        sources = json.loads(f.attrs["sources"])
        f.attrs["sources"] = json.dumps({**sources, "forced": None})
    search = ("search", "--method", "random", "--proxy", tiny_proxy, "--cache", cache, "--trials", 1)
    code, _, err = run_cli(*search, "--run", tmp_path / "refused")
    assert code == 2 and "holds its features (--force searches them anyway)" in err
    assert not (tmp_path / "refused").exists()
    code, _, err = run_cli(*search, "--run", tmp_path / "forced", "--force", "--json")
    assert code == 0, err


def test_lr_grid_chooses_on_meta_val_trains_the_choice_and_reuses_finished_runs(tiny_coco, tiny_config, tmp_path,
                                                                                 monkeypatch):
    """Meta-val AP faked per rate (the tiny set scores 0 everywhere): the best point is trained for
    the whole schedule, a diverging point scores nothing, and a rerun trains nothing again."""
    import nascli.train as training

    fake_ap = {0.01: 0.10, 0.001: 0.30, 0.02: 0.20}
    monkeypatch.setattr(training, "score", lambda model, config, device: {
        "split": "meta-val", "data": config.val, "images": 4, "AP": fake_ap[config.lr], "AP50": 0.0})
    config = tiny_config(tiny_coco[0], tmp_path / "base", epochs=3, val=str(tiny_coco[1]))
    grid = (("sgd", 0.01), ("adamw", 0.001), ("sgd", 0.02), ("sgd", 4.0))
    hot = training.train

    def train_or_diverge(cfg, **kw):
        if cfg.lr == 4.0:
            raise TrainingDiverged("diverged")
        return hot(cfg, **kw)

    monkeypatch.setattr(training, "train", train_or_diverge)
    r = training.train_with_grid(config, grid)
    assert r["grid"] == {"0.01": 0.10, "adamw:0.001": 0.30, "0.02": 0.20, "4": None} and r["chosen"] == "adamw:0.001"
    final = load_checkpoint(tmp_path / "base" / "last.pt")
    assert (final["config"]["optimizer"], final["config"]["lr"], final["epoch"]) == ("adamw", 0.001, 3)
    assert load_checkpoint(tmp_path / "base" / "grid" / "0.02" / "last.pt")["epoch"] == 1  # a third of 3
    assert json.loads((tmp_path / "base" / "grid" / "choice.json").read_text())["chosen"] == "adamw:0.001"
    calls = []
    monkeypatch.setattr(training, "train", lambda cfg, **kw: calls.append(cfg.lr) or train_or_diverge(cfg, **kw))
    assert training.train_with_grid(config, grid)["chosen"] == "adamw:0.001" and calls == [4.0]
