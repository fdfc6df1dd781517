"""Does a proxy's reward tell candidates apart? Loss vs AP reward, measured on one cache.

The control and N uniformly sampled genotypes of the spec's space are each trained S times (seeds
draw the initial weights; the batch order is the search's, shared) and every trained candidate is
scored both ways at once: AP@[.5:.95] on meta-val and -(sum of the losses) on meta-val. For each
reward kind: the pooled seed noise (std within a genotype), the spread between genotypes (std of
the per-genotype means), their ratio, and the share of genotype pairs whose means differ by more
than two standard errors (the search verdict's rule). A reward whose spread does not clearly
exceed its noise cannot steer a search; the spec should use the other kind.

`python -m benchmarks.bench_reward_noise --cache pipelines/nas-fcos/cache/<key>.h5 --proxy nas-fpn`
writes benchmarks/reward_noise-<proxy>.json and .png.

`--study` measures the same for several proxy designs (DESIGNS: fewer stacked pyramids during the
proxy, longer training, a wider decoder) and keeps the cheapest whose better reward separates
candidates by at least MIN_RATIO seed-noise widths (issue 28); benchmarks/proxy-study-<proxy>.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
from pathlib import Path



#: Proxy designs of the study: overrides of the spec's fields (the spec as shipped first).
DESIGNS = {"as shipped": {}, "1 pyramid": {"repeats": 1}, "3x the steps": {"min_steps": 300},
           "1 pyramid, 3x the steps": {"repeats": 1, "min_steps": 300}, "width 32": {"width": 32}}
#: The spread between candidates, in seed-noise widths, below which a proxy cannot steer a search.
MIN_RATIO = 3.0


def scores(cache, proxy: str, genotypes: int, seeds: int, seed: int, overrides: dict | None = None) -> dict:
    """{name: {"ap": [per seed], "loss": [per seed], "seconds": [...]}} for the control and
    `genotypes` samples, the spec's fields replaced by `overrides`."""
    from nascli.config import ProxySpec, load_spec, resolve_proxy
    from nascli.methods.decoder import evaluate
    from nascli.spaces import space_for
    from nascli.search import control_genotype
    from nascli.strategies.random import RandomStrategy

    spec = load_spec(ProxySpec, resolve_proxy(proxy))
    spec = ProxySpec(**{**spec.model_dump(by_alias=True), **(overrides or {})})  # validated like a spec
    both = spec.model_copy(update={"reward": "ap"})  # the AP pass also sums the losses
    archs = [("control", control_genotype(spec, cache, proxy))]
    archs += [(f"random-{k}", g) for k, g in enumerate(RandomStrategy(space_for(spec), seed=seed).ask(genotypes))]
    out = {}
    for name, genotype in archs:
        out[name] = {"ap": [], "loss": [], "seconds": []}
        for s in range(seeds):
            r = evaluate(genotype, both, cache, seed=1000 * s + 7, data_seed=seed)
            done = r.status == "done"
            out[name]["ap"].append(r.ap.get("AP") if done else None)
            out[name]["loss"].append(-sum(r.losses.values()) if done else None)
            out[name]["seconds"].append(r.seconds)
            print(f"{name} seed {s}: AP {out[name]['ap'][-1]}, -loss {out[name]['loss'][-1]} "
                  f"({r.seconds:.1f} s)", flush=True)
    return out


def separation(per_genotype: list[list[float]]) -> dict:
    """Seed noise, spread between genotype means, and the share of pairs apart by more than the
    search verdict's margin (either way round) — the search's own statistics, not a copy."""
    from nascli.protocol import seed_noise, seed_stats, verdict

    stats = [dict(seed_stats([v if v is not None and math.isfinite(v) else None for v in g]), trial=k)
             for k, g in enumerate(per_genotype)]
    stats = [s for s in stats if s["seeds"] >= 2]
    noise = seed_noise(stats)
    means = [s["mean"] for s in stats]
    spread = statistics.stdev(means)
    pairs = list(itertools.combinations(stats, 2))
    apart = sum(verdict(a, b, noise)["beats_control"] or verdict(b, a, noise)["beats_control"] for a, b in pairs)
    return {"seed_noise": noise, "between_genotypes_std": spread,
            "signal_to_noise": spread / noise if noise > 0 else math.inf,
            "pairs_apart": apart / len(pairs), "means": means}


def figure(raw: dict, result: dict, path: Path) -> Path:
    from benchmarks.common import save_figure, subplots

    names = list(raw)
    fig, axes = subplots(1, 2, figsize=(11, 4.2))
    for ax, kind in zip(axes, ("ap", "loss")):
        for i, name in enumerate(names):
            values = [v for v in raw[name][kind] if v is not None]
            ax.scatter([i] * len(values), values, s=18, color="C3" if name == "control" else "C0")
        r = result[kind]
        ax.set_title(f"{'AP' if kind == 'ap' else '-loss'}: seed noise {r['seed_noise']:.4g}, spread "
                     f"{r['between_genotypes_std']:.4g}\n(ratio {r['signal_to_noise']:.1f}; "
                     f"{100 * r['pairs_apart']:.0f}% of pairs apart by > 2 s.e.)", fontsize=9)
        ax.set_xticks(range(len(names)), names, rotation=60, fontsize=7)
        ax.set_ylabel("reward per seed")
    return save_figure(fig, path)


def study(cache, proxy: str, genotypes: int, seeds: int, seed: int, out: Path) -> dict:
    """Every design of DESIGNS measured (resumable: each design's scores are kept in `out` as they
    finish); the chosen design is the cheapest whose better reward reaches MIN_RATIO."""
    done = json.loads(out.read_text())["designs"] if out.is_file() else {}
    for name, overrides in DESIGNS.items():
        if name not in done:
            raw = scores(cache, proxy, genotypes, seeds, seed, overrides)
            ratios = {kind: separation([raw[n][kind] for n in raw])["signal_to_noise"] for kind in ("ap", "loss")}
            done[name] = {"overrides": overrides, "ratio": ratios, "raw": raw}
            out.write_text(json.dumps({"designs": done}, indent=1))
    for d in done.values():  # the median: one trial held up by another job must not make a design dear
        d["seconds_per_trial"] = statistics.median(t for n in d["raw"] for t in d["raw"][n]["seconds"])
    ok = {n: d for n, d in done.items() if max(d["ratio"].values()) >= MIN_RATIO}
    chosen = min(ok, key=lambda n: ok[n]["seconds_per_trial"]) if ok else None
    result = {"cache": str(cache), "proxy": proxy, "min_ratio": MIN_RATIO, "chosen": chosen, "designs": done}
    out.write_text(json.dumps(result, indent=1))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--proxy", default="nas-fpn")
    parser.add_argument("--genotypes", type=int, default=7)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="default: benchmarks/reward_noise-<proxy>.json")
    parser.add_argument("--study", action="store_true", help="every proxy design of DESIGNS (issue 28)")
    args = parser.parse_args()
    if args.study:
        r = study(args.cache, args.proxy, args.genotypes, args.seeds, args.seed,
                  Path(args.out or f"benchmarks/proxy-study-{Path(args.proxy).stem}.json"))
        for name, d in r["designs"].items():
            print(f"{name:<26} spread/noise AP {d['ratio']['ap']:.2f}, loss {d['ratio']['loss']:.2f}; "
                  f"{d['seconds_per_trial']:.1f} s a trial")
        print(f"chosen: {r['chosen'] or f'none reaches {MIN_RATIO:g}'}")
        return
    raw = scores(args.cache, args.proxy, args.genotypes, args.seeds, args.seed)
    result = {kind: separation([raw[n][kind] for n in raw]) for kind in ("ap", "loss")}
    out = Path(args.out or f"benchmarks/reward_noise-{Path(args.proxy).stem}.json")
    out.write_text(json.dumps({"cache": str(args.cache), "proxy": args.proxy, "raw": raw, **result}, indent=1))
    figure(raw, result, out.with_suffix(".png"))
    for kind, r in result.items():
        print(f"{kind:>4}: seed noise {r['seed_noise']:.4g}, spread between genotypes {r['between_genotypes_std']:.4g}, "
              f"ratio {r['signal_to_noise']:.2f}, pairs apart {100 * r['pairs_apart']:.0f}%")


if __name__ == "__main__":
    main()
