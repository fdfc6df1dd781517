"""Latency: the median of many images, interleaved timing of several models, verdicts that name it."""

import time
from pathlib import Path

import pytest

from nascli.errors import SpecError
from nascli.latency import interleaved, measure, spread
from nascli.latency import parse_latency_target, within_target
from nascli.report import compare
from nascli.retrain import Promotion, retrain
from nascli.store import RunStore
from nascli.trial import TrialResult

from test_retrain import add_final, run, searched_run  # noqa: F401  (fixtures)


def sleeper(ms):
    return lambda x: time.sleep(ms / 1000)


def test_spread_is_the_median_and_quartiles_in_milliseconds():
    s = spread([0.001, 0.002, 0.003, 0.004, 0.100])  # one outlier: the median does not move
    assert s["latency_ms"] == pytest.approx(3.0) and s["latency_images"] == 5
    assert s["latency_p25_ms"] == pytest.approx(2.0) and s["latency_p75_ms"] == pytest.approx(4.0)


def test_measure_times_each_image_after_warm_up_and_records_threads():
    seen = []
    r = measure(lambda x: seen.append(x), [1, 2, 3], "cpu", images=7, warmup=2)
    assert seen == [1, 2, 3, 1, 2, 3, 1, 2, 3]  # 2 warm-up + 7 timed, cycling through the inputs
    assert r["latency_images"] == 7 and r["threads"] >= 1 and r["runtime"] == "torch" and r["processor"]


def test_interleaved_ratio_of_a_model_against_itself_is_one_and_of_a_slower_one_is_its_factor():
    import torch

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3))
    x = [torch.randn(1, 3, 48, 48)]
    r = interleaved({"baseline": net, "same": net, "slow": sleeper(60), "fast": sleeper(20)}, x, "cpu",
                    reference="baseline", images=30)
    same = r["models"]["same"]
    assert 0.8 < same["ratio"] < 1.25 and r["models"]["baseline"]["ratio"] == 1.0
    lo, hi = same["ratio_interval"]
    assert lo <= same["ratio"] <= hi
    # two arms against each other through the same reference: their medians' ratio is ~3 (sleeps long
    # enough that a loaded machine's few ms of oversleep keep it within the bounds)
    slow, fast = r["models"]["slow"], r["models"]["fast"]
    assert 2.4 < slow["latency_ms"] / fast["latency_ms"] < 3.6


def test_interleaved_needs_its_reference():
    with pytest.raises(ValueError, match="reference"):
        interleaved({"a": sleeper(1)}, [0], "cpu", reference="baseline", images=2)


@pytest.mark.parametrize("text, parsed", [("1.0x", (1.0, "x")), ("0.8X", (0.8, "x")), ("80ms", (80.0, "ms")),
                                          ("80", (80.0, "ms")), (None, None)])
def test_latency_target_parses(text, parsed):
    assert parse_latency_target(text) == parsed


@pytest.mark.parametrize("text", ["fast", "-1x", "0ms", "1.0xx"])
def test_a_bad_latency_target_is_one_line_naming_the_option(text):
    with pytest.raises(SpecError, match="--latency-target"):
        parse_latency_target(text)


def test_within_target_by_ratio_or_milliseconds():
    lat = {"ratio": 1.3, "latency_ms": 90.0}
    assert within_target(lat, "1.5x") is True and within_target(lat, "1.0x") is False
    assert within_target(lat, "100ms") is True and within_target(lat, "80ms") is False
    assert within_target(None, "1.0x") is None and within_target(lat, None) is None


def faked_promotion(run, tiny_test):
    """The control and trial-1 with three paired seeds (+1.5 AP, beyond noise), real checkpoints."""
    retrain(run, Promotion(val=tiny_test, top=0, epochs=1, lr=0.01, seeds=1, device="cpu"))
    ckpt = RunStore(run).retrained()[0]["checkpoint"]
    store = RunStore(run, create=False)
    store.db.execute("DELETE FROM retrained")
    store.db.commit()
    for seed, ap in {0: 0.20, 1: 0.22, 2: 0.21}.items():
        add_final(store, "baseline", seed, ap, ckpt, flops=2e9)
        add_final(store, "trial-1", seed, ap + {0: 0.015, 1: 0.010, 2: 0.020}[seed], ckpt, trial=1, flops=1e9)
    store.close()
    return ckpt


def test_a_win_over_the_latency_target_is_no_win_and_the_verdict_names_the_cost(run, tiny_test):
    ckpt = faked_promotion(run, tiny_test)
    store = RunStore(run, create=False)
    store.set_meta(latency={"threads": 1, "processor": "cpu", "checkpoints": {"baseline": ckpt, "trial-1": ckpt},
                            "models": {
        "baseline": {"latency_ms": 50.0, "ratio": 1.0, "ratio_interval": [1.0, 1.0], "latency_images": 30},
        "trial-1": {"latency_ms": 100.0, "ratio": 2.0, "ratio_interval": [1.9, 2.1], "latency_images": 30}}})
    store.close()
    free = compare([run])["test_verdict"][str(run)]
    assert free["beats_control"] is True
    assert "at 0.50× its FLOPs and 2.00× its latency (100.0 ms/image, 95 % 1.90-2.10, interleaved)" in free["text"]
    slow = compare([run], latency_target="1.0x")["test_verdict"][str(run)]
    assert slow["beats_control"] is False and "over the target" in slow["text"]
    assert slow["per_arch"]["trial-1"]["within_latency_target"] is False
    assert compare([run], latency_target="2.5x")["test_verdict"][str(run)]["beats_control"] is True
    store = RunStore(run, create=False)
    store.set_meta(latency_target="1.0x")  # what a search under a target records: the default for compare
    store.close()
    assert compare([run])["test_verdict"][str(run)]["beats_control"] is False


def test_compare_retimes_every_architecture_interleaved_and_keeps_it(run, tiny_test, run_cli):
    faked_promotion(run, tiny_test)
    c = compare([run], latency_images=4)
    lat = {a["arch"]: a["latency"] for a in c["architectures"]}
    assert lat["baseline"]["ratio"] == 1.0 and lat["trial-1"]["interleaved"] is True
    assert lat["trial-1"]["latency_images"] == 4 and lat["trial-1"]["threads"] >= 1
    kept = RunStore(run, create=False).meta()["latency"]
    assert set(kept["models"]) == {"baseline", "trial-1"} and kept["data"] == str(tiny_test)
    again = {a["arch"]: a["latency"] for a in compare([run])["architectures"]}  # no re-timing: the kept one
    assert again["trial-1"]["latency_ms"] == lat["trial-1"]["latency_ms"]
    store = RunStore(run, create=False)  # a timing of other checkpoints (a later retrain chose others) is stale
    store.set_meta(latency={**kept, "checkpoints": {**kept["checkpoints"], "trial-1": "elsewhere/last.pt"}})
    store.close()
    stale = {a["arch"]: a["latency"] for a in compare([run])["architectures"]}
    assert stale["trial-1"]["interleaved"] is False and stale["trial-1"]["ratio_interval"] is None
    store = RunStore(run, create=False)
    store.set_meta(latency=kept)
    store.close()
    code, out, _ = run_cli("compare", run, "--latency-images", "3")
    assert code == 0 and "× control" in out and "interleaved with the control" in out
    assert RunStore(run, create=False).meta()["latency"]["models"]["trial-1"]["latency_images"] == 3



# ---------------------------------------------------------------- the per-op table


def test_table_sum_of_a_tiny_decoder_is_near_its_measured_latency(tiny_checkpoint, tmp_path):
    """Loose bound, tiny shapes: the ops' sum (no correction) within a factor of 2 of the forward
    timed end to end, and a second trace times nothing new and sums the same keys."""
    import torch

    from nascli.latency_table import CandidateLatency

    cand = CandidateLatency.for_checkpoint(tiny_checkpoint, tmp_path)
    model = cand.detector(None)
    first = cand.table.trace(model, cand.example)
    assert first["new"] > 10 and first["ops"] >= first["new"]
    again = cand.table.trace(model, cand.example)
    assert again["new"] == 0 and again["sum_ms"] == first["sum_ms"] and again["ops"] == first["ops"]
    measured = measure(model, [cand.example], "cpu", images=30)["latency_ms"]
    assert measured / 2 < first["sum_ms"] < 2 * measured
    assert cand.size == (64, 64) and cand.example.shape == torch.Size([1, 3, 64, 64])


def test_a_decoder_traced_on_the_backbones_features_predicts_what_the_whole_detector_does(tiny_checkpoint, tmp_path):
    """Skipping a candidate over the target should cost a decoder's pass, not a backbone built and run
    again: the split trace sums the same ops as the whole detector's (to float order), for the
    control and for searched decoders of two spaces."""
    from nascli.latency_table import CandidateLatency, corrected

    cand = CandidateLatency.for_checkpoint(tiny_checkpoint, tmp_path)
    cand.table.fits[cand.context] = {"per_op": 0.01, "fixed": 1.0}
    genotypes = [None, *_sampled_decoders()]
    for g in genotypes:  # every op in the table first: a prediction then times nothing
        cand.table.trace(cand.detector(g), cand.example)
    for g in genotypes:
        whole = cand.table.trace(cand.detector(g), cand.example)
        assert whole["new"] == 0
        assert cand.predict(g) == pytest.approx(corrected(whole, cand.table.fits[cand.context]), rel=1e-9)
        assert cand.decoder_trace(g)["ops"] == whole["ops"]
    assert len({round(cand.predict(g), 6) for g in genotypes}) == len(genotypes)  # the decoders differ


def _sampled_decoders():
    from nascli.config import ProxySpec
    from nascli.spaces import space_for
    from nascli.strategies.random import RandomStrategy

    nas_fcos = ProxySpec(inputs=["c3", "c4", "c5"], width=8, fpn_ops=["sep3x3", "skip"], head_ops=["sep3x3", "skip"],
                         head_blocks=2)
    nas_fpn = ProxySpec(space="nas-fpn", inputs=["c3", "c4", "c5"], width=8, repeats=1)
    return [*RandomStrategy(space_for(nas_fcos), seed=1).ask(2), *RandomStrategy(space_for(nas_fpn), seed=1).ask(1)]


def test_an_in_place_op_is_timed_on_copies_so_the_traced_pass_is_unchanged(tmp_path):
    import torch

    from nascli.latency_table import LatencyTable

    class AddInPlace(torch.nn.Module):
        def forward(self, x):
            y = x.clone()
            y.add_(1.0)
            return y

    table = LatencyTable({"device": "cpu", "processor": "x", "threads": 1, "torch": "t", "runtime": "torch"})
    x = torch.zeros(1, 3, 4, 4)
    with torch.inference_mode():
        traced = table.trace(AddInPlace(), x)
        out = AddInPlace()(x)
    assert torch.equal(out, torch.ones_like(x)) and any("add_" in k for k in table.ops) and traced["ops"] >= 2


def test_the_table_file_is_per_machine_and_reloads(tiny_checkpoint, tmp_path):
    from nascli.latency_table import CandidateLatency, LatencyTable

    cand = CandidateLatency.for_checkpoint(tiny_checkpoint, tmp_path)
    cand.predict(None)
    path = cand.table.save()
    assert path.parent == tmp_path / "latency" and path.name == f"{LatencyTable.key(cand.table.env)}.json"
    again = LatencyTable.for_machine(tmp_path)
    assert again.ops == cand.table.ops
    other = LatencyTable.key({**cand.table.env, "threads": cand.table.env["threads"] + 1})
    assert other != LatencyTable.key(cand.table.env)  # another thread count never reads this table
    path.write_text('{"format": "nascli-latency-table/1", "ops": {')  # damaged (a kill mid-write elsewhere)
    assert LatencyTable.for_machine(tmp_path).ops == {}  # measured again, not an error


def test_calibration_fits_the_per_op_and_fixed_parts():
    from nascli.latency_table import LatencyTable

    traced = [{"sum_ms": 10.0, "ops": 100}, {"sum_ms": 20.0, "ops": 300}, {"sum_ms": 15.0, "ops": 200}]
    measured = [t["sum_ms"] + 0.01 * t["ops"] + 3.0 for t in traced]  # 10 µs an op, 3 ms fixed
    fit = LatencyTable.calibrate(traced, measured)
    assert fit["per_op"] == pytest.approx(0.01) and fit["fixed"] == pytest.approx(3.0) and fit["detectors"] == 3
    one = LatencyTable.calibrate(traced[:1], measured[:1])
    assert one["per_op"] == 0.0 and one["fixed"] == pytest.approx(4.0)
    noisy = [t["sum_ms"] - 0.01 * t["ops"] + 3.0 for t in traced]  # the fit's slope would be negative
    fit = LatencyTable.calibrate(traced, noisy)
    assert fit["per_op"] == 0.0 and fit["fixed"] == pytest.approx(1.0)  # the mean of what is left: 2, 0 and 1 ms
    loaded = [t["sum_ms"] * 0.3 for t in traced]  # ops timed alone read 3x slow: the fit would predict ~0 ms
    assert LatencyTable.calibrate(traced, loaded)["fixed"] == pytest.approx(-5.0)  # half the smallest sum


# ---------------------------------------------------------------- searching under a target


@pytest.fixture
def quick_calibration(monkeypatch):
    """A search's first calibration on 5 images a detector and 2 warm-up decoders (tests time nothing)."""
    import nascli.latency_table as lt

    monkeypatch.setattr(lt, "CALIBRATION_IMAGES", 5)
    monkeypatch.setattr(lt, "WARM_DECODERS", 2)


def test_a_search_under_a_latency_target_never_trains_a_candidate_over_it(tiny_cache, tiny_proxy, tmp_path,
                                                                           quick_calibration):
    from nascli.search import run_search
    from nascli.spaces import load_genotype
    from nascli.trial import TrialResult

    trained = []

    def fake(genotype, spec, cache, seed, data_seed=0):
        trained.append(genotype.to_json())
        return TrialResult("done", reward=-float(seed % 97), losses={"cls": 1.0})

    # random search asks RandomStrategy(space, seed).ask(1) over and over: its first 20 asks are known.
    # The target is their median predicted latency (from the table the search will read, beside the
    # cache), for a seed whose first ask is over it: so the search must skip, and half its asks pass.
    from nascli.config import ProxySpec, load_spec
    from nascli.search import control_genotype, latency_budget
    from nascli.spaces import space_for
    from nascli.strategies.random import RandomStrategy

    spec = load_spec(ProxySpec, tiny_proxy)
    space = space_for(spec)
    budget = latency_budget("1.0x", tiny_cache, control_genotype(spec, tiny_cache, tiny_proxy), space, 0)
    for seed in range(1, 30):
        asks = [budget.predict(g) for g in RandomStrategy(space, seed=seed).ask(20)]
        limit = sorted(asks)[10]
        if asks[0] > limit:
            break
    budget.candidates.table.save()
    target = f"{limit:.6f}ms"
    run = tmp_path / "run"
    r = run_search("random", tiny_proxy, tiny_cache, 4, run, evaluate_fn=fake, latency_target=target, seed=seed)
    store = RunStore(run, create=False)
    meta, rows = store.meta(), store.trials(control=False)
    assert meta["latency_target"] == target and meta["latency_limit_ms"] == pytest.approx(limit, abs=1e-5)
    skipped = [t for t in rows if t.metrics.get("skipped") == "latency"]
    done = [t for t in rows if t.status == "done"]
    assert len(done) == 4 and store.count() == 4  # skipped candidates are outside the budget
    assert skipped and rows[0].metrics.get("skipped") == "latency"  # the first ask was over the target
    for t in skipped:
        assert t.status == "failed" and t.told and t.metrics["predicted_latency_ms"] > meta["latency_limit_ms"]
        assert t.genotype not in trained and f"over the latency target {target}" in t.metrics["reason"]
    for t in done:
        assert t.metrics["predicted_latency_ms"] <= meta["latency_limit_ms"]
    control = load_genotype(store.control().genotype)
    assert all(load_genotype(g) == control or g in {t.genotype for t in done} for g in trained)
    assert r["skipped"] == len(skipped) and r["failed"] == 0
    assert Path(meta["latency_table"]).is_file() and Path(meta["latency_table"]).parent.parent == Path(tiny_cache).parent
    # resumed without the option it keeps its target; with another one it refuses
    with pytest.raises(SpecError, match=f"searched with {target}"):
        run_search("random", tiny_proxy, tiny_cache, None, run, resume=True, evaluate_fn=fake, latency_target="2x")
    again = run_search("random", tiny_proxy, tiny_cache, 5, run, resume=True, evaluate_fn=fake)
    assert again["latency_target"] == target and RunStore(run, create=False).count() == 5
    # runs show's figure gains a panel: reward against predicted latency, the target, the skipped
    from PIL import Image

    from nascli.report import reward_figure

    assert Image.open(reward_figure(run, tmp_path / "r.png")).width == 1200  # two panels (one: 700)


def test_a_strategy_that_finds_nothing_within_the_target_stops_and_says_so(tiny_cache, tiny_proxy, tmp_path,
                                                                        monkeypatch, quick_calibration):
    import nascli.search as search
    from nascli.trial import TrialResult

    monkeypatch.setattr(search, "MAX_SKIPS_IN_A_ROW", 5)
    trained = []
    r = search.run_search("random", tiny_proxy, tiny_cache, 3, tmp_path / "run", latency_target="0.01x",
                          evaluate_fn=lambda g, *a, **k: trained.append(g) or TrialResult("done", reward=-1.0))
    assert r["skipped"] == 5 and "5 candidates in a row were over the latency target 0.01x" in r["stopped"]
    assert trained and {g.space for g in trained} == {"fpn-fcos"}  # the control's seeds only: no candidate trained


def test_a_skip_is_told_the_worst_reward_made_worse_by_how_far_over_the_target():
    from nascli.search import skip_reward

    assert skip_reward(-8.0, 2.0) == -16.0 and skip_reward(0.4, 2.0) == pytest.approx(0.2)  # a loss, an AP
    assert skip_reward(-8.0, 1.1) > skip_reward(-8.0, 1.5) and skip_reward(None, 3.0) is None


def test_the_controller_learns_from_graded_skips_and_evolution_never_from_one(tiny_cache, tiny_proxy, tmp_path,
                                                                             quick_calibration):
    """Under a target the controller is told each skipped candidate's graded reward (the worst reward
    finished before it, made worse by its predicted ratio to the limit), recorded with the skip; the
    strategies that must never make a skip a parent are told nothing."""
    from nascli.config import ProxySpec, load_spec
    from nascli.search import control_genotype, latency_budget, run_search, skip_reward
    from nascli.spaces import space_for
    from nascli.strategies.controller import ControllerStrategy
    from nascli.strategies.evolution import EvolutionStrategy
    from nascli.strategies.random import RandomStrategy

    assert ControllerStrategy.graded_skips and not EvolutionStrategy.graded_skips and not RandomStrategy.graded_skips
    spec = load_spec(ProxySpec, tiny_proxy)
    space = space_for(spec)
    budget = latency_budget("1.0x", tiny_cache, control_genotype(spec, tiny_cache, tiny_proxy), space, 0)
    limit = sorted(budget.predict(g) for g in RandomStrategy(space, seed=1).ask(20))[10]
    budget.candidates.table.save()
    run = tmp_path / "run"
    run_search("nas-fcos", tiny_proxy, tiny_cache, 4, run, latency_target=f"{limit:.6f}ms",
               evaluate_fn=lambda g, spec, cache, seed, data_seed=0: TrialResult("done", reward=-1.0 - seed % 7))
    store = RunStore(run, create=False)
    rows = store.trials()  # the control first, then every trial in the order it was asked
    skipped = [t for t in rows if t.metrics.get("skipped") == "latency"]
    assert skipped, "the target skipped nothing: the test checks nothing"
    for t in skipped:
        worst = min(r.reward for r in rows if r.status == "done" and r.id < t.id)
        over = t.metrics["predicted_latency_ms"] / store.meta()["latency_limit_ms"]
        assert over > 1 and t.metrics["told_reward"] == pytest.approx(skip_reward(worst, over))
        assert t.metrics["told_reward"] < worst


def _auto_fpn_term(checkpoint, folder, layers=2, head_cells=1, limit_ms=100.0):
    from nascli.latency_table import CandidateLatency
    from nascli.methods.auto_fpn import latency_term
    from nascli.spaces import auto_fpn

    class Gate:  # what latency_term reads of a search's LatencyBudget
        candidates = CandidateLatency.for_checkpoint(checkpoint, folder)

    Gate.limit_ms = limit_ms
    space = auto_fpn.Space(auto_fpn.SpaceSpec(layers=layers, head_cells=head_cells, width=8))
    return Gate.candidates, space, latency_term(Gate, space)["latency"]


def test_auto_fpn_latency_term_equals_the_tables_sum_for_a_one_hot_alpha_and_is_differentiable(tiny_checkpoint,
                                                                                                 tmp_path):
    """Per edge as FBNet: with α one-hot on a genotype, the term's expected latency is the table's
    prediction of that genotype's promoted detector (traced whole, every op); and its gradient moves α
    towards a faster network."""
    import torch

    from nascli.latency_table import random_genotypes
    from nascli.spaces import auto_fpn

    cand, space, term = _auto_fpn_term(tiny_checkpoint, tmp_path, layers=3)
    net = auto_fpn.Supernet(space.spec, {"c3": 8, "c4": 8, "c5": 8}, 3)
    for genotype in random_genotypes(space, 4, seed=3):
        with torch.no_grad():
            net.alpha_neck.zero_().scatter_(-1, torch.tensor(genotype.neck).unsqueeze(-1), 1e3)
            net.alpha_head.zero_().scatter_(-1, torch.tensor(genotype.head).unsqueeze(-1), 1e3)
        assert term.expected_ms(net).item() == pytest.approx(cand.predict(genotype), rel=1e-4)
        assert term.expected_ms(net).item() == pytest.approx(term.fixed_ms + auto_fpn.edges_ms(genotype, term.edge_ms),
                                                             rel=1e-5)
    assert (term.edge_ms[0][..., 0] == 0).all() and (term.edge_ms[0][..., 1:] > 0).all()  # none is free
    with torch.no_grad():
        net.alpha_neck.normal_()
        net.alpha_head.normal_()
    before = term.expected_ms(net).item()
    (grad_neck, grad_head) = torch.autograd.grad(term(net), net.arch_parameters())
    assert torch.isfinite(grad_neck).all() and grad_neck.abs().sum() > 0 and grad_head.abs().sum() > 0
    with torch.no_grad():
        net.alpha_neck -= 10 * grad_neck / grad_neck.abs().max()
        net.alpha_head -= 10 * grad_head / grad_head.abs().max()
    assert term.expected_ms(net).item() < before


def test_auto_fpn_searches_under_a_latency_target(tiny_cache, tmp_path, quick_calibration):
    """The supernet's resource term becomes the expected latency, and a decoded network over the
    target is recorded as skipped, never scored: with a target nothing meets, no trial trains."""
    from nascli.search import run_search

    spec = tmp_path / "auto.yaml"
    spec.write_text("space: auto-fpn\ninputs: [c3, c4, c5]\nwidth: 8\nlayers: 1\nhead_cells: 1\n"
                    "darts: {batch_size: 4, alpha_start: 0.0, collapse_share: 1.0}\nrescore_top: 0\nrescore_seeds: 2\n")
    for target in ("1000x", "0.01x"):
        trained = []
        run = tmp_path / target
        run_search("auto-fpn", str(spec), tiny_cache, 2, run, latency_target=target,
                   evaluate_fn=lambda g, *a, **k: trained.append(g) or TrialResult("done", reward=-1.0))
        store = RunStore(run, create=False)
        meta, rows = store.meta(), store.trials(control=False)
        assert "expected latency once promoted" in meta["latency_term"] and len(rows) == 2
        if target == "1000x":
            assert all(t.status == "done" and t.metrics["predicted_latency_ms"] <= meta["latency_limit_ms"] for t in rows)
        else:
            assert all(t.metrics.get("skipped") == "latency" for t in rows)
            assert {g.space for g in trained} == {"fpn-fcos"}  # the control's seeds only


def test_the_baseline_of_a_cache_is_found_from_another_folder(tmp_path, monkeypatch):
    """cache-features records the checkpoint as it was given (relative to where it ran): a search
    started elsewhere finds it from the folders above the cache, and says so when it cannot."""
    import nascli.search as search

    checkpoint = tmp_path / "project" / "pipelines" / "x" / "baseline" / "last.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"")
    cache = tmp_path / "project" / "pipelines" / "x" / "cache" / "k.h5"
    monkeypatch.setattr(search, "describe", lambda c: {"sources": {"checkpoint": "pipelines/x/baseline/last.pt"}})
    monkeypatch.chdir(tmp_path)
    assert search.baseline_of(cache) == checkpoint
    monkeypatch.setattr(search, "describe", lambda c: {"sources": {"checkpoint": "gone/last.pt"}})
    with pytest.raises(SpecError, match="field 'sources.checkpoint'.*gone/last.pt"):
        search.baseline_of(cache)


def test_the_misses_that_end_a_search_grow_with_how_rarely_it_finds_the_target():
    """200 in a row before any find; after, ten times the asks a find has cost: random's 15 in 1,000
    on BCCD's space (67 asks a find) is stopped after 667 misses, not at an ordinary gap of 200."""
    from nascli.search import MAX_SKIPS_IN_A_ROW, skips_allowed

    assert skips_allowed(0, 5000) == MAX_SKIPS_IN_A_ROW == 200
    assert skips_allowed(15, 1000) == 667 and skips_allowed(9, 261) == 290
    assert skips_allowed(20, 94) == 200  # a strategy that finds it often keeps the floor
