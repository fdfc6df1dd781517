"""DetNAS's Figure 2 on our data: evolution vs random sampling on one trained supernet, the same
budget (`make bench-detnas`, after `make sp-nas-demo` has cached the demo's crops as images).

The evolution run trains the supernet (resumable) and searches; the random run gets a copy of the
same supernet file and samples as many paths. Reported: each search's best-so-far fitness (meta-val
AP of a path with inherited weights, BN recalibrated) per trial, its re-scored best against the
ShuffleNetV2 control, the supernet's training time and the searches' wall times.

`python -m benchmarks.bench_detnas --cache pipelines/sp-nas/cache/<key>.h5 --trials 40`
writes benchmarks/detnas.json and benchmarks/detnas.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .bench_auto_fpn import row, search


def curve(summary: dict) -> list:
    best, out = float("-inf"), []
    for trial, reward in summary["curve"]:
        best = max(best, reward)
        out.append([trial, best])
    return out


def figure(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in results.items():
        ax.plot(*zip(*r["best_so_far"]), label=f"{name} (best so far)")
    control = next(iter(results.values()))["control_mean"]
    if control is not None:
        ax.axhline(control, color="k", lw=1, label="ShuffleNetV2 control")
    ax.set_xlabel("paths scored")
    ax.set_ylabel("meta-val AP, inherited weights")
    ax.set_title("DetNAS: evolution vs random on one supernet")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--proxy", default="detnas", help="a proxy spec name or file (space detnas)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default="benchmarks/runs/detnas")
    parser.add_argument("--out", default="benchmarks/detnas.json")
    args = parser.parse_args()
    runs = Path(args.runs)
    evolution = search("detnas", args.proxy, args.cache, args.trials, runs / "evolution", args.seed)
    # the paper's Figure 2: random sampling scores paths of the same trained supernet
    random = search("random", args.proxy, args.cache, args.trials, runs / "random", args.seed,
                    supernet=runs / "evolution")
    results = {name: {**row(name, s), "best_so_far": curve(s)} for name, s in
               (("evolution", evolution), ("random", random))}
    # a resumed search's wall time is only this call's: keep the one written when it first ran
    previous = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    for name, r in results.items():
        if r["resumed"] and name in previous:
            r["wall_seconds"] = previous[name]["wall_seconds"]
    Path(args.out).write_text(json.dumps(results, indent=1))
    figure(results, Path(args.out).with_suffix(".png"))
    for name, r in results.items():
        print(f"{name:<10} best AP {r['mean']} ± {r['std']} (trial {r['best_trial']}), control {r['control_mean']}, "
              f"{r['wall_seconds'] / 60:.1f} min; {r['verdict']}")


if __name__ == "__main__":
    main()
