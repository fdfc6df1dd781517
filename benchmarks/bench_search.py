"""NAS-FCOS (LSTM + PPO) vs random search on the same cache, proxy and trial budget.

`python -m benchmarks.bench_search --cache pipelines/nas-fcos/cache/<key>.h5 --trials 60` (after
`make demo`): for each method the trials per hour, the best reward after each quarter of the
budget, the mean reward of the last half, and the re-scored best (fresh seeds) against the control
with the search's verdict; then whether the controller's re-scored best beats random's beyond their
seed noise. Both searches live in `--runs` and resume; writes benchmarks/search.json and the
best-so-far curves to benchmarks/search_curves.png.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from .bench_auto_fpn import row, search
from .bench_detnas import curve


def run(cache, trials: int, proxy: str, seed: int, runs: Path, out_json: Path, latency_target=None) -> dict:
    from rich.console import Console
    from rich.table import Table

    results = {}
    for method in ("nas-fcos", "random"):
        s = search(method, proxy, cache, trials, runs / method, seed, latency_target=latency_target)
        results[method] = {**row(method, s), "rewards": [reward for _, reward in sorted(s["curve"])],
                           "best_so_far": curve(s), "failed": s["failed"]}
    results["controller_vs_random"] = difference(results["nas-fcos"], results["random"])
    out_json.write_text(json.dumps(results, indent=1))
    _figure(results, out_json.with_name(f"{out_json.stem}_curves.png"))
    table = Table(title=f"{trials} trials each, proxy {proxy}, seed {seed}, same cache")
    quarters = [max(1, trials * q // 4) for q in (1, 2, 3, 4)]
    for col in ("method", "trials/hour", *[f"best after {q}" for q in quarters], "mean, last half",
                "re-scored best", "control"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for method in ("nas-fcos", "random"):
        r = results[method]
        best = [b for _, b in r["best_so_far"]]
        half = r["rewards"][len(r["rewards"]) // 2:]
        if not best:  # under a latency target a strategy may find nothing within it
            table.add_row(method, "0", *["—"] * 5, f"none trained in {r['asked']} asks",
                          f"{r['control_mean']:.3f} ± {r['control_std']:.3f}")
            continue
        table.add_row(method, f"{3600 * len(r['rewards']) / r['wall_seconds']:.0f}",
                      *[f"{best[min(q, len(best)) - 1]:.3f}" for q in quarters],
                      f"{sum(half) / max(1, len(half)):.3f}", f"{r['mean']:.3f} ± {r['std']:.3f} (trial {r['best_trial']})",
                      f"{r['control_mean']:.3f} ± {r['control_std']:.3f}")
    Console(width=160).print(table)
    for method in ("nas-fcos", "random"):
        Console().print(f"{method}: {results[method]['verdict']}")
    Console().print(f"controller vs random: {results['controller_vs_random']['text']}")
    return results


def difference(a: dict, b: dict, strategy: str = "the controller") -> dict:
    """a's re-scored best minus b's (each: mean, std, seeds), against 2 standard errors of that
    difference (the two bests' pooled seed noise, as the search's own verdict)."""
    from nascli.protocol import seed_noise

    if a["mean"] is None or b["mean"] is None:  # a search under a latency target that trained nothing
        empty = strategy if a["mean"] is None else "random"
        asked = (a if a["mean"] is None else b).get("asked")
        return {"difference": None, "two_se": None,
                "text": f"{empty} trained no candidate within the target ({asked} asked): nothing to compare"}
    diff = a["mean"] - b["mean"]
    two_se = 2 * seed_noise([a, b]) * math.sqrt(1 / a["seeds"] + 1 / b["seeds"])
    verdict = "beats" if diff > two_se else ("loses to" if diff < -two_se else "ties with")
    return {"difference": diff, "two_se": two_se,
            "text": f"{strategy}'s best {verdict} random's by {diff:+.4g} (2 s.e. {two_se:.4g})"}


def _figure(results: dict, out_png: Path) -> None:
    from benchmarks.common import save_figure, subplots

    fig, ax = subplots(figsize=(7, 4))
    for method in ("nas-fcos", "random"):
        res = results[method]
        if not res["best_so_far"]:
            continue
        ax.plot(*zip(*res["best_so_far"]), label=f"{method}: best so far")
        ax.scatter(range(1, len(res["rewards"]) + 1), res["rewards"], s=8, alpha=0.4)
    if res["control_mean"] is not None:
        ax.axhline(res["control_mean"], color="k", lw=1, label="control (FPN + FCOS head)")
    ax.set_xlabel("trial")
    ax.set_ylabel("reward = -(L_cls + L_reg + L_ctr), meta-val")
    ax.legend()
    save_figure(fig, out_png)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--proxy", default="nas-fcos-demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default="benchmarks/runs/search")
    parser.add_argument("--out", default="benchmarks/search.json")
    parser.add_argument("--latency-target", default=None, help="both searches under it, e.g. 1.0x (search --latency-target)")
    args = parser.parse_args()
    run(args.cache, args.trials, args.proxy, args.seed, Path(args.runs), Path(args.out), args.latency_target)


if __name__ == "__main__":
    main()
