"""Can a space reach the control's latency at all? The predicted latency once promoted (the per-op
table of latency_table.py, this machine) of N uniformly random genotypes of a proxy's space, against
the control's, on a cache's baseline and shape: quantiles, and how many are within 1.0x.

`python -m benchmarks.bench_latency_space --cache CACHE.h5 --proxy nas-fcos-demo --out benchmarks/latency-space-bccd-nas-fcos-demo.json`
(`make bench-latency-space` after `make bccd-latency-search`). The table is built once beside the
cache (minutes); then each prediction sums looked-up ops; what one costs is timed against building
and tracing the whole detector (the reference), interleaved. Run it alone.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def control_budget(proxy_name: str, cache):
    """The proxy's space and the search's latency budget at 1.0x its control, on the cache's baseline
    and this machine's table (beside the cache), as `search --latency-target 1.0x` builds it."""
    from nascli.config import ProxySpec, load_spec, resolve_proxy
    from nascli.search import control_genotype, latency_budget
    from nascli.spaces import space_for

    proxy = resolve_proxy(proxy_name)
    spec = load_spec(ProxySpec, proxy)
    space = space_for(spec)
    return spec, space, latency_budget("1.0x", cache, control_genotype(spec, cache, proxy), space, 0)


def prediction_cost(candidates, space, seed: int, count: int = 30) -> dict:
    """What skipping one candidate costs: its prediction as the search makes it (the decoder traced
    on the backbone's features, kept) against the whole detector built and traced (the reference),
    on the same fresh genotypes, interleaved; median seconds each and their ratio."""
    import statistics

    from nascli.latency_table import corrected
    from nascli.strategies.random import RandomStrategy

    fit = candidates.table.fits.get(candidates.context)
    split, whole, largest = [], [], 0.0
    for g in RandomStrategy(space, seed=seed + 1).ask(count):
        started = time.perf_counter()
        reference = corrected(candidates.table.trace(candidates.detector(g), candidates.example), fit)
        whole.append(time.perf_counter() - started)
        started = time.perf_counter()
        predicted = candidates.predict(g)
        split.append(time.perf_counter() - started)
        largest = max(largest, abs(predicted - reference) / reference)
    return {"genotypes": count, "decoder_on_kept_features_s": statistics.median(split),
            "whole_detector_s": statistics.median(whole),
            "speedup": statistics.median(whole) / statistics.median(split), "largest_relative_difference": largest}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--proxy", default="nas-fcos-demo")
    parser.add_argument("--genotypes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    from nascli.strategies.random import RandomStrategy

    _, space, budget = control_budget(args.proxy, args.cache)
    started = time.perf_counter()
    ms = sorted(budget.predict(g) for g in RandomStrategy(space, seed=args.seed).ask(args.genotypes))
    seconds = time.perf_counter() - started
    control = budget.control_ms

    def at(q: float) -> float:
        return ms[min(len(ms) - 1, int(q * len(ms)))]

    result = {"cache": str(args.cache), "proxy": args.proxy, "genotypes": len(ms), "seed": args.seed,
              "cost_of_a_prediction": prediction_cost(budget.candidates, space, args.seed),
              "control_ms": control, "table": str(budget.candidates.table.path),
              "predicted_ms": {"min": ms[0], "p01": at(0.01), "p05": at(0.05), "median": at(0.5), "max": ms[-1]},
              "ratio_to_control": {"min": ms[0] / control, "p05": at(0.05) / control, "median": at(0.5) / control},
              "within_control": sum(m <= control for m in ms), "seconds": seconds}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
