"""How far to trust the NAS-FCOS proxy, measured in one run on one cache (after `make demo`):

1. before vs after: the control (FPN + FCOS head) and N uniformly sampled genotypes scored by the
   proxy as it was (`legacy_evaluate` below: 6 Adam steps on 96 crops, Polyak average from step 1
   with BatchNorm statistics averaged, default-initialised searched towers, batch order per trial)
   and as it is now (`nascli.methods.decoder.evaluate` with proxies/nas-fcos-demo.yaml); how the ranking moved;
2. seed noise: the control and two genotypes scored with S seeds each, old and new proxy; noise is
   reported against the spread between genotypes (a scale-free signal-to-noise ratio);
3. width: the same W genotypes at widths 16 / 32 / 64 (one seed), Kendall tau of each narrower
   width against the widest; the cheapest with tau >= 0.8 is the one to ship.

`python -m benchmarks.bench_proxy --cache pipelines/nas-fcos/cache/<key>.h5` (or `make bench-proxy`);
writes benchmarks/proxy.json and benchmarks/proxy.png.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch

LEGACY = dict(width=16, epochs=2, min_steps=0, batch_size=32, max_train_samples=96, max_val_samples=60)


def legacy_evaluate(genotype, spec, cache, seed: int) -> float:
    """The proxy before the correctness fixes, kept here as the reference it is measured against."""
    from nascli import trial
    from nascli.spaces import build_decoder

    torch.manual_seed(seed)
    train, val = trial.open_split(str(cache), "train"), trial.open_split(str(cache), "val")
    decoder = build_decoder(genotype, train.in_channels(), len(train.classes), spec.width)
    if genotype.space == "nas-fcos":  # searched towers kept PyTorch's default initialisation
        for m in decoder.head.towers.modules():
            if isinstance(m, torch.nn.Conv2d) and not getattr(m, "keep_init", False):
                m.reset_parameters()
    optimizer = torch.optim.Adam(decoder.parameters(), lr=spec.lr)
    averaged = torch.optim.swa_utils.AveragedModel(
        decoder, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(spec.polyak), use_buffers=True)
    for epoch in range(spec.epochs):
        decoder.train()
        for batch in train.batches(spec.batch_size, True, seed * 1000 + epoch, limit=spec.max_train_samples):
            loss = sum(decoder.loss_from_batch(decoder(batch), batch).values())
            if not torch.isfinite(loss):
                return float("nan")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            averaged.update_parameters(decoder)
    losses, _ = trial.score(averaged.module.eval(), val, spec, False)
    return -sum(losses.values())


def current_evaluate(genotype, spec, cache, seed: int) -> float:
    from nascli.methods.decoder import evaluate

    r = evaluate(genotype, spec, cache, seed, data_seed=0)
    return r.reward if r.status == "done" else float("nan")


def _tau(x, y) -> float:
    from nascli.report import kendall_tau

    keep = [i for i in range(len(x)) if math.isfinite(x[i]) and math.isfinite(y[i])]
    return kendall_tau([x[i] for i in keep], [y[i] for i in keep])


def _rank_of(value, values) -> int:
    """1 = best (highest reward)."""
    return 1 + sum(v > value for v in values if math.isfinite(v))


def run(cache, proxy: str, genotypes: int, seeds: int, widths, width_genotypes: int, seed: int) -> dict:
    from nascli.config import ProxySpec, load_spec, resolve_proxy
    from nascli.spaces import space_for
    from nascli.search import control_genotype
    from nascli.strategies.random import RandomStrategy

    spec = load_spec(ProxySpec, resolve_proxy(proxy))
    legacy = spec.model_copy(update=LEGACY)
    control = control_genotype(spec, cache, proxy)
    sampled = RandomStrategy(space_for(spec), seed=seed).ask(genotypes)
    archs = [control, *sampled]
    out = {"cache": str(cache), "proxy": proxy, "spec": spec.model_dump(), "legacy": LEGACY, "seed": seed}

    timed = {}
    for name, fn, s in (("before", legacy_evaluate, legacy), ("after", current_evaluate, spec)):
        started = time.perf_counter()
        out[name] = [fn(g, s, cache, seed) for g in archs]
        timed[name] = (time.perf_counter() - started) / len(archs)
        print(f"{name}: {len(archs)} architectures, {timed[name]:.1f} s each", flush=True)
    out["seconds_per_trial"] = timed
    out["control_rank"] = {k: _rank_of(out[k][0], out[k]) for k in ("before", "after")}
    out["tau_before_after"] = _tau(out["before"], out["after"])

    noise = {}
    for name, fn, s in (("before", legacy_evaluate, legacy), ("after", current_evaluate, spec)):
        per_arch = [[fn(g, s, cache, 10_000 + k) for k in range(seeds)] for g in archs[:3]]
        pooled = math.sqrt(statistics.fmean(statistics.variance(r) for r in per_arch))
        between = statistics.stdev(v for v in out[name] if math.isfinite(v))
        noise[name] = {"rewards": per_arch, "seed_noise": pooled, "between_genotypes_std": between,
                       "signal_to_noise": between / pooled}
        print(f"{name}: seed noise {pooled:.4f}, spread between genotypes {between:.4f}", flush=True)
    out["noise"] = noise

    chosen = archs[:width_genotypes]
    by_width = {}
    for w in widths:
        s = spec.model_copy(update={"width": w})
        started = time.perf_counter()
        by_width[w] = [current_evaluate(g, s, cache, seed) for g in chosen]
        print(f"width {w}: {(time.perf_counter() - started) / len(chosen):.1f} s a trial", flush=True)
    widest = max(widths)
    out["widths"] = {str(w): {"rewards": by_width[w], "tau_vs_widest": _tau(by_width[w], by_width[widest])}
                     for w in widths}
    ok = [w for w in sorted(widths) if out["widths"][str(w)]["tau_vs_widest"] >= 0.8]
    out["chosen_width"] = ok[0] if ok else widest
    return out


def figure(result: dict, path: Path) -> Path:
    from benchmarks.common import save_figure, subplots

    fig, (left, right) = subplots(1, 2, figsize=(11, 4.5))
    for ax, name in ((left, "before"), (right, "after")):
        values = result[name]
        order = sorted(range(len(values)), key=lambda i: -values[i] if math.isfinite(values[i]) else math.inf)
        ax.scatter(range(len(values)), [values[i] for i in order], s=25,
                   color=["C3" if i == 0 else "C0" for i in order])
        ax.set_title(f"{name}: control (red) ranked {result['control_rank'][name]} of {len(values)}\n"
                     f"seed noise {result['noise'][name]['seed_noise']:.3f}, "
                     f"genotype spread {result['noise'][name]['between_genotypes_std']:.3f}", fontsize=9)
        ax.set_xlabel("architecture, best first")
        ax.set_ylabel("proxy reward")
    return save_figure(fig, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--proxy", default="nas-fcos-demo")
    parser.add_argument("--genotypes", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--widths", default="16,32,64")
    parser.add_argument("--width-genotypes", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/proxy.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    result = run(args.cache, args.proxy, args.genotypes, args.seeds, [int(w) for w in args.widths.split(",")],
                 args.width_genotypes, args.seed)
    Path(args.out).write_text(json.dumps(result, indent=1))
    figure(result, Path(args.out).with_suffix(".png"))
    print(json.dumps({k: result[k] for k in ("control_rank", "tau_before_after", "chosen_width",
                                             "seconds_per_trial")}, indent=1))
    for name in ("before", "after"):
        n = result["noise"][name]
        print(f"{name}: seed noise {n['seed_noise']:.4f}, between genotypes {n['between_genotypes_std']:.4f}, "
              f"signal/noise {n['signal_to_noise']:.2f}")
    for w, v in result["widths"].items():
        print(f"width {w}: tau vs widest {v['tau_vs_widest']:.3f}")


if __name__ == "__main__":
    main()
