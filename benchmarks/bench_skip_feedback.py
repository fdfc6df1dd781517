"""What should the NAS-FCOS controller be told of a candidate skipped over the latency target?

On BCCD under `--latency-target 1.0x` (nas-fcos-cpu space) the controller, told "failed" (scored as
the worst reward so far) for each of 252 skipped candidates, ended drawing only invalid choices
after 9 trained decoders. This replays that situation without training: the controller asks
candidates one at a time, each predicted on the machine's latency table (the run's cache, as the
search does); a candidate within the target gets the control's proxy reward plus seed noise (the
controller then sees no accuracy signal, only the target), one over it is told either the flat
worst ("flat", before) or `search.skip_reward` ("graded", MnasNet's hard-constraint exponent).
Reported per arm and controller seed: distinct candidates within the target among the asks, the
asks until the 20th, and whether and when the controller stopped drawing valid candidates.

`make bench-skip-feedback` (after `make bccd-latency-search`; ~1 h on 2 cores, run it alone), or
`python -m benchmarks.bench_skip_feedback --cache CACHE --proxy nas-fcos-cpu --asks 200 --seeds 2 --out benchmarks/skip-feedback.json`
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def replay(gate, space, options: dict, graded: bool, seed: int, asks: int, reward: float, noise: float) -> dict:
    from nascli.search import skip_reward
    from nascli.strategies.base import StrategyExhausted
    from nascli.strategies.controller import ControllerStrategy

    controller = ControllerStrategy(space, seed=seed, **options)
    rng = np.random.default_rng(seed)
    worst, within, ratios, stopped, twentieth = reward, set(), [], None, None
    for k in range(1, asks + 1):
        try:
            [genotype] = controller.ask(1)
        except StrategyExhausted:
            stopped = k
            break
        over = gate.predict(genotype) / gate.limit_ms
        ratios.append(over)
        if over <= 1.0:
            r = reward + noise * rng.standard_normal()
            worst = min(worst, r)
            within.add(genotype.to_json())
            if len(within) == 20 and twentieth is None:
                twentieth = k
            controller.tell(genotype, r)
        else:
            controller.tell(genotype, skip_reward(worst, over) if graded else None)
    return {"feedback": "graded" if graded else "flat", "seed": seed, "asked": len(ratios),
            "distinct_within_target": len(within), "asks_to_20_within": twentieth, "stopped_at_ask": stopped,
            "median_ratio_last_50": float(np.median(ratios[-50:])) if ratios else None}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--proxy", default="nas-fcos-cpu")
    parser.add_argument("--asks", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--reward", type=float, default=-8.68, help="the control's proxy reward (BCCD run: -8.68)")
    parser.add_argument("--noise", type=float, default=0.05, help="the proxy's seed noise (BCCD run: ~0.05)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from .bench_latency_space import control_budget

    spec, space, gate = control_budget(args.proxy, args.cache)
    started, rows = time.perf_counter(), []
    for seed in range(args.seeds):
        for graded in (False, True):
            rows.append(replay(gate, space, dict(spec.controller), graded, seed, args.asks, args.reward, args.noise))
            print(json.dumps(rows[-1]), flush=True)
    result = {"cache": str(args.cache), "proxy": args.proxy, "asks": args.asks, "limit_ms": gate.limit_ms,
              "control_reward": args.reward, "noise": args.noise, "rows": rows,
              "minutes": (time.perf_counter() - started) / 60}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
