"""The search loop: proxy reward, run database, resume after kill -9, runs/export commands."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from nascli.config import ProxySpec, load_spec
from nascli.errors import SpecError
from nascli.proxy import TrialResult, evaluate, space_for
from nascli.search import run_search
from nascli.store import RunStore

def test_proxy_reward_is_the_negative_meta_val_loss(tiny_cache, tiny_proxy):
    spec = load_spec(ProxySpec, tiny_proxy)
    r = evaluate(_valid_genotype(spec), spec, tiny_cache, seed=0)
    assert r.status == "done" and r.reward == pytest.approx(-sum(r.losses.values()))
    assert r.reward < 0 and r.params > 0 and r.flops > 0
    again = evaluate(_valid_genotype(spec), spec, tiny_cache, seed=0)
    assert again.reward == pytest.approx(r.reward, rel=1e-5)  # deterministic per seed


def _valid_genotype(spec):
    from nascli.strategies.random import RandomStrategy
    return RandomStrategy(space_for(spec), seed=0).ask(1)[0]


def test_diverging_candidate_is_a_failed_trial(tiny_cache, tiny_proxy):
    spec = load_spec(ProxySpec, tiny_proxy).model_copy(update={"lr": 1e30})
    r = evaluate(_valid_genotype(spec), spec, tiny_cache, seed=0)
    assert r.status == "failed" and ("diverged" in r.reason or "not finite" in r.reason)


@pytest.mark.parametrize("method", ["random", "nas-fcos"])
def test_search_runs_commits_and_summarises(tiny_cache, tiny_proxy, tmp_path, method):
    r = run_search(method, tiny_proxy, tiny_cache, trials=4, run_dir=tmp_path / "run", seed=1)
    assert r["finished"] == 4 and r["top"][0]["reward"] == max(t[1] for t in r["curve"])
    store = RunStore(tmp_path / "run", create=False)
    assert [t.status for t in store.trials()] == ["done"] * 4 and all(t.told for t in store.trials())
    assert len({t.genotype for t in store.trials()}) >= 2
    assert json.loads((tmp_path / "run/best.json").read_text())["space"] == "nas-fcos"


def test_a_failing_candidate_does_not_stop_the_search(tiny_cache, tiny_proxy, tmp_path):
    calls = []

    def flaky(genotype, spec, cache, seed):
        calls.append(seed)
        if len(calls) == 2:
            return TrialResult("failed", reason="out of memory")
        return evaluate(genotype, spec, cache, seed)

    r = run_search("nas-fcos", tiny_proxy, tiny_cache, 3, tmp_path / "run", evaluate_fn=flaky)
    assert r["finished"] == 3 and r["failed"] == 1


def test_resume_continues_to_the_target_without_rerunning(tiny_cache, tiny_proxy, tmp_path):
    run_search("nas-fcos", tiny_proxy, tiny_cache, 2, tmp_path / "run", seed=2)
    first = {t.id: t.reward for t in RunStore(tmp_path / "run").trials()}
    r = run_search("nas-fcos", None, None, 4, tmp_path / "run", resume=True)
    assert r["evaluated_now"] == 2 and r["finished"] == 4
    assert {t.id: t.reward for t in RunStore(tmp_path / "run").trials()[:2]} == first
    with pytest.raises(Exception, match="already has 4 trials"):
        run_search("nas-fcos", tiny_proxy, tiny_cache, 4, tmp_path / "run")


def test_resume_after_kill_9_loses_and_duplicates_no_trial(tiny_cache, tiny_proxy, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "nascli", "search", "--method", "nas-fcos", "--proxy", str(tiny_proxy),
           "--cache", str(tiny_cache), "--trials", "6", "--run", str(run), "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:
        time.sleep(0.2)
        if (run / "run.db").is_file():
            try:
                with sqlite3.connect(run / "run.db") as db:
                    done = db.execute("SELECT COUNT(*) FROM trials WHERE status = 'done'").fetchone()[0]
            except sqlite3.OperationalError:
                continue
            if done >= 2:
                break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {t.id: (t.genotype, t.reward) for t in RunStore(run).trials() if t.status == "done"}
    assert 2 <= len(before) < 6
    r = run_search("nas-fcos", None, None, None, run, resume=True)
    after = RunStore(run).trials()
    assert [t.id for t in after] == list(range(1, 7)) and all(t.status == "done" and t.told for t in after)
    assert {t.id: (t.genotype, t.reward) for t in after if t.id in before} == before
    assert r["evaluated_now"] == 6 - len(before)


def test_cache_without_the_spec_inputs_is_a_user_error(tiny_cache, tiny_proxy, tmp_path):
    proxy = tmp_path / "p.yaml"
    proxy.write_text(tiny_proxy.read_text().replace("[c2, c3, c4, c5]", "[c1, c3]"))
    with pytest.raises(SpecError, match="field 'inputs'"):
        run_search("random", proxy, tiny_cache, 1, tmp_path / "run")


def test_runs_show_list_and_export(run_cli, tiny_cache, tiny_proxy, tmp_path):
    run_search("random", tiny_proxy, tiny_cache, 3, tmp_path / "runs" / "a")
    code, out, _ = run_cli("runs", "list", "--root", tmp_path / "runs", "--json")
    assert code == 0 and json.loads(out)[0]["finished"] == 3
    code, out, _ = run_cli("runs", "show", tmp_path / "runs" / "a", "--json")
    assert code == 0 and (tmp_path / "runs/a/rewards.png").stat().st_size > 1000
    code, out, _ = run_cli("export", tmp_path / "runs" / "a", "--top", 2, "--json")
    paths = json.loads(out)
    assert len(paths) == 2 and json.loads(open(paths[0]).read())["space"] == "nas-fcos"
    code, out, _ = run_cli("search", "--resume", tmp_path / "runs" / "a", "--trials", 4, "--json")
    assert code == 0 and json.loads(out)["finished"] == 4 and json.loads(out)["evaluated_now"] == 1
    code, _, err = run_cli("search", "--method", "darts", "--cache", tiny_cache, "--trials", 1,
                           "--run", tmp_path / "x", "--proxy", tiny_proxy)
    assert code == 2 and "unknown method 'darts'" in err
