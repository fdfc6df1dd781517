"""The evaluation protocol's statistics (docs/protocol.md): the seeds a re-scoring uses, the proxy's seed
noise pooled over re-scored genotypes, the verdict against the control, and the ranking of a
run's trials by their re-scored means. Read by the search, `runs show`, compare and the report."""

from __future__ import annotations

from .store import RunStore


def rescore_seed(run_seed: int, trial_id: int, k: int) -> int:
    """The k-th re-scoring seed of a trial: fresh (never a search trial's seed) and reproducible."""
    return 1_000_000 * (k + 1) + 1000 * run_seed + trial_id


def rescore_data_seed(run_seed: int, k: int) -> int:
    """The batch order of the k-th re-scoring: fresh (the search's order selected the winners, so
    it must not stay in their re-scored mean or in the noise), and the same for every genotype at
    that k, so re-scored means stay paired with the control's."""
    return 7_000_003 * (k + 1) + run_seed


def seed_stats(rewards) -> dict:
    """Mean, sample std and count of one genotype's rewards over seeds (failed seeds left out)."""
    from .stats import mean_std

    ok = [r for r in rewards if r is not None]
    mean, std = mean_std(ok)
    return {"mean": mean, "std": std, "seeds": len(ok), "failed_seeds": len(rewards) - len(ok)}


def seed_noise(stats: list[dict]) -> float | None:
    """The proxy's seed noise: the pooled std of every re-scored genotype's rewards over seeds."""
    parts = [(s["seeds"] - 1, s["std"] ** 2) for s in stats if s["std"] is not None]
    dof = sum(d for d, _ in parts)
    return (sum(d * v for d, v in parts) / dof) ** 0.5 if dof else None


def noise_dof(stats: list[dict]) -> int:
    """Degrees of freedom of `seed_noise`: the pooled (seeds - 1) of every re-scored genotype."""
    return sum(s["seeds"] - 1 for s in stats if s["std"] is not None)


def verdict(best: dict | None, control: dict | None, noise: float | None, dof: int | None = None) -> dict:
    """Whether the best re-scored candidate beats the control beyond noise on the proxy: by more
    than t·se, se = sigma·sqrt(1/n_best + 1/n_control), t the 97.5 % Student quantile at the noise
    estimate's `dof` degrees of freedom (few seeds: t = 4.30 at 2, not z = 2)."""
    from .stats import t_quantile

    if not control:
        return {"beats_control": None, "text": "no verdict: this run has no control (made before the protocol)"}
    if control.get("mean") is None:
        return {"beats_control": None, "text": "no verdict: the control failed to train"}
    if not best or best.get("mean") is None or noise is None:
        return {"beats_control": None, "text": "no verdict yet: no candidate has been re-scored"}
    diff = best["mean"] - control["mean"]
    se = noise * (1 / best["seeds"] + 1 / control["seeds"]) ** 0.5
    t = t_quantile(0.975, dof) if dof else 2.0
    beats = diff > t * se
    where = f"noise ±{noise:.4f}, threshold {t:.2f} s.e. = {t * se:.4f}"
    held = (f", on its {best['seeds']} held-out seed(s)" if "selection" in best else "")
    text = (f"on the proxy, trial {best['trial']} beats the control by {diff:.4f}{held} ({where})"
            if beats else f"on the proxy, no candidate beats the hand design beyond noise (best trial "
                          f"{best['trial']}: {diff:+.4f} vs the control{held}, {where})")
    return {"beats_control": beats, "difference": diff, "noise": noise, "threshold": t * se, "t": t,
            "best_trial": best["trial"], "text": text}


def held_out_best(ranked_rows: list[dict], scores: dict) -> dict | None:
    """The candidate the proxy verdict tests, chosen on other seeds than it is tested on: each
    re-scored trial's fresh seeds in re-scoring order, the first half (rounded down) selects with
    the search reward, the second half is its tested mean. Choosing the best by its mean over all
    fresh seeds and testing that same mean would favour whichever candidate drew lucky seeds (the
    winner's curse: about 0.7 noise widths with 5 re-scored candidates of 3 seeds); the held-out
    half is independent of the choice. Returns the row with `mean` and `seeds` of the held-out half
    and `selection` (the selecting mean), or None when none is re-scored."""
    best, best_key = None, None
    for row in ranked_rows:
        if row["mean"] is None:
            continue
        by_order = [scores[row["trial"]][seed] for seed in sorted(scores[row["trial"]], key=rescore_order)]
        half = len(by_order) // 2
        held_out = [r for r in by_order[half:] if r is not None]
        choosing = [r for r in [row["reward"], *by_order[:half]] if r is not None]
        if not held_out or not choosing:
            continue
        key = (sum(choosing) / len(choosing), -row["trial"])
        if best_key is None or key > best_key:
            best_key = key
            best = {**row, "mean": sum(held_out) / len(held_out), "seeds": len(held_out), "selection": key[0]}
    return best


def rescore_order(seed: int) -> int:
    """k of a re-scoring seed (rescore_seed): which re-scoring of its trial it was."""
    return seed // 1_000_000


def ranked(store: RunStore) -> list[dict]:
    """Search trials best first: the re-scored ones by their mean over fresh seeds, then the
    others by their single search reward. Each: trial, reward, mean, std, seeds, params, FLOPs,
    seconds, losses, genotype."""
    scores = store.scores()
    rows = []
    for t in store.top():
        stats = seed_stats(list(scores[t.id].values())) if t.id in scores else \
            {"mean": None, "std": None, "seeds": 0, "failed_seeds": 0}
        rows.append({"trial": t.id, "reward": t.reward, **stats, "params": t.metrics.get("params"),
                     "flops": t.metrics.get("flops"), "latency_ms": t.metrics.get("predicted_latency_ms"),
                     "seconds": t.metrics.get("seconds"),
                     "losses": t.metrics.get("losses"), "genotype": t.genotype})
    rescored = sorted((r for r in rows if r["mean"] is not None), key=lambda r: (-r["mean"], r["trial"]))
    return rescored + [r for r in rows if r["mean"] is None]


def summarize(store: RunStore, top: int = 5) -> dict:
    """Counts, the control, the best trials (re-scored first, by mean), the seed noise, the
    verdict and the reward curve."""
    rows = store.trials(control=False)
    best = ranked(store)
    control, scores = store.control(), store.scores()
    control_row = None
    if control is not None:
        control_row = {"trial": 0, "status": control.status, "genotype": control.genotype,
                       "params": control.metrics.get("params"), "flops": control.metrics.get("flops"),
                       "latency_ms": store.meta().get("latency_control_ms"),
                       **seed_stats(list(scores.get(0, {}).values()))}
    stats = ([control_row] if control_row else []) + [r for r in best if r["mean"] is not None]
    noise = seed_noise(stats)
    rescored = held_out_best(best, scores)
    return {"run": str(store.run_dir), **store.meta(),
            "finished": sum(t.status != "pending" for t in rows),
            "failed": sum(t.status == "failed" and not t.metrics.get("skipped") for t in rows),
            "skipped": sum(bool(t.metrics.get("skipped")) for t in rows),
            "control": control_row, "noise": noise, "verdict": verdict(rescored, control_row, noise, noise_dof(stats)),
            "top": best[:top],
            "curve": [[t.id, t.reward] for t in rows if t.status == "done"]}
