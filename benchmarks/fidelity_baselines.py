"""Is the proxy better than counting parameters? Kendall tau against test AP of the proxy reward and
of each cost alone (more parameters / FLOPs / milliseconds = better), over the architectures a
promotion json holds, with the bootstrap 90 % interval `compare` gives the proxy's tau.

Promotion jsons keep each promoted architecture's cost; the fidelity jsons' random architectures
kept none before issue 43 (bench_fidelity now keeps params, FLOPs, latency and the genotype of
every row), so this reads the promoted ones only.

`python -m benchmarks.fidelity_baselines benchmarks/bccd-promotion-adamw.json ... --out benchmarks/fidelity-baselines.json`
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


MIN_ARCHITECTURES = 4


def taus(path: Path) -> dict:
    from nascli.report import COST_BASELINES, bootstrap_tau, kendall_tau

    archs = json.loads(path.read_text())["architectures"]
    archs = [a for a in (archs.values() if isinstance(archs, dict) else archs)
             if a.get("AP_mean") is not None and a.get("proxy_reward") is not None]
    ap = [a["AP_mean"] for a in archs]
    predictors = {"proxy": [a["proxy_reward"] for a in archs],
                  **{k: [a.get(k) for a in archs] for k in COST_BASELINES}}
    return {"json": str(path), "architectures": [a["arch"] for a in archs], "test_AP": ap,
            "kendall_tau": {name: {"tau": kendall_tau(v, ap), "interval_90": bootstrap_tau(v, ap)}
                            for name, v in predictors.items() if all(x is not None for x in v)}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jsons", nargs="+", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = []
    for path in args.jsons:
        r = taus(path)
        if len(r["architectures"]) < MIN_ARCHITECTURES:  # over 2-3 points a rank correlation says nothing
            print(f"{path}: {len(r['architectures'])} architectures, fewer than {MIN_ARCHITECTURES}: left out")
            continue
        result.append(r)
    for r in result:
        print(f"{r['json']} ({len(r['architectures'])} architectures): " +
              ", ".join(f"{k} {v['tau']:+.2f} [{v['interval_90'][0]:+.2f}, {v['interval_90'][1]:+.2f}]"
                        for k, v in r["kendall_tau"].items()))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
