"""Trials per CPU-hour of the demo proxy, before and after (issue 30), measured in one run.

The workload is what a search of G trials costs: G sampled genotypes (one seed each), the control
with its re-scoring seeds and the best genotype with its re-scoring seeds (docs/protocol.md).
- before: one trial at a time in this process on every core's threads, the trial kit as it was
  (`trial.legacy_trial`: every convolution whole and as torch runs it, per-tensor updates, the
  whole model recalibrated, the head's predictions one call a level);
- after: `--workers` processes sharing the cores (`nascli search --workers`, one thread each on
  2 cores), padding-only taps skipped (`ReachConv2d`), Adam and the Polyak average updating one
  flat parameter buffer (`trial.FlatAdam`), the FPN alone recalibrated, NAS-FCOS's pairwise
  mix and small-map or dilated depthwise convolutions off torch's slow CPU paths and deformable ones
  computed by `grid_sample` (`spaces.ops`), the small levels predicted in one call
  (`models.heads.over_levels`).
The before arm is split around the after arm (half the workload, the after arm, the rest): this
machine's speed drifts by 10–30 % within minutes, and a drift would otherwise weigh on one arm only.
Reported: trials per hour both ways and their ratio; how far the rewards moved (Kendall tau over
the genotypes and the control, the largest difference in units of the proxy's seed noise), and the
"before" code rerun at the after arm's thread count, which separates what the changes move from what
the thread count alone moves (float summation order, amplified by a trial's 130 Adam steps); where one trial's time goes
(torch.profiler, self CPU time by kind of op); achieved GFLOP/s against this machine's conv-3×3 and
matmul rates measured in the same run. Run it alone: another torch process skews every number.

`python -m benchmarks.bench_trial --cache pipelines/nas-fcos/cache/<key>.h5` (or `make bench-trial`,
after `make demo`); writes benchmarks/trial.json. The faithful proxy (`--proxy nas-fcos`, a C2–C5
cache, minutes a trial): `--arms-only --genotypes 1 --out benchmarks/trial-nas-fcos.json`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from .common import median_seconds


def peaks(threads: int) -> dict:
    """GFLOP/s of a 3×3 convolution (8×64×32×32, 64 -> 64) and a 1024² matmul at `threads`."""
    torch.set_num_threads(threads)
    x, w = torch.randn(8, 64, 32, 32), torch.randn(64, 64, 3, 3)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    conv = 2 * 8 * 64 * 64 * 9 * 32 * 32 / median_seconds(lambda: torch.nn.functional.conv2d(x, w, padding=1)) / 1e9
    mm = 2 * 1024 ** 3 / median_seconds(lambda: a @ b) / 1e9
    return {"threads": threads, "conv3x3_gflops": round(conv, 1), "matmul_gflops": round(mm, 1)}


def workload(spec, cache, genotypes: int, seed: int):
    """(name, genotype, trial seed, data seed) of a G-trial search's trials and the control's re-scoring."""
    from nascli.search import control_genotype
    from nascli.spaces import space_for
    from nascli.strategies.random import RandomStrategy

    sampled = RandomStrategy(space_for(spec), seed=seed).ask(genotypes)
    jobs = [(f"trial-{i + 1}", g, seed * 100_003 + i + 1, seed) for i, g in enumerate(sampled)]
    return jobs + rescoring("control", control_genotype(spec, cache, "proxy"), 0, spec, seed)


def rescoring(name: str, genotype, trial_id: int, spec, seed: int):
    """The re-scoring evaluations of one trial (its fresh seeds and batch orders)."""
    from nascli.protocol import rescore_data_seed, rescore_seed

    return [(f"{name}-seed{k}", genotype, rescore_seed(seed, trial_id, k), rescore_data_seed(seed, k))
            for k in range(spec.rescore_seeds)]


def run_before(jobs, spec, cache, threads: int):
    """One trial at a time, here, on `threads` threads, with whole dilated kernels and the
    optimiser and average updates and the BatchNorm recalibration as they were (`trial.legacy_trial`)."""
    from nascli.methods.decoder import evaluate
    from nascli.trial import legacy_trial

    torch.set_num_threads(threads)
    started, rewards = time.perf_counter(), {}
    with legacy_trial():
        for name, g, s, d in jobs:
            rewards[name] = evaluate(g, spec, cache, s, d).reward
    return rewards, time.perf_counter() - started


def run_after(jobs, spec, cache, pool, more=None):
    """The jobs on `pool` (the processes `nascli search --workers` uses), fed as slots free up;
    `more(rewards)` adds jobs once every sampled genotype's reward is in (the best's re-scoring),
    so the queue stays full until the end, as a search's does."""
    from nascli.methods.decoder import evaluate

    started, rewards = time.perf_counter(), {}
    waiting = list(jobs)
    sampled = {name for name, *_ in jobs if name.startswith("trial-")}
    while waiting or pool.busy():
        while waiting and pool.busy() < pool.slots:
            name, g, s, d = waiting.pop(0)
            pool.submit(name, evaluate, g, spec, str(cache), s, d)
        name, result = pool.next_done()
        rewards[name] = result.reward
        if more and sampled <= rewards.keys():
            waiting, more = waiting + more(rewards), None
    return rewards, time.perf_counter() - started


def both_arms(jobs, spec, cache, cores: int, workers: int, genotypes: int, seed: int):
    """Before and after on the workload with the before arm split around the after arm (its first
    half, then the after arm, then the rest): a machine that speeds up or slows down during the run
    weighs on both arms alike. The best genotype (by the after arm's rewards) is re-scored in both.
    Returns every job, each arm's rewards and its seconds (the after arm's include its processes'
    start)."""
    from nascli.executors import ProcessPool

    extra = []

    def rescore_best(rewards):
        best = max(range(genotypes), key=lambda i: rewards[jobs[i][0]])
        extra.extend(rescoring("best", jobs[best][1], best + 1, spec, seed))
        return extra

    half = len(jobs) // 2
    first, first_s = run_before(jobs[:half], spec, cache, cores)
    started = time.perf_counter()
    pool = ProcessPool(workers, cores)
    try:
        after, _ = run_after(jobs, spec, cache, pool, rescore_best)
    finally:
        pool.close()
    after_s = time.perf_counter() - started
    rest, rest_s = run_before(jobs[half:] + extra, spec, cache, cores)
    return jobs + extra, {**first, **rest}, first_s + rest_s, after, after_s


def profile_trial(genotype, spec, cache, threads: int) -> dict:
    """Self CPU seconds of one trial by kind of op, and the wall time outside torch's ops."""
    from torch.profiler import ProfilerActivity, profile

    from nascli.methods.decoder import evaluate

    torch.set_num_threads(threads)
    evaluate(genotype, spec, cache, 1, 0)  # warm: the cache split is read once per process
    started = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        result = evaluate(genotype, spec, cache, 1, 0)
    wall = time.perf_counter() - started
    kinds = {"convolution forward": 0.0, "convolution backward": 0.0, "normalisation": 0.0,
             "optimiser and average (Python)": 0.0, "other tensor ops": 0.0}
    for e in prof.key_averages():
        seconds = e.self_cpu_time_total / 1e6
        if "convolution_backward" in e.key:
            kinds["convolution backward"] += seconds
        elif "conv" in e.key:
            kinds["convolution forward"] += seconds
        elif "norm" in e.key:
            kinds["normalisation"] += seconds
        elif e.key.startswith("Optimizer."):
            kinds["optimiser and average (Python)"] += seconds
        else:
            kinds["other tensor ops"] += seconds
    kinds["outside torch ops (Python, data, scoring kernels)"] = max(0.0, wall - sum(kinds.values()))
    return {"wall_seconds": round(wall, 2), "flops_per_crop": result.flops,
            "share": {k: round(v / wall, 3) for k, v in kinds.items()}}


def run(cache, proxy: str, genotypes: int, workers: int, seed: int, out: Path, arms_only: bool = False) -> dict:
    from nascli.config import ProxySpec, load_spec, resolve_proxy
    from nascli.methods.decoder import training_epochs
    from nascli.report import kendall_tau
    from nascli.runtime import usable_cores
    from nascli.trial import open_split

    spec = load_spec(ProxySpec, resolve_proxy(proxy))
    cores = usable_cores()
    jobs, before, before_s, after, after_s = both_arms(workload(spec, cache, genotypes, seed), spec, cache, cores,
                                                        workers, genotypes, seed)
    threads = max(1, cores // workers)
    names = [j[0] for j in jobs]
    ranked = [n for n in names if n.startswith("trial-")] + ["control-seed0"]
    control = [before[n] for n in names if n.startswith("control-")]
    noise = statistics.stdev(control) if len(control) > 1 else float("nan")
    result = {
        "proxy": proxy, "cache": str(cache), "cores": cores, "workers": workers, "seed": seed,
        "evaluations": len(jobs), "genotypes": genotypes, "rescore_seeds": spec.rescore_seeds,
        "before": {"seconds": round(before_s, 1), "trials_per_hour": round(3600 * len(jobs) / before_s, 1),
                   "how": f"serial, {cores} threads, the trial kit as it was (trial.legacy_trial)"},
        "after": {"seconds": round(after_s, 1), "trials_per_hour": round(3600 * len(jobs) / after_s, 1),
                  "how": f"{workers} worker processes x {threads} thread, padding-only taps skipped, Adam and "
                         "average on one flat buffer, FPN-only recalibration, pairwise mix and small or dilated depthwise convs "
                         "off torch's slow CPU paths, deformable convs by grid_sample, small levels predicted "
                         "in one call"},
        "speedup": round(before_s / after_s, 2),
        "rewards": {n: {"before": before[n], "after": after[n]} for n in names},
        "kendall_tau": kendall_tau([before[n] for n in ranked], [after[n] for n in ranked]),
        "control_seed_noise": noise,
        "max_difference_in_noise": max(abs(before[n] - after[n]) for n in names) / noise,
    }
    if arms_only:  # a proxy whose trials take minutes: the two arms, nothing else
        out.write_text(json.dumps(result, indent=2))
        return result
    # the "before" code at the workers' thread count: which differences the changes make, and which
    # the thread count alone makes (float summation order, amplified by 130 Adam steps)
    same, _ = run_before(jobs, spec, cache, threads) if threads != cores else (before, before_s)
    train = open_split(str(cache), "train")
    prof = profile_trial(jobs[0][1], spec, cache, cores)
    epochs = training_epochs(spec, len(train))
    val = open_split(str(cache), "val")
    crops = 3 * epochs * len(train) + len(train) + len(val)  # fwd+bwd training, BN recompute, scoring
    # achieved over the profiled trial's wall time, the profiler's overhead included (an underestimate)
    result.update({
        "same_threads": {  # before at the after arm's threads: the changes alone, and the threads alone
            "threads": threads, "rewards": {n: same[n] for n in names},
            "kendall_tau_vs_after": kendall_tau([same[n] for n in ranked], [after[n] for n in ranked]),
            "max_difference_vs_after_in_noise": max(abs(same[n] - after[n]) for n in names) / noise,
            "kendall_tau_threads_alone": kendall_tau([same[n] for n in ranked], [before[n] for n in ranked]),
            "max_difference_threads_alone_in_noise": max(abs(same[n] - before[n]) for n in names) / noise},
        "profile": prof,
        "achieved_gflops": round(prof["flops_per_crop"] * crops / prof["wall_seconds"] / 1e9, 2),
        "peaks": [peaks(1), peaks(cores)],
    })
    out.write_text(json.dumps(result, indent=2))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True, help="the demo cache (pipelines/nas-fcos/cache/<key>.h5)")
    parser.add_argument("--proxy", default="nas-fcos-demo")
    parser.add_argument("--genotypes", type=int, default=10, help="sampled genotypes (trials) in the workload")
    parser.add_argument("--workers", type=int, default=None, help="pool processes (default: the usable cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/trial.json")
    parser.add_argument("--arms-only", action="store_true",
                        help="only the before and after arms (for a proxy whose trials take minutes)")
    args = parser.parse_args()
    from nascli.runtime import usable_cores

    r = run(args.cache, args.proxy, args.genotypes, args.workers or usable_cores(), args.seed, Path(args.out),
            args.arms_only)
    print(f"{r['evaluations']} evaluations of {r['proxy']}: before {r['before']['seconds']} s "
          f"({r['before']['trials_per_hour']}/h, {r['before']['how']}), after {r['after']['seconds']} s "
          f"({r['after']['trials_per_hour']}/h, {r['after']['how']}): {r['speedup']}x")
    print(f"rewards: Kendall tau {r['kendall_tau']:.3f} over the trials and the control; largest difference "
          f"{r['max_difference_in_noise']:.3f} seed-noise widths (noise {r['control_seed_noise']:.4f})")
    if args.arms_only:
        return
    same = r["same_threads"]
    print(f"at {same['threads']} thread(s) both: tau {same['kendall_tau_vs_after']:.3f}, largest difference "
          f"{same['max_difference_vs_after_in_noise']:.3f} widths; the thread count alone: tau "
          f"{same['kendall_tau_threads_alone']:.3f}, {same['max_difference_threads_alone_in_noise']:.3f} widths")
    print("one trial's time:", ", ".join(f"{k} {v:.0%}" for k, v in r["profile"]["share"].items()))
    print(f"achieved {r['achieved_gflops']} GFLOP/s; peaks {r['peaks']}")


if __name__ == "__main__":
    main()
