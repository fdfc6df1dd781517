"""Executors side by side: the same random search run in-process (local) and on a Ray cluster of
this machine with 1 and 2 workers (`make bench-executors`).

Reported per executor: wall time, evaluations per hour (search trials + the control's and the
re-scoring seeds: every one is a trial of the proxy), and Ray's overhead per evaluation against
local (1 worker minus local with as many threads, over the evaluations). Ray's start-up is timed on its own. The same
seed gives the same genotypes on every executor, so the rows differ only in how trials run.

The cluster starts inside a private network namespace (loopback only: `unshare -n`, root), with
HOME in a temporary folder and usage stats off; the benchmark re-runs itself there.

`python -m benchmarks.bench_executors --cache pipelines/nas-fcos/cache/<key>.h5 --trials 12`
writes benchmarks/executors.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

TINY_PROXY = """\
# a tiny NAS-FCOS proxy: about a second a trial on 2 cores, so the executor's own cost shows
space: nas-fcos
inputs: [c3, c4, c5]
width: 16
fpn_blocks: 5
head_blocks: 2
fpn_ops: [sep3x3, sep3x3_d3, skip]
head_ops: [sep3x3, skip]
epochs: 1
batch_size: 16
max_train_samples: 96
max_val_samples: 32
rescore_top: 2
rescore_seeds: 2
"""


def timed_search(proxy, cache, trials, run, seed, **executor) -> dict:
    from nascli.search import run_search

    started = time.perf_counter()
    r = run_search("random", proxy, cache, trials, run, seed=seed, **executor)
    wall = time.perf_counter() - started
    evaluations = r["evaluated_now"] + r["rescored_now"]
    return {"seconds": round(wall, 2), "evaluations": evaluations,
            "evaluations_per_hour": round(3600 * evaluations / wall), "best": r["top"][0]["genotype"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--proxy", default=None, help="a proxy spec (default: the tiny one above)")
    parser.add_argument("--out", default="benchmarks/executors.json")
    args = parser.parse_args()
    if os.environ.get("NASCLI_BENCH_NETNS") != "1":  # re-run inside the loopback-only namespace
        from nascli.executors import private_network

        home = tempfile.mkdtemp(prefix="nascli-ray-home")
        os.environ.update(NASCLI_BENCH_NETNS="1", HOME=home, RAY_USAGE_STATS_ENABLED="0")
        argv = [sys.executable, "-m", "benchmarks.bench_executors", *sys.argv[1:]]
        os.execvp("unshare", private_network(argv))

    import ray
    import torch

    work = Path(tempfile.mkdtemp(prefix="bench-executors"))
    proxy = Path(args.proxy) if args.proxy else work / "tiny.yaml"
    if not args.proxy:
        proxy.write_text(TINY_PROXY)
    rows = {}
    threads = torch.get_num_threads()
    rows["local"] = timed_search(proxy, args.cache, args.trials, work / "local", args.seed)
    torch.set_num_threads(1)  # as a Ray trial with cpus: 1 gets: the overhead is then Ray's alone
    rows["local, 1 thread"] = timed_search(proxy, args.cache, args.trials, work / "local1", args.seed)
    torch.set_num_threads(threads)
    started = time.perf_counter()
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             _temp_dir=tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    startup = time.perf_counter() - started
    for workers in (1, 2):
        rows[f"ray, {workers} worker{'s' if workers > 1 else ''}"] = timed_search(
            proxy, args.cache, args.trials, work / f"ray{workers}", args.seed, executor="ray", workers=workers)
    ray.shutdown()
    local, one = rows["local, 1 thread"], rows["ray, 1 worker"]
    result = {
        "cpus": os.cpu_count(), "local_torch_threads": threads, "ray_threads_per_trial": 1,
        "trials": args.trials, "proxy": proxy.read_text() if not args.proxy else str(proxy),
        "ray_version": ray.__version__, "ray_startup_seconds": round(startup, 2), "rows": rows,
        "ray_overhead_per_evaluation_seconds": round((one["seconds"] - local["seconds"]) / one["evaluations"], 3),
        "speedup_2_workers_vs_1": round(one["seconds"] / rows["ray, 2 workers"]["seconds"], 2),
        "speedup_2_workers_vs_local": round(rows["local"]["seconds"] / rows["ray, 2 workers"]["seconds"], 2),
        "same_best_everywhere": len({r["best"] for r in rows.values()}) == 1,
    }
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{'executor':<16}{'seconds':>9}{'evals':>7}{'evals/hour':>12}")
    for name, r in rows.items():
        print(f"{name:<16}{r['seconds']:>9.1f}{r['evaluations']:>7}{r['evaluations_per_hour']:>12}")
    print(f"Ray start-up {startup:.1f} s; overhead {result['ray_overhead_per_evaluation_seconds']:.3f} s per "
          f"evaluation (1 worker vs local, 1 thread each); 2 workers {result['speedup_2_workers_vs_1']}x 1 worker, "
          f"{result['speedup_2_workers_vs_local']}x local; same best everywhere: {result['same_best_everywhere']}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
