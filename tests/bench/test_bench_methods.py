"""`make methods` (benchmarks/bench_methods.py): every method searched and promoted alike, and a
killed table that resumes to the same numbers as an unkilled one."""

import json
import os
from pathlib import Path

import pytest

from benchmarks import bench_methods as bm
from nascli.store import RunStore


def _comparable(result: dict) -> list[dict]:
    """The table without what depends on the clock or the folder."""
    drop = {"run", "search_minutes", "wall_minutes"}
    rows = []
    for r in result["rows"]:
        row = {k: v for k, v in r.items() if k not in drop}
        for arm in ("winner", "control"):
            if row[arm]:
                row[arm] = {k: v for k, v in row[arm].items() if k not in ("latency_ms", "latency")}
        rows.append(row)
    return rows


def test_two_tiny_methods_killed_and_resumed_give_the_unkilled_table(tiny_cache, tiny_test, tmp_path, monkeypatch):
    from conftest import TINY_PROXY

    proxy = tmp_path / "tiny.yaml"
    proxy.write_text(TINY_PROXY.replace("rescore_top: 2", "rescore_top: 1"))
    inputs = bm.Inputs(str(tiny_cache), None, str(tiny_test))
    kw = dict(methods=["random", "nas-fcos"], minutes=None, trials=1, epochs=1, seeds=1, lr=0.01,
              proxies={"random": proxy, "nas-fcos": proxy})
    whole = bm.run(inputs, tmp_path / "whole", **kw)

    promote, calls = bm.promote, []

    def killed_at_the_second_promotion(run, *args, **kwargs):
        calls.append(run)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return promote(run, *args, **kwargs)

    monkeypatch.setattr(bm, "promote", killed_at_the_second_promotion)
    with pytest.raises(KeyboardInterrupt):
        bm.run(inputs, tmp_path / "killed", **kw)
    monkeypatch.setattr(bm, "promote", promote)
    resumed = bm.run(inputs, tmp_path / "killed", **kw)

    assert [r["method"] for r in whole["rows"]] == ["random", "nas-fcos"]
    assert _comparable(resumed) == _comparable(whole)
    # every step's clock is in the ledger, the killed call's included
    assert resumed["wall_minutes"] > 0 and all(r["wall_minutes"]["search"] > 0 for r in resumed["rows"])
    assert set(bm.wall_seconds(tmp_path / "killed")) == {"random search", "random promotion",
                                                        "nas-fcos search", "nas-fcos promotion"}
    for r in whole["rows"]:  # each row: a searched and promoted winner, its control, both verdicts
        assert r["trials"] == r["asked"] == 1 and r["winner"]["seeds"] == r["control"]["seeds"] == 1
        assert r["proxy_verdict"].startswith("on the proxy") and r["test_verdict"].startswith(("on test", "no test"))
    # the hand design both decoder searches share is trained once: nas-fcos's control rows are random's
    store = RunStore(tmp_path / "whole" / "nas-fcos", create=False)
    control = [r for r in store.retrained() if r["metrics"].get("arch") == "baseline"]
    store.close()
    assert len(control) == 1
    for r in control:
        theirs = Path(r["checkpoint"].replace(str(tmp_path / "whole" / "nas-fcos"), str(tmp_path / "whole" / "random")))
        assert os.path.samefile(r["checkpoint"], theirs)
    assert whole["rows"][1]["control"]["AP"] == whole["rows"][0]["control"]["AP"]
    lines = bm.table_lines(whole)
    assert lines[2].startswith("| random |") and lines[3].startswith("| nas-fcos |") and lines[4] == ""
    assert lines[5].startswith("| strategy vs random |") and len(lines) == 7 + len(whole["strategies_vs_random"])
    # under a latency target most asks are skipped untrained: the table says how many were trained
    skipping = {**whole, "rows": [dict(whole["rows"][0], trials=58, asked=3130)]}
    assert "| 58 of 3,130 asked |" in bm.table_lines(skipping)[2] and "| 1 |" in lines[2]


def test_the_wall_clock_of_each_step_is_summed_over_a_kill_and_its_resume(tmp_path):
    now = iter([0.0, 30.0, 100.0, 145.0, 200.0, 201.0])
    clock = lambda: next(now)  # noqa: E731
    with pytest.raises(KeyboardInterrupt), bm.timed(tmp_path / "w", "nas-fcos search", clock):
        raise KeyboardInterrupt  # killed after 30 s
    with bm.timed(tmp_path / "w", "nas-fcos search", clock):
        pass  # resumed: 45 s more
    with bm.timed(tmp_path / "w", "nas-fcos promotion", clock):
        pass
    assert bm.wall_seconds(tmp_path / "w") == {"nas-fcos search": 75.0, "nas-fcos promotion": 1.0}


def _preset(lam, means, std=0.05, stopped=""):
    top = [{"trial": k + 1, "mean": m, "std": std, "seeds": 3} for k, m in enumerate(means)]
    return {"lambda": lam, "top": top, "stopped": stopped}


def test_auto_fpn_presets_within_noise_are_called_indistinguishable_and_a_collapse_is_named():
    runs = {Path("small"): _preset(0.2, [-13.32]), Path("middle"): _preset(0.02, [-13.30]),
            Path("big"): _preset(0.002, [-13.5], stopped="collapse: after epoch 3 none + skip are 90%")}
    winner, note = bm.choose_preset(runs)
    assert winner == Path("middle")
    assert note.startswith("presets indistinguishable on the proxy: the best λ 0.02 leads λ 0.2 by +0.0200")
    assert "λ 0.002 stopped on collapse" in note
    runs[Path("middle")] = _preset(0.02, [-12.0])  # now far beyond the noise
    assert bm.choose_preset(runs) == (Path("middle"), "λ 0.002 stopped on collapse: after epoch 3 none + skip are 90%")
    assert bm.choose_preset({Path("nas-fcos"): _preset(None, [-12.0])}) == (Path("nas-fcos"), "")


def _search_json(controller, random, std=0.05):
    arm = lambda mean: {"mean": mean, "std": std, "seeds": 3, "trials": 60}  # noqa: E731
    return json.dumps({"nas-fcos": arm(controller), "random": arm(random),
                       "controller_vs_random": {"difference": controller - random, "two_se": 0.1, "text": "t"}})


def test_strategies_against_random_take_each_search_seed_and_their_distribution(tmp_path):
    for name, (c, r) in {"search.json": (-12.5, -12.8), "search-seed2.json": (-12.6, -12.8),
                         "search-seed1.json": (-12.7, -12.8), "search-seed1-retrain.json": (0, 0)}.items():
        (tmp_path / name).write_text(_search_json(c, r) if "retrain" not in name else "{}")
    rows = [{"method": "nas-fcos", "best_mean": -12.0, "best_std": 0.1, "best_seeds": 3},
            {"method": "random", "best_mean": -12.1, "best_std": 0.1, "best_seeds": 3}]
    out = bm.strategies_vs_random(rows, 6, tmp_path)
    assert [s["budget"] for s in out] == ["6 search minutes each (this table)", "60 trials each, search seed 0",
                                          "60 trials each, search seed 1", "60 trials each, search seed 2",
                                          "over 3 search seeds"]
    assert out[0]["text"] == "the controller's best ties with random's by +0.1 (2 s.e. 0.1633)"
    over = out[-1]
    assert over["difference"] == pytest.approx(0.2) and over["interval"][0] < 0 < over["interval"][1]
    assert "ties with" in over["text"]  # differences 0.3, 0.1, 0.2: sd 0.1, t(2) 4.30 -> ±0.248
    (tmp_path / "search-seed1.json").write_text(_search_json(-12.6, -12.8))  # 0.3, 0.2, 0.2: consistent
    assert "over 3 search seeds the controller's best beats random's" in bm.strategies_vs_random([], None, tmp_path)[-1]["text"]
    arm = lambda mean, std: {"mean": mean, "std": std, "seeds": 3, "trials": 40}  # noqa: E731
    (tmp_path / "detnas.json").write_text(json.dumps({"evolution": arm(0.10, 0.001), "random": arm(0.12, 0.001)}))
    last = bm.strategies_vs_random([], None, tmp_path)[-1]
    assert last["budget"] == "40 paths each, one supernet" and last["text"].startswith("evolution's best loses to random's")


def test_a_proxy_measured_unable_to_separate_candidates_is_not_promoted(tmp_path, monkeypatch):
    (tmp_path / "reward_noise-nas-fpn.json").write_text('{"ap": {"signal_to_noise": 1.07}, "loss": {"signal_to_noise": 1.58}}')
    monkeypatch.setattr(bm, "__file__", str(tmp_path / "bench_methods.py"))
    assert bm.proxy_signal("nas-fpn") == pytest.approx(1.58)  # the better of its two rewards
    assert bm.proxy_signal("nas-fcos") is None  # never measured: promoted as usual
    (tmp_path / "proxy-study-nas-fpn.json").write_text(
        '{"chosen": null, "designs": {"as shipped": {"ratio": {"ap": 1.1, "loss": 2.4}}, "1 pyramid": {"ratio": {"ap": 2.8, "loss": 0.5}}}}')
    assert bm.proxy_signal("nas-fpn") == pytest.approx(2.4)  # a study wins: its shipped design, the one run


def test_the_proxy_study_keeps_the_cheapest_design_that_separates_candidates(tmp_path, monkeypatch):
    """Designs whose spread/noise is 1.5, 4 (slow) and 3.5 (fast): the fast one of the two above 3
    is kept; a killed study resumes without re-measuring the designs it finished."""
    from benchmarks import bench_reward_noise as rn

    spreads = {"a": (1.5, 1.0), "b": (4.0, 9.0), "c": (3.5, 2.0)}  # (means apart in noise widths, seconds)
    measured = []

    def fake_scores(cache, proxy, genotypes, seeds, seed, overrides=None):
        name = overrides["name"]
        measured.append(name)
        apart, seconds = spreads[name]
        noise = [-0.1, 0.0, 0.1]  # std 0.1 within every genotype
        raw = {f"g{k}": {"ap": [k * apart * 0.1 + e for e in noise], "loss": [k * 0.01 + e for e in noise],
                         "seconds": [seconds] * 3} for k in range(4)}
        return raw

    monkeypatch.setattr(rn, "scores", fake_scores)
    monkeypatch.setattr(rn, "DESIGNS", {n: {"name": n} for n in spreads})
    out = tmp_path / "study.json"
    r = rn.study("cache.h5", "nas-fpn", 3, 3, 0, out)
    assert r["chosen"] == "c" and measured == ["a", "b", "c"]
    ratios = {n: d["ratio"]["ap"] for n, d in r["designs"].items()}
    assert ratios["a"] < 3 < ratios["c"] < ratios["b"]
    assert rn.study("cache.h5", "nas-fpn", 3, 3, 0, out)["chosen"] == "c" and measured == ["a", "b", "c"]


def test_proxies_are_named_per_method_and_a_malformed_pair_is_refused():
    assert bm.parse_proxies(["nas-fcos=nas-fcos-demo", "random=x.yaml"]) == {"nas-fcos": "nas-fcos-demo",
                                                                              "random": "x.yaml"}
    for bad in ("nas-fcos", "nas-fcos=", "bogus=nas-fcos-demo"):
        with pytest.raises(ValueError, match="METHOD=SPEC"):
            bm.parse_proxies([bad])


def test_a_malformed_proxy_argument_exits_2_naming_it(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["bench_methods", "--proxy", "bogus=x"])
    with pytest.raises(SystemExit) as exit_:
        bm.main()
    assert exit_.value.code == 2 and "--proxy 'bogus=x'" in capsys.readouterr().err


def test_a_shared_control_brings_its_grid_rows_without_model_files(tmp_path):
    """A promotion's grid rows keep only metrics (checkpoint None); sharing the control copies them
    too, and links the final rows' model files into the other run."""
    source, target = tmp_path / "a", tmp_path / "b"
    for run in (source, target):
        store = RunStore(run)
        store.add_control("hand-design")
        store.close()
    model = source / "retrain" / "baseline" / "final.pt"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"weights")
    store = RunStore(source, create=False)
    store.set_retrained("baseline/grid-s0", None, "hand-design", None, "done", None, {"arch": "baseline", "AP": 0.1})
    store.set_retrained("baseline/final-s0", None, "hand-design", None, "done", str(model), {"arch": "baseline", "AP": 0.2})
    store.close()
    assert bm.share_control(source, target) == 2
    store = RunStore(target, create=False)
    rows = {r["name"]: r for r in store.retrained()}
    store.close()
    assert rows["baseline/grid-s0"]["checkpoint"] is None and rows["baseline/grid-s0"]["metrics"]["AP"] == 0.1
    linked = Path(rows["baseline/final-s0"]["checkpoint"])
    assert linked == target / "retrain" / "baseline" / "final.pt" and linked.read_bytes() == b"weights"
    assert bm.share_control(source, target) == 0  # nothing twice


def test_rows_one_at_a_time_share_the_control_through_the_ledger_and_assemble(tiny_cache, tiny_test, tmp_path):
    """`make methods-row`: each method's row made by its own run (on its own machine) with one ledger:
    the control is trained for the first row only, a winner is fixed in the ledger once and a row
    redone elsewhere takes every promoted row from it; the table assembles from the rows present and
    marks the others."""
    from conftest import TINY_PROXY

    proxy = tmp_path / "tiny.yaml"
    proxy.write_text(TINY_PROXY.replace("rescore_top: 2", "rescore_top: 1"))
    inputs, ledger, rows = bm.Inputs(str(tiny_cache), None, str(tiny_test)), tmp_path / "ledger", tmp_path / "rows"
    kw = dict(minutes=None, trials=1, epochs=1, seeds=1, lr=0.01, proxies={"random": proxy, "nas-fcos": proxy},
              ledger=ledger)
    kept = lambda: json.loads((ledger / "rows.json").read_text())["rows"]  # noqa: E731
    rows.mkdir()
    for method in ("random", "nas-fcos"):
        result = bm.run(inputs, tmp_path / f"machine-{method}", methods=[method], **kw)
        (rows / f"{method}.json").write_text(json.dumps(result))
        assert (ledger / "winners" / f"{method}.json").is_file()
    names = [k.split()[0] for k in kept()]
    assert sum(n.startswith("baseline/") for n in names) == 1 and len(names) == 3  # one control, two winners
    before = kept()
    # the random row, redone elsewhere, its winner re-timed with the control, interleaved
    again = bm.run(inputs, tmp_path / "machine-3", methods=["random"], latency_images=3, **kw)
    assert kept() == before
    first = json.loads((rows / "random.json").read_text())["rows"][0]
    assert again["rows"][0]["winner"]["AP"] == first["winner"]["AP"] and again["rows"][0]["winner"]["arch"] == "random"
    timed = again["rows"][0]["winner"]["latency"]
    assert first["winner"]["latency"]["interleaved"] is False and first["winner"]["latency"]["ratio_interval"] is None
    assert timed["interleaved"] is True and timed["ratio"] > 0 and len(timed["ratio_interval"]) == 2
    assert f"({timed['ratio']:.2f}×" in bm.table_lines(again)[2] and "not interleaved" not in again["rows"][0]["test_verdict"]

    table = bm.assemble(rows)
    assert [r["method"] for r in table["rows"]] == list(bm.METHODS) and set(table["missing"]) == set(bm.METHODS) - {
        "random", "nas-fcos"}
    lines = bm.table_lines(table)
    assert sum("not measured yet" in line for line in lines) == 4
    assert bm.figure(table, rows / "table.png").stat().st_size > 1000


def test_decoder_only_rows_build_no_image_cache(tiny_cache, tmp_path):
    """An image cache (minutes on real data) is made only for a row whose method trains on images."""
    pipeline, work = tmp_path / "pipeline", tmp_path / "work"
    (pipeline / "cache").mkdir(parents=True)
    os.link(tiny_cache, pipeline / "cache" / Path(tiny_cache).name)
    inputs = bm.pipeline_inputs(pipeline, work, 0, ["random", "nas-fcos", "auto-fpn"])
    assert inputs.features == str(pipeline / "cache" / Path(tiny_cache).name) and inputs.images is None
    assert not (work / "images").exists()
