"""Training (checkpoints, resume), pycocotools evaluation, prediction."""

import json

import numpy as np
import pytest
import torch

from nascli.evaluate import METRICS, coco_ap, evaluate, predict
from nascli.runtime import load_checkpoint
from nascli.train import TrainingDiverged, build_detector, lr_at, train


def test_checkpoint_records_what_rebuilds_the_model(tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint)
    assert ckpt["epoch"] == 2 and len(ckpt["history"]) == 2
    assert ckpt["model_args"]["num_classes"] == 3 and ckpt["classes"]["names"] == ["circle", "square", "triangle"]
    assert all(np.isfinite(h["cls"]) for h in ckpt["history"])


def test_resume_equals_an_uninterrupted_run(tiny_coco, tiny_config, tmp_path):
    train(tiny_config(tiny_coco[0], tmp_path / "straight", epochs=2))
    train(tiny_config(tiny_coco[0], tmp_path / "resumed", epochs=1))  # "killed" after epoch 1
    summary = train(tiny_config(tiny_coco[0], tmp_path / "resumed", epochs=2), resume=True)
    assert [h["epoch"] for h in summary["history"]] == [1, 2]
    a = load_checkpoint(tmp_path / "straight/last.pt")["model"]
    b = load_checkpoint(tmp_path / "resumed/last.pt")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_frozen_backbone_epochs_train_the_decoder_alone_first(tiny_coco, tiny_config, tiny_checkpoint, tmp_path):
    """LP-FT: during the frozen epoch only the decoder moves (the backbone's weights stay the
    baseline's exactly); from the next epoch the backbone trains too. Resuming after the frozen
    epoch continues the same schedule."""
    start = {k: v for k, v in load_checkpoint(tiny_checkpoint)["model"].items() if k.startswith("backbone.")}
    cfg = dict(init_from=str(tiny_checkpoint), frozen_backbone_epochs=1)
    train(tiny_config(tiny_coco[0], tmp_path / "frozen", epochs=1, **cfg))
    after_1 = load_checkpoint(tmp_path / "frozen/last.pt")["model"]
    weights = [k for k in start if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert all(torch.equal(after_1[k], start[k]) for k in weights)
    assert any(not torch.equal(after_1[k], v) for k, v in load_checkpoint(tiny_checkpoint)["model"].items()
               if k.startswith("decoder."))
    train(tiny_config(tiny_coco[0], tmp_path / "frozen", epochs=2, **cfg), resume=True)
    after_2 = load_checkpoint(tmp_path / "frozen/last.pt")["model"]
    assert sum(not torch.equal(after_2[k], start[k]) for k in weights) > len(weights) // 2


def test_adamw_is_the_optimiser_when_asked(tiny_coco, tiny_config, tmp_path):
    train(tiny_config(tiny_coco[0], tmp_path / "adamw", optimizer="adamw", lr=1e-4))
    state = load_checkpoint(tmp_path / "adamw/last.pt")["optimizer"]["state"]
    assert state and all("exp_avg_sq" in s for s in state.values())


def test_interrupted_checkpoint_write_leaves_the_last_one_intact(tiny_coco, tiny_config, tmp_path, monkeypatch):
    train(tiny_config(tiny_coco[0], tmp_path, epochs=1))
    before = (tmp_path / "last.pt").read_bytes()

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tiny_coco[0], tmp_path, epochs=2), resume=True)
    assert (tmp_path / "last.pt").read_bytes() == before
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1


def test_divergence_is_reported_not_crashed(tiny_coco, tiny_config, tmp_path):
    with pytest.raises(TrainingDiverged, match="loss became"):
        train(tiny_config(tiny_coco[0], tmp_path, lr=1e12, warmup_iters=0, epochs=2))


def test_lr_schedule_warms_up_then_decays():
    lrs = [lr_at(i, 100, 0.1, 10) for i in range(101)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[10] == pytest.approx(0.1)
    assert lr_at(0, 100, 0.1, 10, start=1 / 3) == pytest.approx(0.1 / 3)  # FCOS's warm-up ratio
    assert lr_at(5, 100, 0.1, 10, start=1 / 3) == pytest.approx(0.1 * (1 / 3 + 2 / 3 * 0.5))
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:11])) and all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[100] == pytest.approx(0.0, abs=1e-12)


def test_evaluate_reports_coco_metrics_and_cost(tiny_checkpoint, tiny_coco):
    r = evaluate(tiny_checkpoint, tiny_coco[1], device="cpu", latency_images=2)
    for m in METRICS:
        assert r[m] == -1 or 0 <= r[m] <= 1  # -1: pycocotools' "no object of that size"
    # AP averages IoU .50:.95, so it can exceed neither AP50; AP75 is the stricter AP50
    assert r["AP"] <= r["AP50"] and r["AP75"] <= r["AP50"]
    ckpt = load_checkpoint(tiny_checkpoint)
    model = build_detector(ckpt["model_args"])
    assert r["params"] == sum(p.numel() for p in model.parameters())
    assert r["images"] == 4 and r["flops"] > 1e6 and r["latency_ms"] > 0


def test_coco_ap_is_one_for_perfect_detections_and_zero_for_none(tiny_coco):
    from nascli.data.coco import load_coco
    coco = load_coco(tiny_coco[1])
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in coco.anns.values()]
    assert coco_ap(coco, perfect)["AP"] == pytest.approx(1.0)
    assert coco_ap(coco, [])["AP50"] == 0.0


def test_predict_writes_results_and_pictures(tiny_checkpoint, tiny_coco, tmp_path):
    data = json.loads(tiny_coco[1].read_text())
    image_dir = data["info"]["image_dir"]
    images = [f"{image_dir}/{im['file_name']}" for im in data["images"][:2]]
    r = predict(tiny_checkpoint, images, tmp_path, device="cpu", score_thresh=0.0)
    results = json.loads((tmp_path / "detections.json").read_text())
    assert len(r["images"]) == 2 and all((tmp_path / p.split("/")[-1]).is_file() for p in r["images"])
    assert len(results) == r["count"]
    for d in results:
        x, y, w, h = d["bbox"]
        assert w >= 0 and h >= 0 and x + w <= 64.01 and y + h <= 64.01 and d["category_id"] in (1, 2, 3)


def test_a_write_interrupted_midway_leaves_the_previous_file(tmp_path):
    """What every checkpoint, table, ledger and json write relies on (nascli/files.py)."""
    from nascli.files import written_whole

    path = tmp_path / "sub" / "a.json"
    with written_whole(path) as tmp:
        tmp.write_text("old")
    with pytest.raises(KeyboardInterrupt), written_whole(path) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert path.read_text() == "old" and [p.name for p in path.parent.iterdir()] == ["a.json"]
    with written_whole(path) as tmp:
        tmp.write_text("new")
    assert path.read_text() == "new"
