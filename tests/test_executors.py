"""Executors: the local process pool and the Ray executor against the serial one, worker deaths,
resume across executors.

The Ray cluster runs inside a private network namespace (`unshare -n`, loopback only, HOME in a
temporary folder, usage stats off): one script starts it once and plays every scenario, writing
what happened to a json file that the tests below read.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from conftest import TINY_PROXY

from nascli.errors import NascliError, SpecError
from nascli.executors import LocalExecutor, ProcessPool, probe_paths, private_network
from nascli.search import run_search
from nascli.store import RunStore


def _namespace_available() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(private_network([sys.executable, "-c", "pass"]), capture_output=True).returncode == 0


needs_namespace = pytest.mark.skipif(not _namespace_available(),
                                     reason="needs `unshare -n` (root) to keep Ray on loopback only")

SCENARIOS = textwrap.dedent('''
    import json, os, signal, sys, tempfile
    from pathlib import Path

    import ray

    from nascli.executors import RayExecutor
    from nascli.methods.decoder import evaluate
    from nascli.search import run_search
    from nascli.store import RunStore

    cache, proxy, work = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    log = work / "calls.log"

    def logged(genotype, spec, cache, seed, data_seed=0):
        with open(log, "a") as f:
            f.write(f"{seed}\\n")
        return evaluate(genotype, spec, cache, seed, data_seed)

    def faulty(genotype, spec, cache, seed, data_seed=0):
        """trial 2: its worker dies once; trial 3: its worker always dies; trial 4 raises."""
        with open(log, "a") as f:
            f.write(f"{seed}\\n")
        trial = seed % 100_003
        marker = work / f"died-{seed}"
        if trial == 2 and not marker.exists() or trial == 3:
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        if trial == 4:
            raise ValueError("a bug in this candidate")
        return evaluate(genotype, spec, cache, seed, data_seed)

    def interrupted(genotype, spec, cache, seed, data_seed=0):
        if seed % 100_003 == 3:
            raise KeyboardInterrupt  # the driver dies with trial 3 in flight
        return logged(genotype, spec, cache, seed, data_seed)

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _temp_dir=tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    out = {"node_ip": ray.util.get_node_ip_address()}

    r = run_search("random", proxy, cache, 6, work / "same", seed=3, executor="ray", workers=2)
    out["same"] = {"finished": r["finished"], "slots": 2}

    log.write_text("")
    r = run_search("random", proxy, cache, 5, work / "faults", seed=4, executor="ray", workers=2,
                   evaluate_fn=faulty)
    out["faults"] = {"calls": log.read_text().split()}

    log.write_text("")
    try:
        run_search("random", proxy, cache, 5, work / "resume", seed=5, evaluate_fn=interrupted)
    except KeyboardInterrupt:
        pass
    out["resume_before"] = log.read_text().split()
    run_search("random", None, None, None, work / "resume", resume=True, executor="ray", evaluate_fn=logged)
    out["resume_calls"] = log.read_text().split()

    pool = RayExecutor("auto", cpus=1)
    try:
        pool.check_paths({"cache": str(work / "no-such.h5")})
    except Exception as e:
        out["unreadable"] = f"{type(e).__name__}: {e}"
    pool.close()
    ray.shutdown()
    (work / "out.json").write_text(json.dumps(out))
''')


@pytest.fixture(scope="module")
def scenarios(tiny_cache, tmp_path_factory):
    """Runs SCENARIOS once on a 2-CPU Ray cluster in a private network namespace."""
    pytest.importorskip("ray", reason="Ray is an optional extra (pip install 'nascli[ray]')")
    if not _namespace_available():
        pytest.skip("needs `unshare -n` (root) to keep Ray on loopback only")
    work = tmp_path_factory.mktemp("ray")
    (work / "tiny.yaml").write_text(TINY_PROXY_RETRIES)
    (work / "scenarios.py").write_text(SCENARIOS)
    env = {**os.environ, "HOME": str(work), "RAY_USAGE_STATS_ENABLED": "0"}  # the auth token goes to HOME
    proc = subprocess.run(private_network([sys.executable, str(work / "scenarios.py"), str(tiny_cache),
                                           str(work / "tiny.yaml"), str(work)]),
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work, json.loads((work / "out.json").read_text())


TINY_PROXY_RETRIES = TINY_PROXY + "resources: {cpus: 1, retries: 1}\n"


@needs_namespace
def test_ray_stays_on_loopback(scenarios):
    assert scenarios[1]["node_ip"] == "127.0.0.1"


@needs_namespace
def test_ray_runs_the_same_trials_as_local_for_a_fixed_seed(scenarios, tiny_cache, tmp_path):
    work, _ = scenarios
    (tmp_path / "tiny.yaml").write_text(TINY_PROXY_RETRIES)
    run_search("random", tmp_path / "tiny.yaml", tiny_cache, 6, tmp_path / "local", seed=3)
    local = {t.id: (t.genotype, t.reward, t.seed) for t in RunStore(tmp_path / "local").trials()}
    remote = {t.id: (t.genotype, t.reward, t.seed) for t in RunStore(work / "same").trials()}
    assert sorted(local) == sorted(remote) == list(range(7))
    for i in local:
        assert local[i][0] == remote[i][0] and local[i][2] == remote[i][2]
        assert remote[i][1] == pytest.approx(local[i][1], rel=1e-4, abs=1e-5)
    scores = lambda run: {(t, s): r for t, by in RunStore(run).scores().items() for s, r in by.items()}  # noqa: E731
    assert scores(tmp_path / "local").keys() == scores(work / "same").keys()


@needs_namespace
def test_a_dead_worker_requeues_its_trial_and_an_exception_is_not_retried(scenarios):
    work, out = scenarios
    trials = {t.id: t for t in RunStore(work / "faults").trials(control=False)}
    assert sorted(trials) == [1, 2, 3, 4, 5] and all(t.told for t in trials.values())
    calls = [int(s) % 100_003 for s in out["faults"]["calls"] if int(s) < 1_000_000]  # search seeds only
    assert trials[2].status == "done" and calls.count(2) == 2  # killed once, re-queued, finished
    assert trials[3].status == "failed" and calls.count(3) == 2  # retries: 1 -> two deaths, then failed
    assert trials[3].metrics["reason"].startswith("worker lost 2 times")
    assert trials[4].status == "failed" and calls.count(4) == 1  # its own exception: not retried
    assert trials[4].metrics["reason"] == "error: ValueError: a bug in this candidate"
    assert trials[1].status == trials[5].status == "done"


@needs_namespace
def test_a_local_run_whose_driver_died_resumes_on_ray(scenarios):
    work, out = scenarios
    before = [int(s) for s in out["resume_before"] if int(s) < 1_000_000]
    after = [int(s) for s in out["resume_calls"] if int(s) < 1_000_000]
    assert sorted(s % 100_003 for s in before) == [1, 2]
    assert sorted(s % 100_003 for s in after) == [1, 2, 3, 4, 5]  # 1 and 2 were not run again
    trials = RunStore(work / "resume").trials(control=False)
    assert [t.id for t in trials] == [1, 2, 3, 4, 5] and all(t.status == "done" for t in trials)


@needs_namespace
def test_a_path_the_workers_cannot_read_is_an_error_at_start(scenarios):
    message = scenarios[1]["unreadable"]
    assert message.startswith("NascliError: --executor ray: a worker on ") and "no-such.h5 (not readable)" in message


def test_probe_names_unreadable_and_unwritable_paths(tmp_path):
    host, bad = probe_paths({"cache": str(tmp_path / "x.h5")}, {"run folder": str(tmp_path)})
    assert bad == [f"cache {tmp_path / 'x.h5'} (not readable)"]
    _, bad = probe_paths({}, {"run folder": str(tmp_path / "missing")})
    assert bad == [f"run folder {tmp_path / 'missing'} (not writable)"]


def test_local_executor_runs_in_submission_order():
    pool, seen = LocalExecutor(), []
    for k in range(3):
        pool.submit(k, seen.append, k)
    assert pool.busy() == 3 and [pool.next_done()[0] for _ in range(3)] == [0, 1, 2] and seen == [0, 1, 2]


def test_executor_option_errors_come_before_anything_is_written(tiny_cache, tiny_proxy, tmp_path, monkeypatch):
    with pytest.raises(SpecError, match="--executor dask: choose one of local, ray"):
        run_search("random", tiny_proxy, tiny_cache, 1, tmp_path / "a", executor="dask")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    with pytest.raises(NascliError, match=r"Ray is not installed; pip install 'nascli\[ray\]'"):
        run_search("random", tiny_proxy, tiny_cache, 1, tmp_path / "c", executor="ray")
    assert not any((tmp_path / d).exists() for d in "ac")


def test_cli_without_ray_is_one_line_exit_2(run_cli, tiny_cache, tiny_proxy, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    code, out, err = run_cli("search", "--method", "random", "--proxy", str(tiny_proxy), "--cache", str(tiny_cache),
                             "--trials", "1", "--run", str(tmp_path / "r"), "--executor", "ray")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "pip install 'nascli[ray]'" in err


def _failing_trial_3(genotype, spec, cache, seed, data_seed=0):
    """A trial function for the pool's workers (module level, so it pickles): trial 3 has a bug."""
    from nascli.methods.decoder import evaluate

    if seed % 100_003 == 3:
        raise ValueError("a bug in trial 3")
    return evaluate(genotype, spec, cache, seed, data_seed)


def test_local_workers_score_what_a_serial_search_does(tiny_cache, tiny_proxy, tmp_path):
    import torch

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # a serial search with the workers' one thread each ...
        run_search("random", tiny_proxy, tiny_cache, 4, tmp_path / "serial", seed=2)
        torch.set_num_threads(2)  # ... and two workers sharing two threads
        r = run_search("random", tiny_proxy, tiny_cache, 4, tmp_path / "pool", seed=2, workers=2)
    finally:
        torch.set_num_threads(threads)
    rows = lambda run: [(t.id, t.genotype, t.seed, t.reward) for t in RunStore(run).trials()]  # noqa: E731
    assert r["finished"] == 4 and rows(tmp_path / "pool") == rows(tmp_path / "serial")  # bit for bit
    scores = lambda run: RunStore(run).scores()  # noqa: E731
    assert scores(tmp_path / "pool") == scores(tmp_path / "serial")


def test_a_workers_exception_stops_the_search_and_the_run_resumes(tiny_cache, tiny_proxy, tmp_path):
    with pytest.raises(ValueError, match="a bug in trial 3"):
        run_search("random", tiny_proxy, tiny_cache, 5, tmp_path / "r", seed=0, workers=2,
                   evaluate_fn=_failing_trial_3)
    store = RunStore(tmp_path / "r")
    assert store.trial(3).status == "pending"  # its row waits for --resume
    done_before = {t.id: t.reward for t in store.trials(control=False) if t.status == "done"}
    r = run_search("random", None, None, None, tmp_path / "r", resume=True)
    assert r["finished"] == 5
    after = {t.id: t.reward for t in RunStore(tmp_path / "r").trials(control=False)}
    assert all(after[i] == reward for i, reward in done_before.items())  # finished trials were kept


def test_process_pool_returns_the_earliest_submitted_finished_trial():
    pool = ProcessPool(2, 2)
    try:
        assert pool.threads == 1 and pool.slots == 2
        for k, value in enumerate([4.0, 9.0, 16.0]):
            pool.submit(k, math.sqrt, value)
        got = [pool.next_done() for _ in range(3)]
    finally:
        pool.close()
    assert got == [(0, 2.0), (1, 3.0), (2, 4.0)] and pool.busy() == 0
