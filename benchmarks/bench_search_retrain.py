"""Do bench-search's proxy wins survive a fair promotion? A summary of `make bench-search-retrain`.

`benchmarks/runs/search/promotion` holds the control, the controller's best (trial-N) and random's
best (rank1_trialM) promoted alike by `nascli retrain`: each picks its rate from the grid by
meta-val AP, then trains the full schedule with several seeds and is evaluated on the demo's test
split. This prints, per architecture, the grid's meta-val AP per rate, the chosen rate, test AP per
seed with the classification loss per epoch (a spike after warm-up is a recipe problem, not an
architecture's), mean ± std, FLOPs and latency against the control (re-timed interleaved with
`--latency-images`), and the test verdict; it writes benchmarks/search-retrain.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ARMS = {"baseline": "control", "trial-": "controller's best", "rank1_trial": "random's best"}


def arm(name: str) -> str:
    return next(label for prefix, label in ARMS.items() if name.startswith(prefix))


def collect(run: Path, latency_images: int = 0, runtimes=("torch",), latency_target=None) -> dict:
    """The promoted run as bench_promotion summarises it, each architecture labelled by its arm."""
    from .bench_promotion import summary

    result = summary(run, latency_images, runtimes, latency_target)
    for a in result["architectures"]:
        a["arm"] = arm(a["arch"])
    return result


def main():
    from rich.console import Console
    from rich.table import Table

    from .bench_promotion import add_latency_arguments, latency_options, table_lines

    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default="benchmarks/runs/search/promotion")
    parser.add_argument("--out", default="benchmarks/search-retrain.json")
    add_latency_arguments(parser)
    args = parser.parse_args()
    result = collect(Path(args.run), **latency_options(args))
    Path(args.out).write_text(json.dumps(result, indent=1))
    table = Table(title="promoted on the demo: grid on meta-val, test AP per seed (cls loss per epoch)")
    for col in ("architecture", "grid: lr -> meta-val AP", "lr", "test AP per seed", "mean ± std"):
        table.add_column(col)
    for a in result["architectures"]:
        grid = " ".join(f"{k}:{'x' if v is None else f'{v:.1f}'}" for k, v in a["grid_meta_val_AP"].items())
        seeds = "; ".join(f"{s['AP']:.1f} ({' '.join(f'{c:.2f}' for c in s['cls_loss'])})" for s in a["seeds"].values())
        mean = "" if a["AP_mean"] is None else f"{a['AP_mean']:.1f}" + (
            "" if a["AP_std"] is None else f" ± {a['AP_std']:.1f}")
        table.add_row(a["arm"], grid, "" if a["lr"] is None else f"{a['lr']:g}", seeds, mean)
    Console(width=200).print(table)
    Console(width=200).print("\n".join(table_lines(result)))
    Console().print(f"test verdict: {result['test_verdict']['text']}\nproxy verdict: {result['proxy_verdict']}")
    Console().print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
