"""Does the fair head initialisation change what the proxy ranks? (`make bench-init`, after `make demo`)

The control (FPN + FCOS head) and N uniformly sampled NAS-FCOS genotypes, each scored by the demo
proxy (`nas-fcos-demo`) with S seeds under two head initialisations that draw the same random
numbers: *before*, N(0, 0.01) for every conv whatever its fan-in; *after*, the current fair std
0.01·sqrt(9·width/fan_in) (models/heads.py). Reported: every genotype's mean reward both ways,
Kendall tau and Spearman rho between the two rankings, the mean change, the control's rank, and
the proxy's seed noise under each. Retraining uses the same initialisation as the proxy, so this is
also how far the fix moves the search's choices. Writes benchmarks/init.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def scores(genotypes, spec, cache, seeds: int, uniform: bool) -> list[list[float]]:
    import nascli.models.heads as heads
    from nascli.methods.decoder import evaluate
    from nascli.protocol import rescore_data_seed

    fair = heads.fair_std
    heads.fair_std = (lambda conv, width: 0.01) if uniform else fair
    try:
        out = []
        for g in genotypes:
            rewards = []
            for k in range(seeds):
                r = evaluate(g, spec, cache, 10**9 + k, rescore_data_seed(0, k))
                rewards.append(r.reward if r.status == "done" else float("nan"))
            out.append(rewards)
            print(f"{'before' if uniform else 'after '} {g.space:<9} {rewards}", flush=True)
        return out
    finally:
        heads.fair_std = fair


def pooled_std(rows) -> float:
    parts = [statistics.variance(r) for r in rows if len(r) > 1]
    return statistics.fmean(parts) ** 0.5


def main():
    from nascli.config import ProxySpec, load_spec, proxy_specs
    from nascli.spaces import space_for
    from nascli.report import kendall_tau, spearman_rho
    from nascli.search import control_genotype
    from nascli.strategies.random import RandomStrategy

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--genotypes", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/init.json")
    args = parser.parse_args()
    path = proxy_specs()["nas-fcos-demo"]
    spec = load_spec(ProxySpec, path)
    genotypes = [control_genotype(spec, args.cache, path)] + RandomStrategy(space_for(spec), seed=args.seed).ask(
        args.genotypes)
    names = ["control"] + [f"random-{i}" for i in range(args.genotypes)]
    before = scores(genotypes, spec, args.cache, args.seeds, uniform=True)
    after = scores(genotypes, spec, args.cache, args.seeds, uniform=False)
    mb, ma = [statistics.fmean(r) for r in before], [statistics.fmean(r) for r in after]
    rank = lambda means: 1 + sorted(means, reverse=True).index(means[0])  # noqa: E731  (the control's)
    result = {"proxy": "nas-fcos-demo", "seeds": args.seeds, "cache": args.cache,
              "rows": [{"name": n, "before": b, "after": a} for n, b, a in zip(names, before, after)],
              "kendall_tau": kendall_tau(mb, ma), "spearman_rho": spearman_rho(mb, ma),
              "mean_change": statistics.fmean(a - b for a, b in zip(ma, mb)),
              "control_rank": {"before": rank(mb), "after": rank(ma)},
              "seed_noise": {"before": pooled_std(before), "after": pooled_std(after)},
              "spread": {"before": statistics.stdev(mb), "after": statistics.stdev(ma)}}
    Path(args.out).write_text(json.dumps(result, indent=1))
    for n, b, a in zip(names, mb, ma):
        print(f"{n:<10} before {b:8.4f}  after {a:8.4f}  change {a - b:+.4f}")
    print(f"Kendall tau {result['kendall_tau']:.3f}, Spearman rho {result['spearman_rho']:.3f}, mean change "
          f"{result['mean_change']:+.4f}; control rank {result['control_rank']}; seed noise {result['seed_noise']}; "
          f"spread {result['spread']}; wrote {args.out}")


if __name__ == "__main__":
    main()
