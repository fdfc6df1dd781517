"""Auto-FPN's three resource presets on one cache, against the control and a NAS-FCOS search of the
same budget (`make bench-auto-fpn`, after `make demo`).

For each λ preset (small 0.2, middle 0.02, big 0.002; papers/auto-fpn.md §4.1) a full
`nascli search --method auto-fpn` run of `--trials` supernet epochs: the decoded architecture at the
end (re-scored with fresh seeds), its params and FLOPs, its proxy score (mean ± std) against the
control's; and the search's wall time beside a NAS-FCOS controller search with as many trials on
the same cache. Each search is a run folder under `--runs`; a killed benchmark resumes them.

`python -m benchmarks.bench_auto_fpn --cache pipelines/nas-fcos/cache/<key>.h5 --trials 6`
writes benchmarks/auto_fpn.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def search(method: str, proxy: str, cache, trials: int, run: Path, seed: int, lam=None, supernet=None,
           latency_target=None) -> dict:
    """One search (resumed if its folder holds a run; under `latency_target` if given); its summary
    and its wall seconds: the run's own clock, summed over every call that resumed it (this call's
    where the run keeps none)."""
    from nascli.search import run_search

    started = time.perf_counter()
    resume = (run / "run.db").is_file()
    summary = run_search(method, proxy, cache, None if resume else trials, run, seed=seed, resume=resume, lam=lam,
                         supernet=supernet, latency_target=latency_target)
    # the summary carries the run's meta, its clock included
    return {**summary, "wall_seconds": summary.get("elapsed") or time.perf_counter() - started, "resumed": resume}


def row(name: str, summary: dict) -> dict:
    best = summary["top"][0] if summary["top"] else {}
    control = summary["control"] or {}
    # trials: trained candidates; asked: also those skipped untrained over a latency target
    return {"search": name, "lambda": summary.get("lambda"), "trials": summary["finished"] - summary["skipped"],
            "asked": summary["finished"],
            "best_trial": best.get("trial"), "mean": best.get("mean"), "std": best.get("std"),
            "seeds": best.get("seeds"),
            "params": best.get("params"), "flops": best.get("flops"),
            "control_mean": control.get("mean"), "control_std": control.get("std"),
            "verdict": summary["verdict"]["text"], "wall_seconds": summary["wall_seconds"],
            "resumed": summary["resumed"], "genotype": best.get("genotype")}


def main():
    from nascli.strategies.darts import LAMBDA_PRESETS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--trials", type=int, default=6, help="supernet epochs (= trials) per search")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default="benchmarks/runs/auto-fpn")
    parser.add_argument("--out", default="benchmarks/auto_fpn.json")
    args = parser.parse_args()
    runs = Path(args.runs)
    rows = [row(f"auto-fpn {preset}", search("auto-fpn", "auto-fpn", args.cache, args.trials, runs / preset,
                                             args.seed, preset))
            for preset in LAMBDA_PRESETS]
    rows.append(row("nas-fcos", search("nas-fcos", "nas-fcos-demo", args.cache, args.trials, runs / "nas-fcos",
                                       args.seed)))
    Path(args.out).write_text(json.dumps(rows, indent=1))
    print(f"{'search':<18} {'lambda':>7} {'params M':>9} {'GFLOPs':>8} {'proxy mean ± std':>20} "
          f"{'control':>18} {'wall s':>8}")
    for r in rows:
        score = f"{r['mean']:.4f} ± {r['std']:.4f}" if r["mean"] is not None and r["std"] is not None else ""
        control = f"{r['control_mean']:.4f} ± {r['control_std']:.4f}" if r["control_std"] is not None else ""
        print(f"{r['search']:<18} {r['lambda'] if r['lambda'] is not None else '':>7} "
              f"{(r['params'] or 0) / 1e6:>9.3f} {(r['flops'] or 0) / 1e9:>8.3f} {score:>20} {control:>18} "
              f"{r['wall_seconds']:>8.0f}{' (resumed)' if r['resumed'] else ''}")
        print(f"  {r['verdict']}")


if __name__ == "__main__":
    main()
