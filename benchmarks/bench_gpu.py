"""Trials per hour on the CPU, on CUDA and on CUDA with mixed precision, and the CPU-vs-GPU
agreement tests, in one command for the day a GPU is lent (issue 30). Without CUDA it says so and
exits 0, having measured nothing.

The workload is bench_trial's (a G-trial search of the demo proxy: G genotypes, the control's
re-scoring seeds), each evaluation one `nascli.methods.decoder.evaluate` on the given device;
`amp: true` in the spec turns on float16 autocast where the trial supports it (CUDA only).

`python -m benchmarks.bench_gpu --cache pipelines/nas-fcos/cache/<key>.h5` (or `make bench-gpu`);
writes benchmarks/gpu.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from .bench_trial import workload


def timed(jobs, spec, cache, device: str) -> tuple[dict, float]:
    from nascli.methods.decoder import evaluate

    started, rewards = time.perf_counter(), {}
    for name, g, s, d in jobs:
        rewards[name] = evaluate(g, spec, cache, s, d, device=device).reward
    if device == "cuda":
        torch.cuda.synchronize()
    return rewards, time.perf_counter() - started


def run(cache, proxy: str, genotypes: int, seed: int, out: Path) -> dict | None:
    if not torch.cuda.is_available():
        print("bench_gpu: skipped, no CUDA device on this machine (nothing measured, nothing written)")
        return None
    from nascli.config import ProxySpec, load_spec, resolve_proxy

    spec = load_spec(ProxySpec, resolve_proxy(proxy))
    jobs = workload(spec, cache, genotypes, seed)
    rows = {}
    for label, device, amp in (("cpu", "cpu", False), ("cuda", "cuda", False), ("cuda + amp", "cuda", True)):
        rewards, seconds = timed(jobs, spec.model_copy(update={"amp": amp}), cache, device)
        rows[label] = {"seconds": round(seconds, 1), "trials_per_hour": round(3600 * len(jobs) / seconds, 1),
                       "rewards": rewards}
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/test_device.py"], capture_output=True, text=True)
    result = {"proxy": proxy, "evaluations": len(jobs), "device": torch.cuda.get_device_name(0), "rows": rows,
              "agreement_tests": {"returncode": tests.returncode, "summary": tests.stdout.strip().splitlines()[-1:]}}
    out.write_text(json.dumps(result, indent=2))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--proxy", default="nas-fcos-demo")
    parser.add_argument("--genotypes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/gpu.json")
    args = parser.parse_args()
    r = run(args.cache, args.proxy, args.genotypes, args.seed, Path(args.out))
    if r is None:
        return
    print(f"{r['evaluations']} evaluations of {r['proxy']} on {r['device']}:")
    print(f"{'':12} {'seconds':>9} {'trials/h':>10} {'x cpu':>7}")
    cpu = r["rows"]["cpu"]["seconds"]
    for label, row in r["rows"].items():
        print(f"{label:12} {row['seconds']:>9} {row['trials_per_hour']:>10} {cpu / row['seconds']:>7.2f}")
    print("CPU-vs-GPU agreement tests:", *r["agreement_tests"]["summary"])


if __name__ == "__main__":
    main()
