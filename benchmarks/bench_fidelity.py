"""Proxy fidelity: does the proxy's ranking predict the retrained AP? (`make fidelity`)

For a finished search run (its cache, its control, its re-scored best trials), N architectures
that span the space: the control, the best `--top` trials of the search, and `--random`
uniformly sampled genotypes (a spread of quality is what makes tau informative). Each is scored by
the run's proxy (mean of `--seeds` seeds, paired batches) and promoted by `nascli retrain` (the
baseline's backbone and data; each architecture's rate chosen on meta-val from the grid, then
`--train-seeds` training seeds of `--epochs`, two by default), then evaluated on the test split.
Reported: Kendall tau-b of proxy mean against mean test AP with a bootstrap 90% interval, Spearman
rho, the proxy's seed noise, the retrained AP's seed noise (pooled over every architecture with
more than one seed), and a figure.

Resumable: every retrained row is in the run database (RUN/run.db) and every proxy score a line
in RUN/fidelity/proxy.json, so a killed run continues where it stopped.

`python -m benchmarks.bench_fidelity --run pipelines/nas-fcos/run --test pipelines/nas-fcos/test.json`
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import numpy as np


def architectures(run: Path, top: int, random: int, seed: int) -> list[tuple[str, object]]:
    """(name, genotype): the control, the run's best `top` (re-scored first), `random` samples."""
    from nascli.config import ProxySpec, load_spec
    from nascli.spaces import space_for
    from nascli.protocol import ranked
    from nascli.spaces import load_genotype
    from nascli.store import RunStore
    from nascli.strategies.random import RandomStrategy

    store = RunStore(run, create=False)
    try:
        out = [("baseline", load_genotype(store.control().genotype, "control"))]
        out += [(f"trial-{t['trial']}", load_genotype(t["genotype"])) for t in ranked(store)[:top]]
    finally:
        store.close()
    space = space_for(load_spec(ProxySpec, run / "spec.yaml"))
    out += [(f"random-{k}", g) for k, g in enumerate(RandomStrategy(space, seed=10_000 + seed).ask(random))]
    return out


#: Proxy seeds of this benchmark: trial seeds (seed·100003 + id) and re-scoring seeds
#: (1e6·(k+1) + ...) stay below it for any run seed < 10,000 and k < 999.
FIDELITY_SEED_BASE = 10**9


def proxy_scores(run: Path, archs, seeds: int) -> dict:
    """{name: [reward per seed]}, computed once per (architecture, seed) and kept in a json (with
    each score's seconds in proxy-seconds.json)."""
    from nascli.config import ProxySpec, load_spec
    from nascli.methods.decoder import evaluate
    from nascli.protocol import rescore_data_seed
    from nascli.store import RunStore

    path = run / "fidelity" / "proxy.json"
    times_path = path.with_name("proxy-seconds.json")  # beside it: the old format stays readable
    path.parent.mkdir(exist_ok=True)
    done = json.loads(path.read_text()) if path.is_file() else {}
    times = json.loads(times_path.read_text()) if times_path.is_file() else {}
    store = RunStore(run, create=False)
    meta = store.meta()
    store.close()
    spec = load_spec(ProxySpec, run / "spec.yaml")
    for k, (name, genotype) in enumerate(archs):
        while len(done.get(name, [])) < seeds:
            j = len(done.get(name, []))
            # seeds of their own (above every trial's and re-scoring's), batch orders the re-scoring's:
            # fresh for the search's winners, paired across architectures
            s = FIDELITY_SEED_BASE + 1000 * k + j
            r = evaluate(genotype, spec, meta["cache"], s, rescore_data_seed(meta["seed"], j))
            done.setdefault(name, []).append(r.reward if r.status == "done" else None)
            times.setdefault(name, []).append(r.seconds)
            times_path.write_text(json.dumps(times, indent=1))
            path.write_text(json.dumps(done, indent=1))
            print(f"proxy {name} seed {len(done[name])}: {done[name][-1]}", flush=True)
    return done


def retrained(run: Path, archs, test: Path, epochs: int | None, top: int, lr: float | None = None,
              train_seeds: int = 2, lr_grid=None) -> tuple[dict, dict, float]:
    """{name: mean test AP over seeds}, {name: {seed: AP}} and the seconds it all took (the grid
    included). Every architecture is promoted by `nascli retrain`: its rate chosen on meta-val
    from the grid (or `lr` pinned), then `train_seeds` seeds of the full schedule on test."""
    from nascli.report import compare
    from nascli.retrain import Promotion, retrain

    folder = run / "fidelity"
    files = []
    for name, genotype in archs:
        if name.startswith("random-"):
            path = folder / f"{name}.json"
            path.write_text(genotype.to_json())
            files.append(str(path))
    progress = lambda e: print(f"  {e['arch']} epoch {e['epoch']}/{e['epochs']} step {e['step']}/{e['steps']}",  # noqa: E731
                               flush=True) if e["step"] == e["steps"] else None
    r = retrain(run, Promotion(top=top, archs=tuple(files), val=test, epochs=epochs, lr=lr, lr_grid=lr_grid,
                               seeds=train_seeds, device="cpu"), on_progress=progress)
    summary = {a["arch"]: a for a in compare([run])["architectures"]}
    ap = {name: a.get("AP") for name, a in summary.items()}
    by_seed = {name: a["ap_by_seed"] for name, a in summary.items()}
    costs = {name: {k: a.get(k) for k in COSTS} for name, a in summary.items()}
    return ap, by_seed, r["grid_seconds"] + r["final_seconds"], costs


#: What a fidelity row keeps of each architecture's cost: the baselines a proxy must beat
#: ("is the proxy better than counting parameters?", issue 43).
COSTS = ("params", "flops", "latency_ms")


def figure(rows, result, path: Path) -> Path:
    from benchmarks.common import save_figure, subplots

    fig, ax = subplots(figsize=(6.5, 4.5))
    for r in rows:
        color = "C3" if r["name"] == "baseline" else ("C2" if r["name"].startswith("trial") else "C0")
        ax.errorbar(r["proxy_mean"], 100 * r["AP"], xerr=r["proxy_std"] or 0, fmt="o", color=color, capsize=3)
        ax.annotate(r["name"], (r["proxy_mean"], 100 * r["AP"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    lo, hi = result["tau_interval"]
    ax.set_title(f"proxy fidelity over {result['n']} architectures: Kendall tau {result['kendall_tau']:.2f} "
                 f"[{lo:.2f}, {hi:.2f}], rho {result['spearman_rho']:.2f}", fontsize=9)
    ax.set_xlabel("proxy reward (mean ± std over seeds)")
    ax.set_ylabel("retrained AP on the test split (%)")
    return save_figure(fig, path)


def run(run_dir, test, top: int, random: int, seeds: int, epochs: int | None, seed: int, out: Path,
        lr: float | None = None, lr_grid=None, train_seeds: int = 2) -> dict:
    from nascli.report import bootstrap_tau, kendall_tau, spearman_rho

    run_dir = Path(run_dir)
    archs = architectures(run_dir, top, random, seed)
    proxy = proxy_scores(run_dir, archs, seeds)
    ap, by_seed, retrain_seconds, costs = retrained(run_dir, archs, Path(test), epochs, top, lr, train_seeds, lr_grid)
    times_path = run_dir / "fidelity" / "proxy-seconds.json"
    proxy_seconds = (sum(sum(v) for v in json.loads(times_path.read_text()).values())
                     if times_path.is_file() else None)
    rows = []
    for name, genotype in archs:
        rewards = [r for r in proxy[name] if r is not None]
        if ap.get(name) is None or not rewards:
            continue
        rows.append({"name": name, "proxy_mean": statistics.fmean(rewards),
                     "proxy_std": statistics.stdev(rewards) if len(rewards) > 1 else None, "AP": ap[name],
                     **costs.get(name, {}), "genotype": json.loads(genotype.to_json())})
    x, y = [r["proxy_mean"] for r in rows], [r["AP"] for r in rows]
    # the same tau for what needs no proxy at all: bigger (more parameters, FLOPs, time) = better
    baselines = {k: {"kendall_tau": kendall_tau(v, y), "tau_interval": bootstrap_tau(v, y, seed=seed)}
                 for k in COSTS for v in [[r.get(k) for r in rows]] if all(c is not None for c in v)}
    variances = [r["proxy_std"] ** 2 for r in rows if r["proxy_std"] is not None]
    spreads = [(len(v) - 1, statistics.variance(v.values())) for v in by_seed.values() if len(v) > 1]
    result = {"n": len(rows), "kendall_tau": kendall_tau(x, y), "spearman_rho": spearman_rho(x, y),
              "tau_interval": bootstrap_tau(x, y, seed=seed), "baselines": baselines,
              "proxy_seed_noise": math.sqrt(statistics.fmean(variances)) if variances else None,
              # pooled std of test AP over training seeds, every architecture
              "ap_seed_noise": math.sqrt(sum(d * v for d, v in spreads) / sum(d for d, _ in spreads)) if spreads else None,
              "ap_by_seed": by_seed,
              # compute time summed over the phases (a resumed run's pauses excluded); proxy None
              # when its scores predate proxy-seconds.json
              "seconds": {"proxy": proxy_seconds, "retrain": retrain_seconds}, "rows": rows}
    out.write_text(json.dumps(result, indent=1))
    figure(rows, result, out.with_suffix(".png"))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a finished search run (with its control)")
    parser.add_argument("--test", required=True, help="the test split (COCO json) to evaluate on")
    parser.add_argument("--top", type=int, default=3)
    parser.add_argument("--random", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None, help="retraining epochs (default: the baseline's)")
    parser.add_argument("--lr", type=float, default=None, help="pin one retraining rate (default: the grid on meta-val)")
    parser.add_argument("--lr-grid", default=None, help="the promotion grid, e.g. 0.005,0.01,0.02,adamw:4e-4 "
                                                         "(default: retrain's)")
    parser.add_argument("--train-seeds", type=int, default=2, help="retraining seeds per architecture (an "
                        "architecture already retrained with more keeps them all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/fidelity.json")
    args = parser.parse_args()
    grid = tuple(e if ":" in e else float(e) for e in args.lr_grid.split(",")) if args.lr_grid else None
    r = run(args.run, args.test, args.top, args.random, args.seeds, args.epochs, args.seed, Path(args.out), args.lr,
            grid, args.train_seeds)
    print(f"{'arch':<12} {'proxy mean':>11} {'± std':>8} {'AP':>6}")
    for row in sorted(r["rows"], key=lambda x: -x["AP"]):
        std = f"{row['proxy_std']:.4f}" if row["proxy_std"] is not None else ""
        print(f"{row['name']:<12} {row['proxy_mean']:>11.4f} {std:>8} {100 * row['AP']:>6.1f}")
    lo, hi = r["tau_interval"]
    print(f"Kendall tau-b {r['kendall_tau']:.3f} (bootstrap 90% [{lo:.3f}, {hi:.3f}]), Spearman rho "
          f"{r['spearman_rho']:.3f}, n = {r['n']}; proxy seed noise {r['proxy_seed_noise']}; "
          f"retrained AP seed noise {r['ap_seed_noise']}; seconds {r['seconds']}")


if __name__ == "__main__":
    main()
