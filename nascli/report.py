"""Run reports: the reward-vs-trial figure, the run listing, and the comparison of retrained
architectures (table, Pareto front, proxy fidelity)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .store import RunStore


def reward_figure(run_dir, out=None) -> Path:
    """PNG of every finished trial's reward and the running best against the trial number, with
    the control's mean as a line and the proxy's seed noise as a band around it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .search import summarize

    store = RunStore(run_dir, create=False)
    meta, rows = store.meta(), [t for t in store.trials("id > 0") if t.status == "done"]
    summary = summarize(store)
    control, noise = summary["control"], summary["noise"]
    store.close()
    out = Path(out or Path(run_dir) / "rewards.png")
    fig, ax = plt.subplots(figsize=(7, 4))
    if rows:
        ids, rewards = [t.id for t in rows], [t.reward for t in rows]
        best = [max(rewards[:i + 1]) for i in range(len(rewards))]
        ax.scatter(ids, rewards, s=12, alpha=0.6, label="trial reward")
        ax.plot(ids, best, color="C3", label="best so far")
    if control and control["mean"] is not None:
        ax.axhline(control["mean"], color="k", lw=1.2, label=f"control (mean of {control['seeds']} seeds)")
        if noise is not None:
            ax.axhspan(control["mean"] - noise, control["mean"] + noise, color="k", alpha=0.1,
                       label="± proxy seed noise")
    if rows or control:
        ax.legend(fontsize=8)
    ax.set_xlabel("trial")
    ax.set_ylabel("AP on meta-val" if meta.get("space") == "nas-fpn" else "reward = -(sum of losses) on meta-val")
    ax.set_title(f"{Path(run_dir).name}: {meta.get('method', '?')}")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def trajectory(run_dir) -> list[dict]:
    """An sp-nas run's accepted steps (start, improvements, reignitions), from its strategy state."""
    from .search import _unpack

    store = RunStore(run_dir, create=False, readonly=True)
    blob, trials = store.load_state(), {t.id: t for t in store.trials("id > 0")}
    store.close()
    if blob is None:
        return []
    state = _unpack(blob)
    by_tag = {json_field(t.genotype, "tag"): i for i, t in trials.items()}
    return [{**step, "trial": by_tag.get(step["tag"])} for step in state["state"]["trajectory"]]


def json_field(text: str, name: str):
    import json

    try:
        return json.loads(text).get(name)
    except (ValueError, AttributeError):
        return None


def trajectory_figure(run_dir, steps=None, out=None) -> Path:
    """The paper's Figure 3 for an sp-nas run: every trained candidate's reward by trial (serial
    proposals, reignitions, parallel levels), and the accepted steps joined, labelled with the
    architecture each step reached."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    store = RunStore(run_dir, create=False, readonly=True)
    rows = [t for t in store.trials("id > 0") if t.status == "done"]
    store.close()
    steps = [s for s in (trajectory(run_dir) if steps is None else steps)
             if s["trial"] is not None and s["reward"] is not None]
    out = Path(out or Path(run_dir) / "trajectory.png")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    kinds = {"serial": "C0", "reignite": "C1", "parallel": "C2"}
    for kind, color in kinds.items():
        pts = [(t.id, t.reward) for t in rows if _kind(t.genotype) == kind]
        if pts:
            ax.scatter(*zip(*pts), s=14, color=color, alpha=0.6, label=f"{kind} candidates")
    if steps:
        ax.plot([s["trial"] for s in steps], [s["reward"] for s in steps], "k-o", ms=4, lw=1.2, label="accepted steps")
        for s in steps:
            ax.annotate(s["arch"], (s["trial"], s["reward"]), fontsize=6, rotation=20, xytext=(3, 4),
                        textcoords="offset points")
    ax.set_xlabel("trial")
    ax.set_ylabel("AP on meta-val after brief training")
    ax.set_title(f"{Path(run_dir).name}: sp-nas trajectory")
    if rows:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _kind(genotype: str) -> str:
    morphs = json_field(genotype, "morphs") or []
    last = morphs[-1][0] if morphs else "serial"
    return last if last in ("reignite", "parallel") else "serial"


def list_runs(root="runs") -> list[dict]:
    """Every run folder under root with its method, progress and best reward."""
    out = []
    for db in sorted(Path(root).glob("*/run.db")):
        store = RunStore(db.parent, create=False)
        meta, best = store.meta(), store.top(1)
        rows = store.trials("id > 0")
        out.append({"run": str(db.parent), "method": meta.get("method"), "target": meta.get("trials"),
                    "finished": sum(t.status != "pending" for t in rows),
                    "failed": sum(t.status == "failed" for t in rows),
                    "best": best[0].reward if best else None})
        store.close()
    return out


# ---------------------------------------------------------------- compare (after retrain)


def _ranks(x) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as scipy.stats.rankdata's default)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    for value in np.unique(x):
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman_rho(x, y) -> float:
    """Spearman's rank correlation: Pearson's r of the average ranks (nan when a side is constant)."""
    rx, ry = _ranks(x), _ranks(y)
    dx, dy = rx - rx.mean(), ry - ry.mean()
    denom = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    return float((dx * dy).sum() / denom) if denom > 0 else float("nan")


def kendall_tau(x, y) -> float:
    """Kendall's tau-b, which corrects for ties (scipy.stats.kendalltau's default variant)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    i, j = np.triu_indices(len(x), k=1)
    sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    concordance = (sx * sy).sum()
    n0 = len(i)
    denom = np.sqrt((n0 - (sx == 0).sum()) * (n0 - (sy == 0).sum()))
    return float(concordance / denom) if denom > 0 else float("nan")


def pareto_front(costs, scores) -> list[int]:
    """Indices of the points no other point beats: lower-or-equal cost and higher-or-equal score,
    one of them strictly. Sorted by cost."""
    front = []
    for a, (ca, sa) in enumerate(zip(costs, scores)):
        dominated = any(cb <= ca and sb >= sa and (cb < ca or sb > sa)
                        for b, (cb, sb) in enumerate(zip(costs, scores)) if b != a)
        if not dominated:
            front.append(a)
    return sorted(front, key=lambda k: costs[k])


def compare(runs) -> dict:
    """Every promoted architecture of the given runs with its proxy reward, retrained AP metrics
    and cost; the Pareto front (AP vs FLOPs) over all of them; proxy fidelity per run.

    A row is 'done', 'failed' (retraining diverged: reason given), 'training' (started, not
    finished: rerun retrain to resume) or 'missing' (recorded done but its checkpoint is gone).
    Fidelity (Kendall tau, Spearman rho between proxy reward and AP) uses the done rows that have
    a proxy reward, the baseline included; it needs at least two.
    """
    rows, fidelity = [], {}
    for run in runs:
        store = RunStore(run, create=False)
        meta, promoted = store.meta(), store.retrained()
        store.close()
        for r in promoted:
            status = r["status"]
            if status == "done" and not Path(r["checkpoint"]).is_file():
                status = "missing"
            rows.append({"run": str(run), "method": meta.get("method"), "name": r["name"], "trial": r["trial"],
                         "reward": r["reward"], "status": status, "checkpoint": r["checkpoint"],
                         "reason": r["metrics"].get("reason", ""),
                         **({k: r["metrics"].get(k) for k in _COMPARED} if status == "done" else {})})
        scored = [r for r in rows if r["run"] == str(run) and r["status"] == "done" and r["reward"] is not None]
        pairs = ([r["reward"] for r in scored], [r["AP"] for r in scored])
        enough = len(scored) >= 3  # over 2 points a rank correlation is +-1 by construction
        fidelity[str(run)] = {"n": len(scored), "kendall_tau": kendall_tau(*pairs) if enough else None,
                              "spearman_rho": spearman_rho(*pairs) if enough else None,
                              "architectures": [r["name"] for r in scored], "verdict": _verdict(run)}
    done = [k for k, r in enumerate(rows) if r["status"] == "done"]
    front = pareto_front([rows[k]["flops"] for k in done], [rows[k]["AP"] for k in done])
    for k, r in enumerate(rows):
        r["pareto"] = k in {done[f] for f in front}
    return {"rows": rows, "fidelity": fidelity}


def _verdict(run) -> str | None:
    """The search's own verdict (best re-scored candidate vs the control, on the proxy)."""
    from .search import summarize

    store = RunStore(run, create=False)
    try:
        return summarize(store)["verdict"]["text"] if store.control() is not None else None
    finally:
        store.close()


_COMPARED = ("AP", "AP50", "AP75", "APs", "APm", "APl", "params", "flops", "flops_input", "latency_ms",
             "train_seconds", "eval_seconds", "device")


def compare_figure(result: dict, out) -> Path:
    """Two panels: AP vs GFLOPs with the Pareto front, and AP vs proxy reward with tau / rho."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in result["rows"] if r["status"] == "done"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for r in done:
        x, y = r["flops"] / 1e9, 100 * r["AP"]
        left.scatter(x, y, color="C3" if r["name"] == "baseline" else "C0", s=30, zorder=3)
        left.annotate(r["name"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    front = sorted((r for r in done if r["pareto"]), key=lambda r: r["flops"])
    if front:
        left.step([r["flops"] / 1e9 for r in front], [100 * r["AP"] for r in front], where="post",
                  color="C2", label="Pareto front")
        left.legend()
    left.set_xlabel("GFLOPs (one image at the evaluation size)")
    left.set_ylabel("AP (pycocotools, %)")
    left.set_title("retrained: AP vs FLOPs")
    titles = []
    for run, f in result["fidelity"].items():
        pts = [r for r in done if r["run"] == run and r["reward"] is not None]
        right.scatter([r["reward"] for r in pts], [100 * r["AP"] for r in pts], s=30, label=Path(run).name)
        for r in pts:
            right.annotate(r["name"], (r["reward"], 100 * r["AP"]), fontsize=7, xytext=(3, 3),
                           textcoords="offset points")
        if f["kendall_tau"] is not None:
            titles.append(f"{Path(run).name}: tau {f['kendall_tau']:.2f}, rho {f['spearman_rho']:.2f} (n={f['n']})")
    right.set_xlabel("proxy reward")
    right.set_ylabel("AP (pycocotools, %)")
    right.set_title("proxy fidelity\n" + "\n".join(titles), fontsize=9)
    if result["fidelity"]:
        right.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
