"""SP-NAS's search: the morphism strategy (Algorithm 1) on a toy reward with a known optimum, the
backbone proxy's weight inheritance, and a real search on cached image crops that resumes exactly."""

import json
import math

import numpy as np
import pytest
import torch

from nascli.spaces import spnas
from nascli.spaces.spnas import RESNET18, Genotype, Serial
from nascli.strategies.morphism import MorphismStrategy

START = Genotype(serial=str(RESNET18)).to_json()


def _toy_reward(g: Genotype) -> float:
    """Best with 4 blocks in stage 3 and a parallel subnet on stage 4: a known optimum."""
    serial = Serial.parse(g.serial)
    score = -abs(len(serial.stages[2]) - 4) - 0.1 * len(serial.codes)
    return score + (0.5 if g.parallel and g.parallel[3] == 1 else 0.0)


def _run(strategy, reward=_toy_reward, stop_after=None):
    asked = []
    while stop_after is None or len(asked) < stop_after:
        out = strategy.ask(1)
        if not out:
            break
        asked.append(out[0])
        strategy.tell(out[0], reward(out[0]))
    return asked


def test_morphism_follows_algorithm_1_on_a_toy_reward():
    options = dict(proposals=3, n_stuck=3, reignitions=1, n_stuck_parallel=6, parallel_share=0.3)
    strategy = MorphismStrategy(spnas.Space(), seed=3, trials=40, start=START, **options)
    asked = _run(strategy)
    by_tag = {g.tag: g for g in asked}
    assert asked[0].serial == str(RESNET18) and not asked[0].morphs and not asked[0].parent
    best_reward, best_tag = _toy_reward(asked[0]), asked[0].tag
    for g in asked[1:]:
        assert g.parent in by_tag  # every candidate starts from a trained one's weights
        parent = by_tag[g.parent]
        steps = [m for m in g.morphs if m[0] in ("swap", "expand")]
        assert g.serial == str(spnas.morphed_serial(Serial.parse(parent.serial), steps))
        assert Serial.parse(g.serial).problem() is None
    steps = strategy.trajectory
    accepted = [s["reward"] for s in steps if s["step"] not in ("reignite",)]
    assert all(b > a for a, b in zip(accepted, accepted[1:]))  # only improvements are kept
    assert any(s["step"] == "reignite" for s in steps)  # after n_stuck failures in a row
    assert any(g.parallel for g in asked)  # the parallel level came last ...
    first_parallel = next(i for i, g in enumerate(asked) if g.parallel)
    assert all(g.parallel for g in asked[first_parallel:]) and not any(g.parallel for g in asked[:first_parallel])
    assert len(asked) <= 40 and strategy.ask(1) == []  # ... and the search ended by its own rule
    assert best_reward < max(s["reward"] for s in steps) and best_tag != steps[-1]["tag"]
    keys = [(g.serial, tuple(g.parallel)) for g in asked if not g.morphs or g.morphs[-1][0] != "reignite"]
    assert len(keys) == len(set(keys))  # no architecture trained twice


def test_morphism_state_resumes_to_the_same_asks():
    options = dict(proposals=3, n_stuck=3, reignitions=1, n_stuck_parallel=4)
    whole = _run(MorphismStrategy(spnas.Space(), seed=5, trials=20, start=START, **options))
    first = MorphismStrategy(spnas.Space(), seed=5, trials=20, start=START, **options)
    head = _run(first, stop_after=8)
    state = json.loads(json.dumps(first.state_dict()))  # plain data: survives the run database
    second = MorphismStrategy(spnas.Space(), seed=5, trials=20, start=START, **options)
    second.load_state_dict(state)
    assert [g.to_json() for g in head + _run(second)] == [g.to_json() for g in whole]


def test_a_failed_candidate_is_never_kept():
    strategy = MorphismStrategy(spnas.Space(), seed=0, trials=12, start=START, proposals=3, n_stuck=30)
    _run(strategy, reward=lambda g: None if g.morphs else 1.0)
    assert [s["step"] for s in strategy.trajectory] == ["start"]


@pytest.mark.parametrize("bad", [{"serial": "BB(11)"}, {"parallel": [0, 0, 9, 0]}, {"morphs": [["grow", 1]]},
                                 {"tag": "../x"}, {"morphs": [["swap", 2]]}])
def test_genotype_fields_are_checked_in_one_line(bad):
    from nascli.errors import SpecError

    data = {**json.loads(START), **bad}
    with pytest.raises(SpecError) as e:
        Genotype.from_json(json.dumps(data), "g.json")
    assert str(e.value).startswith("g.json") and "\n" not in str(e.value)


def test_the_start_detector_is_the_baseline_and_expand_keeps_the_whole_detector(tiny_checkpoint, tmp_path):
    from nascli.methods.sp_nas import inherit, start_detector
    from nascli.trial import normalize
    from nascli.runtime import load_checkpoint
    from nascli.train import build_detector

    ckpt = load_checkpoint(tiny_checkpoint)
    baseline = build_detector(ckpt["model_args"]).eval()
    baseline.load_state_dict(ckpt["model"])
    genotype, start = start_detector(ckpt)
    start.eval()
    images = torch.randint(0, 256, (2, 3, 64, 64)).float()
    with torch.no_grad():
        ours = start({"images": images})
        theirs = baseline(normalize(images))
    for key in ours:
        for a, b in zip(ours[key], theirs[key]):
            torch.testing.assert_close(a, b)
    grown = inherit(Genotype(**{**genotype.__dict__, "tag": "x", "morphs": (("expand", 3), ("expand", 7))}),
                    ckpt, tmp_path).eval()
    with torch.no_grad():
        after = grown({"images": images})
    for key in ours:
        for a, b in zip(ours[key], after[key]):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


SPEC = """space: sp-nas
epochs: 1
lr: 0.01
batch_size: 4
rescore_top: 1
rescore_seeds: 2
morphism: {proposals: 2, n_stuck: 2, reignitions: 0, n_stuck_parallel: 2, parallel_share: 0.3}
"""


def test_spnas_search_on_image_crops_resumes_exactly_and_retrains(tiny_image_cache, tiny_test, tmp_path, run_cli):
    from nascli.search import run_search
    from nascli.store import RunStore

    spec = tmp_path / "sp.yaml"
    spec.write_text(SPEC)
    whole = run_search("sp-nas", spec, tiny_image_cache, 4, tmp_path / "whole", seed=0)
    calls = []

    def dies_in_trial_two(*args, **kwargs):  # the control's 2 seeds, trial 1, then cut
        from nascli.methods.sp_nas import evaluate

        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return evaluate(*args, **kwargs)

    from functools import partial

    with pytest.raises(KeyboardInterrupt):
        run_search("sp-nas", spec, tiny_image_cache, 4, tmp_path / "cut", seed=0,
                   evaluate_fn=partial(dies_in_trial_two, weights_dir=tmp_path / "cut" / "weights"))
    resumed = run_search("sp-nas", None, None, None, tmp_path / "cut", resume=True)

    def rows(run):
        store = RunStore(run, create=False)
        out = [(t.id, t.genotype, t.reward) for t in store.trials()], store.scores()
        store.close()
        return out

    assert rows(tmp_path / "whole") == rows(tmp_path / "cut")
    assert whole["verdict"]["beats_control"] is not None and resumed["top"][0]["mean"] is not None
    parents = {json.loads(g)["parent"] for _, g, _ in rows(tmp_path / "whole")[0]} - {""}
    assert parents and all((tmp_path / "whole" / "weights" / f"{p}.pt").is_file() for p in parents)
    from nascli.report import trajectory

    for run in ("whole", "cut"):  # only accepted candidates keep weights: the rest can never be a parent
        accepted = {step["tag"] for step in trajectory(tmp_path / run)}
        kept = {p.stem for p in (tmp_path / run / "weights").glob("*.pt")}
        assert kept == accepted and len(rows(tmp_path / run)[0]) - 1 > len(accepted), (kept, accepted)
    noise = whole["noise"]
    assert noise is not None and noise > 0  # the re-scoring seeds draw the batch order: real noise

    code, out, _ = run_cli("runs", "show", tmp_path / "whole")
    assert code == 0 and "BB(11,d1,d1,d1)" in out and "accepted steps" in out
    assert (tmp_path / "whole" / "trajectory.png").read_bytes()[:4] == b"\x89PNG"

    from nascli.retrain import Promotion, retrain

    best = json.loads(whole["top"][0]["genotype"])
    r = retrain(tmp_path / "whole", Promotion(top=1, val=tiny_test, epochs=1, lr=0.01, seeds=1, device="cpu"))
    assert [row["status"] for row in r["rows"]] == ["done", "done"]
    grown = json.loads(r["rows"][1]["genotype"])  # from the baseline's weights by the whole lineage
    by_tag = {json.loads(g)["tag"]: json.loads(g) for _, g, _ in rows(tmp_path / "whole")[0][1:]}
    chain, g = [], best
    while g["parent"]:
        chain, g = g["morphs"] + chain, by_tag[g["parent"]]
    assert grown["serial"] == best["serial"] and grown["parent"] == "" and grown["morphs"] == chain
    assert json.loads(r["rows"][0]["genotype"])["serial"] == "BB(11,d1,d1,d1)"

    # the report carries the method's own panel: the trajectory's table and figure, nothing written into the run
    (tmp_path / "whole" / "trajectory.png").unlink()
    code, out, _ = run_cli("report", tmp_path / "whole", "--out", tmp_path / "sp.html")
    page = (tmp_path / "sp.html").read_text()
    assert code == 0 and "accepted steps (the search&#x27;s trajectory)" in page and "BB(11,d1,d1,d1)" in page
    assert "trajectory: every candidate" in page and not (tmp_path / "whole" / "trajectory.png").exists()


def test_spnas_search_needs_an_image_cache(tiny_cache, tmp_path):
    from nascli.errors import SpecError
    from nascli.search import run_search

    spec = tmp_path / "sp.yaml"
    spec.write_text(SPEC)
    with pytest.raises(SpecError, match="--levels images"):
        run_search("sp-nas", spec, tiny_cache, 3, tmp_path / "r")


def _basic_block_params(cin: int, planes: int, stride: int) -> int:
    """An oracle apart from torchvision: two 3x3 convs and two BN (weight, bias), plus a 1x1
    projection with its BN where the stride or the width changes."""
    n = 9 * cin * planes + 9 * planes * planes + 4 * planes
    return n + (cin * planes + 2 * planes if stride != 1 or cin != planes else 0)


def test_spnet_voc_from_the_zoo_has_the_papers_stages_and_parameters():
    from nascli.spaces import zoo

    g = zoo.get("zoo:spnet-voc")
    assert g.serial == "BB(11d,1111,d11111111,d111,1,1111)" and g.parallel == (0, 0, 0, 0, 0, 1)
    net = spnas.build_backbone(g).eval()
    serial, expected, cin, planes, widths = Serial.parse(g.serial), 0, 64, 64, []
    expected += 3 * 49 * 64 + 2 * 64  # the ResNet stem it grew from
    for s, stage in enumerate(serial.stages):
        stage_params = 0
        for k, code in enumerate(stage):
            planes *= 2 if code == "d" else 1
            stage_params += _basic_block_params(cin, planes, 2 if s > 0 and k == 0 else 1)
            cin = planes
        expected += stage_params * (1 + g.parallel[s])
        if g.parallel[s]:
            expected += g.parallel[s] * (planes * widths[-1] + widths[-1])  # 1x1 conv (with bias) up
        widths.append(planes)
    assert sum(p.numel() for p in net.parameters()) == expected
    with torch.no_grad():
        out = net(torch.zeros(1, 3, 256, 256))
    assert [(k, v.shape[1], v.shape[-1]) for k, v in out.items()] == \
        [(f"c{s + 2}", w, math.ceil(256 / 2 ** (s + 2))) for s, w in enumerate(widths)]
    assert widths == [128, 128, 256, 512, 512, 512]
