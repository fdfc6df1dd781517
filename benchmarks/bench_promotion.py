"""A promoted run as the README reports it: per architecture the grid's meta-val AP, the chosen
rate, test AP per seed and mean ± std, cost; the test verdict and the proxy verdict.

`python -m benchmarks.bench_promotion --run pipelines/nas-fcos/run --out benchmarks/demo.json`
(after `make demo`; `make demo-full` writes benchmarks/demo-full.json the same way).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def summary(run: Path, latency_images: int = 0, runtimes=("torch",), latency_target=None) -> dict:
    """`latency_images` > 0: every architecture re-timed with the control in one process,
    interleaved (compare's latency), each with its ratio to the control and an interval, under
    each of `runtimes` (the first is the verdict's; the others are kept as `latency_<runtime>`).
    `latency_target` (e.g. "1.0x"): a win must also run within it (default: the search's)."""
    import torch

    from nascli.report import compare
    from nascli.retrain import same_recipe

    other = {}
    for runtime in runtimes[1:] if latency_images else ():
        other[runtime] = {a["arch"]: a.get("latency") for a in
                          compare([run], latency_images=latency_images, runtime=runtime)["architectures"]}
    c = compare([run], latency_images=latency_images, runtime=runtimes[0], latency_target=latency_target)
    archs = []
    for a in c["architectures"]:
        seeds = {}
        for r in c["rows"]:
            if r["arch"] == a["arch"] and r["stage"] == "final" and r["status"] == "done" and same_recipe(r, a):
                history = torch.load(r["checkpoint"], map_location="cpu", weights_only=False)["history"]
                seeds[r["seed"]] = {"AP": 100 * r["AP"], "AP50": 100 * r["AP50"],
                                    "cls_loss": [round(e["cls"], 3) for e in history]}
        archs.append({"arch": a["arch"], "proxy_reward": a["reward"], "status": a["status"],
                      "grid_meta_val_AP": {k: None if v is None else 100 * v for k, v in a["grid"].items()},
                      "lr": a["lr"], "optimizer": a["optimizer"], "seeds": seeds,
                      "AP_mean": None if a.get("AP") is None else 100 * a["AP"],
                      "AP_std": None if a.get("AP_std") is None else 100 * a["AP_std"],
                      "AP50_mean": None if a.get("AP50") is None else 100 * a["AP50"],
                      "params": a.get("params"), "flops": a.get("flops"), "latency_ms": a.get("latency_ms"),
                      "latency": a.get("latency"),
                      **{f"latency_{runtime}": timed.get(a["arch"]) for runtime, timed in other.items()},
                      "train_minutes": a["minutes"]})
    # compute per stage (training + evaluation; wall time of the rows, pauses included)
    minutes = {stage: sum((r.get("train_seconds") or 0) + (r.get("eval_seconds") or 0)
                          for r in c["rows"] if r["stage"] == stage) / 60 for stage in ("grid", "final")}
    return {"run": str(run), "architectures": archs, "test_verdict": c["test_verdict"][str(run)],
            "proxy_verdict": c["fidelity"][str(run)]["verdict"], "grid_minutes": minutes["grid"],
            "final_minutes": minutes["final"]}


def add_latency_arguments(parser) -> None:
    """The re-timing options of every promotion summary (this one, bench_search_retrain)."""
    parser.add_argument("--latency-images", type=int, default=0,
                        help="re-time every architecture with the control, interleaved, on this many test images")
    parser.add_argument("--runtimes", default="torch", help="comma-separated: torch,onnxruntime (the first is the verdict's)")
    parser.add_argument("--latency-target", default=None, help="e.g. 1.0x: a win must also run within it")


def latency_options(args) -> dict:
    return {"latency_images": args.latency_images, "runtimes": tuple(args.runtimes.split(",")),
            "latency_target": args.latency_target}


def latency_text(lat: dict | None) -> str:
    """A compare latency as a table cell: ms/image (× control, its 95 % interval)."""
    if not lat:
        return "—"
    interval = lat.get("ratio_interval")
    return (f"{lat['latency_ms']:.1f} ({lat['ratio']:.2f}×"
            + (f", {interval[0]:.2f}-{interval[1]:.2f}" if interval else "") + ")")


def table_lines(result: dict) -> list[str]:
    """The promotion as a Markdown table (benchmarks/README.md): AP, FLOPs and latency under each
    runtime timed, each against the control."""
    archs = result["architectures"]
    control = next((a for a in archs if a["arch"] == "baseline"), None)
    runtimes = [k for k in ("latency", *sorted(k for k in archs[0] if k.startswith("latency_") and k != "latency_ms"))
                if any(a.get(k) for a in archs)] if archs else []

    names = {"latency": "torch", **{k: k.removeprefix("latency_") for k in runtimes if k != "latency"}}
    lines = ["| architecture | chosen on meta-val | test AP, mean ± std (seeds) | FLOPs vs control | "
             + " | ".join(f"ms/image under {names[k]} (× control, 95 %)" for k in runtimes) + " |",
             "|" + " --- |" * (4 + len(runtimes))]
    for a in archs:
        ap = "—" if a["AP_mean"] is None else f"{a['AP_mean']:.1f} ± {a['AP_std'] or 0:.1f} ({len(a['seeds'])})"
        flops = f"{a['flops'] / control['flops']:.2f}×" if control and a.get("flops") and control.get("flops") else "—"
        chosen = "—" if a["lr"] is None else f"{a['optimizer']} {a['lr']:g}"
        lines.append(f"| {a['arch']} | {chosen} | {ap} | {flops} | "
                     + " | ".join(latency_text(a.get(k)) for k in runtimes) + " |")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--out", required=True)
    add_latency_arguments(parser)
    parser.add_argument("--wall-seconds", type=float, default=None,
                        help="the end-to-end time of the job that made the run (kept as wall_minutes)")
    args = parser.parse_args()
    result = summary(Path(args.run), **latency_options(args))
    if args.wall_seconds is not None:
        result["wall_minutes"] = args.wall_seconds / 60
    Path(args.out).write_text(json.dumps(result, indent=1))
    for a in result["architectures"]:
        per_seed = ", ".join(f"{v['AP']:.1f}" for v in a["seeds"].values())
        mean = "" if a["AP_mean"] is None else f"{a['AP_mean']:.1f} ± {a['AP_std'] or 0:.1f}"
        print(f"{a['arch']:<12} grid {a['grid_meta_val_AP']} lr {a['lr']} test AP [{per_seed}] {mean}")
    print("\n".join(table_lines(result)))
    print(f"test verdict: {result['test_verdict']['text']}\nproxy verdict: {result['proxy_verdict']}\nwrote {args.out}")


if __name__ == "__main__":
    main()
