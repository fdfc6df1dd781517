"""NAS-FCOS (LSTM + PPO) vs random search on the same cache, proxy and trial budget.

`python -m benchmarks.bench_search --cache demo/cache/<key>.h5 --trials 40` (after `make demo`):
prints trials per hour for each method and the best reward after each quarter of the budget,
and writes both best-so-far curves to one figure.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def run(cache, trials: int, proxy: str, seed: int, out_png: Path):
    from rich.console import Console
    from rich.table import Table

    from nascli.search import run_search

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("nas-fcos", "random"):
            started = time.perf_counter()
            r = run_search(method, proxy, cache, trials, Path(tmp) / method, seed=seed)
            seconds = time.perf_counter() - started
            curve = sorted(r["curve"])
            best, running = [], float("-inf")
            for _, reward in curve:
                running = max(running, reward)
                best.append(running)
            results[method] = {"seconds": seconds, "best": best, "rewards": [rw for _, rw in curve],
                               "failed": r["failed"]}
    _figure(results, out_png)
    table = Table(title=f"{trials} trials each, proxy {proxy}, seed {seed}, same cache")
    quarters = [max(1, trials * q // 4) for q in (1, 2, 3, 4)]
    for col in ("method", "trials/hour", *[f"best after {q}" for q in quarters],
                "mean reward, last half"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for method, res in results.items():
        half = res["rewards"][len(res["rewards"]) // 2:]
        table.add_row(method, f"{3600 * trials / res['seconds']:.0f}",
                      *[f"{res['best'][min(q, len(res['best'])) - 1]:.4f}" for q in quarters],
                      f"{sum(half) / max(1, len(half)):.4f}")
    Console(width=140).print(table)
    Console().print(f"figure: {out_png}")
    return results


def _figure(results: dict, out_png: Path) -> None:
    from benchmarks.common import save_figure, subplots

    fig, ax = subplots(figsize=(7, 4))
    for method, res in results.items():
        xs = range(1, len(res["best"]) + 1)
        ax.plot(xs, res["best"], label=f"{method}: best so far")
        ax.scatter(xs, res["rewards"], s=8, alpha=0.4)
    ax.set_xlabel("trial")
    ax.set_ylabel("reward = -(L_cls + L_reg + L_ctr), meta-val")
    ax.legend()
    save_figure(fig, out_png)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--proxy", default="nas-fcos-demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/search_curves.png")
    args = parser.parse_args()
    run(args.cache, args.trials, args.proxy, args.seed, Path(args.out))


if __name__ == "__main__":
    main()
