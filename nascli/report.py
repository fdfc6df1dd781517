"""Run reports: the reward-vs-trial figure, the run listing, and the comparison of retrained
architectures (table, Pareto front, proxy fidelity)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .latency import check_runtime, within_target
from .stats import MIN_GAIN, holm, mean_std, paired_difference, paired_p_value
from .store import RunStore


def reward_figure(run_dir, out=None) -> Path:
    """PNG of every finished trial's reward and the running best against the trial number, with
    the control's mean as a line and the proxy's seed noise as a band around it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .protocol import summarize

    store = RunStore(run_dir, create=False)
    meta, trials = store.meta(), store.trials(control=False)
    rows = [t for t in trials if t.status == "done"]
    summary = summarize(store)
    control, noise = summary["control"], summary["noise"]
    store.close()
    out = Path(out or Path(run_dir) / "rewards.png")
    timed = [t for t in trials if t.metrics.get("predicted_latency_ms") is not None]
    fig, axes = plt.subplots(1, 2 if timed else 1, figsize=(12 if timed else 7, 4), squeeze=False)
    ax = axes[0][0]
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
    ax.set_ylabel(reward_label(run_dir))
    ax.set_title(f"{Path(run_dir).name}: {meta.get('method', '?')}")
    if timed:
        latency_panel(axes[0][1], timed, meta, control)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def latency_panel(ax, trials, meta: dict, control: dict | None) -> None:
    """A search under a latency target: proxy reward against predicted latency once promoted, the
    trials' Pareto front (faster and better), the control, the target; candidates skipped untrained
    for being over it marked on the axis."""
    done = [t for t in trials if t.status == "done"]
    skipped = [t for t in trials if t.metrics.get("skipped")]
    if done:
        ms, rewards = [t.metrics["predicted_latency_ms"] for t in done], [t.reward for t in done]
        ax.scatter(ms, rewards, s=14, alpha=0.7, label="trained trial")
        front = pareto_front(ms, rewards)
        ax.plot([ms[k] for k in front], [rewards[k] for k in front], "C3-", lw=1, label="Pareto front")
    if skipped:
        ax.plot([t.metrics["predicted_latency_ms"] for t in skipped], [0] * len(skipped), "x", color="0.5",
                transform=ax.get_xaxis_transform(), clip_on=False, label=f"skipped untrained ({len(skipped)})")
    if control and control["mean"] is not None and meta.get("latency_control_ms"):
        ax.plot([meta["latency_control_ms"]], [control["mean"]], "k*", ms=11, label="control")
    if meta.get("latency_limit_ms"):
        ax.axvline(meta["latency_limit_ms"], color="C2", ls="--", lw=1, label=f"target {meta.get('latency_target')}")
    ax.set_xlabel("predicted latency once promoted (ms/image)")
    ax.set_ylabel("proxy reward")
    ax.legend(fontsize=7)


def export_best(run_dir, *, top: int, out) -> list[str]:
    """Writes the run's `top` best genotypes (re-scored first) as `rank<k>_trial<id>.json` in `out`,
    each with its search reward and re-scored mean and std: the files `retrain --arch` reads."""
    from .protocol import ranked
    from .store import RunStore

    store = RunStore(run_dir, create=False)
    try:
        best = ranked(store)[:top]
    finally:
        store.close()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for rank, t in enumerate(best, start=1):
        path = out / f"rank{rank}_trial{t['trial']}.json"
        path.write_text(json.dumps({**json.loads(t["genotype"]), "reward": t["reward"], "mean": t["mean"],
                                    "std": t["std"]}, indent=2))
        paths.append(str(path))
    return paths


def reward_label(run_dir) -> str:
    """What the run's reward is: AP, or the negated sum of losses (its spec's, else its method's)."""
    from .config import ProxySpec, load_spec
    from .methods import reward_kind

    spec_path = Path(run_dir) / "spec.yaml"
    if not spec_path.is_file():
        return "reward on meta-val"
    ap = reward_kind(load_spec(ProxySpec, spec_path)) == "ap"
    return "AP on meta-val" if ap else "reward = -(sum of losses) on meta-val"


def trajectory(run_dir) -> list[dict]:
    """An sp-nas run's accepted steps (start, improvements, reignitions), from its strategy state."""
    from .store import unpack_state

    store = RunStore(run_dir, create=False, readonly=True)
    blob, trials = store.load_state(), {t.id: t for t in store.trials(control=False)}
    store.close()
    if blob is None:
        return []
    state = unpack_state(blob)
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
    rows = [t for t in store.trials(control=False) if t.status == "done"]
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


def op_share_figure(rows, out) -> Path:
    """Auto-FPN's decoded network per supernet epoch: stacked shares of none, skip and parametric ops.
    `rows`: (epoch, {"none": x, "skip": y, "parametric": z})."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    if rows:
        epochs = [e for e, _ in rows]
        ax.stackplot(epochs, *([s[k] for _, s in rows] for k in ("none", "skip", "parametric")),
                     labels=["none", "skip", "parametric"], colors=["0.75", "C1", "C0"], alpha=0.85)
        ax.legend(fontsize=8, loc="upper left")
    ax.set_ylim(0, 1)
    ax.set_xlabel("supernet epoch (trial)")
    ax.set_ylabel("share of links and edges")
    ax.set_title("decoded ops after each epoch (collapse: none + skip near 1)", fontsize=9)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=100)
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
        rows = store.trials(control=False)
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


#: What a proxy must beat to be worth its minutes: ranking architectures by their cost alone.
COST_BASELINES = ("params", "flops", "latency_ms")


def cost_baselines(archs: list[dict]) -> dict:
    """Kendall tau of each cost (more = better: the "count the parameters" predictor) against test
    AP over the same architectures as the proxy's tau; a cost some architecture lacks is left out."""
    ap = [a["AP"] for a in archs]
    return {k: kendall_tau([a[k] for a in archs], ap) for k in COST_BASELINES
            if all(a.get(k) is not None for a in archs)}


def bootstrap_tau(x, y, rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    """The 5th and 95th percentiles of Kendall tau-b over architectures resampled with replacement."""
    rng = np.random.default_rng(seed)
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    taus = []
    for _ in range(rounds):
        pick = rng.integers(0, len(x), len(x))
        t = kendall_tau(x[pick], y[pick])
        if not np.isnan(t):
            taus.append(t)
    return float(np.percentile(taus, 5)), float(np.percentile(taus, 95))


#: Architectures below which a bootstrap interval of tau is not reported (resamples of 3-4 points
#: are mostly ties or +-1).
MIN_INTERVAL_ROWS = 5


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


def compare(runs, *, min_gain: float = MIN_GAIN, latency_images: int = 0, latency_target=None,
            device: str = "cpu", runtime: str = "torch") -> dict:
    """Every promoted architecture of the given runs: its rows (grid on meta-val, final seeds on
    test), and per architecture the chosen rate, test AP mean ± std over seeds, cost, proxy
    reward; the Pareto front (mean AP vs FLOPs); per run the test verdict (each architecture
    against the control, paired by seed), the search's proxy verdict and proxy fidelity.

    A row is 'done', 'failed' (retraining diverged: reason given), 'training' (started, not
    finished: rerun retrain to resume) or 'missing' (recorded done but its checkpoint is gone).
    Fidelity (Kendall tau, Spearman rho between proxy reward and mean test AP) uses the
    architectures with a proxy reward and a finished final row, the control included; it needs 3,
    and 5 for tau's bootstrap 90 % interval.

    `latency_images` > 0 re-times every architecture's first finished seed and the control in this
    process, interleaved (latency.interleaved), and gives each its latency ratio to the control with
    an interval; the run keeps that timing (meta 'latency'), so a later compare or report shows it.
    `latency_target` ("1.0x" of the control, or "80ms"; default the search's): a win must also run
    within it. `runtime` onnxruntime: each model is exported (deploy.py) and timed under ONNX Runtime.
    """
    check_runtime(runtime)
    rows, archs, fidelity, verdicts = [], [], {}, {}
    for run in runs:
        store = RunStore(run, create=False)
        meta, promoted = store.meta(), store.retrained()
        store.close()
        run_rows = [_row(run, meta, r) for r in promoted]
        rows += run_rows
        run_archs = architectures(run_rows)
        timing = time_architectures(run, run_rows, run_archs, latency_images, device, runtime) if latency_images \
            else kept_timing(meta, run_rows, run_archs)
        with_latency(run_archs, timing)
        archs += run_archs
        scored = [a for a in run_archs if a["status"] == "done" and a["reward"] is not None]
        pairs = ([a["reward"] for a in scored], [a["AP"] for a in scored])
        enough = len(scored) >= 3  # over 2 points a rank correlation is +-1 by construction
        fidelity[str(run)] = {"n": len(scored), "kendall_tau": kendall_tau(*pairs) if enough else None,
                              "spearman_rho": spearman_rho(*pairs) if enough else None,
                              "tau_interval": bootstrap_tau(*pairs) if len(scored) >= MIN_INTERVAL_ROWS else None,
                              "baselines": cost_baselines(scored) if enough else {},
                              "architectures": [a["arch"] for a in scored], "verdict": _verdict(run)}
        target = latency_target if latency_target is not None else meta.get("latency_target")
        verdicts[str(run)] = verdict_on_test(run_rows, min_gain, run_archs, target)
    done = [k for k, a in enumerate(archs) if a["status"] == "done"]
    front = pareto_front([archs[k]["flops"] for k in done], [archs[k]["AP"] for k in done])
    for k, a in enumerate(archs):
        a["pareto"] = k in {done[f] for f in front}
    # AP against latency: one run's ratios only compare within it, so the front is per run
    for run in runs:
        timed = [k for k in done if archs[k]["run"] == str(run) and archs[k].get("latency")]
        front = pareto_front([archs[k]["latency"]["ratio"] for k in timed], [archs[k]["AP"] for k in timed])
        for k in timed:
            archs[k]["pareto_latency"] = k in {timed[f] for f in front}
    return {"rows": rows, "architectures": archs, "fidelity": fidelity, "test_verdict": verdicts}


def time_architectures(run, rows: list[dict], archs: list[dict], images: int, device: str,
                       runtime: str = "torch") -> dict | None:
    """Times each finished architecture's first final seed and the control interleaved on the test
    split they were evaluated on (under torch, or exported under ONNX Runtime), and keeps the result
    in the run's meta ('latency')."""
    from .data.coco import CocoDetection
    from .evaluate import eval_transform, image_runner, load_detector, onnx_runner, single_images
    from .latency import interleaved
    from .runtime import load_checkpoint, resolve_device

    first = first_final_rows(rows, archs)
    if "baseline" not in first or len(first) < 2:
        return None
    device = resolve_device(device)
    control = load_checkpoint(first["baseline"]["checkpoint"], stand_in_ok=True)  # the test split it was evaluated on (rows
    data = first["baseline"].get("data") or control["config"].get("val")  # before 'data' was kept: its config's)
    if not data:
        return None
    dataset = CocoDetection(data, None, eval_transform(control))
    runners, checkpoints = {}, {}
    for arch, r in first.items():
        model, _ = load_detector(r["checkpoint"], device, stand_in_ok=True)  # a stand-in times within 2 % of its trained model (benchmarks/README.md)
        runners[arch] = (image_runner(model, device) if runtime == "torch"
                         else onnx_runner(r["checkpoint"], model, dataset))
        checkpoints[arch] = r["checkpoint"]
    timing = interleaved(runners, single_images(dataset, images), device, reference="baseline", images=images)
    timing.update(checkpoints=checkpoints, data=str(data), runtime=runtime)
    store = RunStore(run, create=False)
    try:
        store.set_meta(latency=timing)
    finally:
        store.close()
    return timing


def kept_timing(meta: dict, rows: list[dict], archs: list[dict]) -> dict | None:
    """The run's last interleaved timing, if it timed the checkpoints compare reports now (a later
    retrain that chose other rows makes it stale)."""
    timing = meta.get("latency")
    now = {arch: r["checkpoint"] for arch, r in first_final_rows(rows, archs).items()}
    return timing if timing and timing.get("checkpoints") == now else None


def first_final_rows(rows: list[dict], archs: list[dict]) -> dict:
    """Per finished architecture, the final row of its first seed in the reported recipe: the model
    that is timed and exported."""
    chosen = {a["arch"]: a for a in archs if a["status"] == "done"}
    first = {}
    for r in rows:
        if (r["arch"] in chosen and r["stage"] == "final" and r["status"] == "done" and r["arch"] not in first
                and r["seed"] in chosen[r["arch"]]["ap_by_seed"]):
            first[r["arch"]] = r
    return first


def promoted_checkpoint(run, arch: str) -> Path:
    """The checkpoint of `arch`'s first finished seed in the run (export, latency)."""
    from .errors import SpecError

    store = RunStore(run, create=False)
    try:
        meta, promoted = store.meta(), store.retrained()
    finally:
        store.close()
    rows = [_row(run, meta, r) for r in promoted]
    first = first_final_rows(rows, architectures(rows))
    if arch not in first:
        raise SpecError(f"--arch {arch}: {run} has no finished final row of it (finished: "
                        f"{', '.join(sorted(first)) or 'none'}; run retrain first)")
    return Path(first[arch]["checkpoint"])


def with_latency(archs: list[dict], timing: dict | None) -> None:
    """Each architecture's latency against the control: the interleaved timing where there is one,
    else the ratio of the per-row evaluations' medians (timed apart: drift included)."""
    control = next((a for a in archs if a["arch"] == "baseline" and a["status"] == "done"), None)
    for a in archs:
        timed = (timing or {}).get("models", {}).get(a["arch"])
        if timed:
            a["latency"] = {**timed, "interleaved": True, "threads": timing.get("threads"),
                            "processor": timing.get("processor"), "runtime": timing.get("runtime", "torch")}
        elif a["status"] == "done" and control and a.get("latency_ms") and control.get("latency_ms"):
            a["latency"] = {"latency_ms": a["latency_ms"], "ratio": a["latency_ms"] / control["latency_ms"],
                            "ratio_interval": None, "interleaved": False}


def cost_words(a: dict, control: dict) -> str:
    """'at 0.88× its FLOPs and 2.9× its latency (95 % 2.7-3.1, interleaved)'."""
    words = f"at {a['flops'] / control['flops']:.2f}× its FLOPs" if a.get("flops") and control.get("flops") else ""
    lat = a.get("latency")
    if lat:
        interval = lat.get("ratio_interval")
        how = (f"95 % {interval[0]:.2f}-{interval[1]:.2f}, interleaved" if interval
               else "timed apart, not interleaved")
        if lat.get("runtime", "torch") != "torch":
            how += f", under {lat['runtime']}"
        words += f" and {lat['ratio']:.2f}× its latency ({lat['latency_ms']:.1f} ms/image, {how})"
    return words


def _row(run, meta: dict, r: dict) -> dict:
    """One retrained row with its recipe; rows from before the promotion protocol count as one
    final seed of the architecture they name."""
    status = r["status"]
    if status == "done" and r["checkpoint"] and not Path(r["checkpoint"]).is_file():  # grid rows keep none
        status = "missing"
    m = r["metrics"]
    arch = m.get("arch", r["name"])
    return {"run": str(run), "method": meta.get("method"), "name": r["name"], "arch": arch,
            "chosen": meta.get("promoted", {}).get(arch), "stage": m.get("stage", "final"), "lr": m.get("lr"),
            "optimizer": m.get("optimizer", "sgd"),
            "epochs": m.get("epochs"),
            "seed": m.get("seed"), "trial": r["trial"],
            "reward": r["reward"], "status": status, "checkpoint": r["checkpoint"], "reason": m.get("reason", ""),
            "detections": _detections_file(r) if status == "done" else None,
            **({k: m.get(k) for k in _COMPARED} if status == "done" else {})}


def _detections_file(r: dict) -> str | None:
    """A final row's kept test detections (retrain.DETECTIONS beside its checkpoint), if on disk."""
    name = r["metrics"].get("detections")
    if not name or not r["checkpoint"]:
        return None
    path = Path(r["checkpoint"]).parent / name
    return str(path) if path.is_file() else None


def architectures(rows: list[dict]) -> list[dict]:
    """One summary per architecture of one run: the grid's meta-val AP per point (keyed by
    retrain.point_label), the chosen rate and optimiser, test AP mean ± std over its finished
    final seeds, mean AP50..APl, cost, latency, minutes."""
    from .retrain import RECIPE_FIELDS, point_label, same_recipe

    out = []
    for arch in dict.fromkeys(r["arch"] for r in rows):
        mine = [r for r in rows if r["arch"] == arch]
        final = [r for r in mine if r["stage"] == "final"]
        if final:  # one recipe's seeds, never a mix of two: the last promotion's choice (else the latest rows)
            chosen = mine[0]["chosen"] or {k: final[-1][k] for k in RECIPE_FIELDS}
            final = [r for r in final if same_recipe(r, chosen)]
        ok = [r for r in final if r["status"] == "done"]
        grid = {}
        for r in sorted((r for r in mine if r["stage"] == "grid"), key=lambda r: r["seed"] or 0):
            # a point's first seed (retrain --seeds auto trains the chosen point's next seed too)
            grid.setdefault(point_label(r["optimizer"], r["lr"]), r["AP"] if r["status"] == "done" else None)
        summary = {"run": mine[0]["run"], "arch": arch, "trial": mine[0]["trial"], "reward": mine[0]["reward"],
                   "grid": grid, "lr": final[0]["lr"] if final else None,
                   "optimizer": final[0]["optimizer"] if final else None,
                   "epochs": final[0]["epochs"] if final else None, "seeds": len(ok),
                   "status": "done" if ok else _worst(final) if final else "grid only",
                   "reason": next((r["reason"] for r in final if r["reason"]), ""),
                   "ap_by_seed": {r["seed"]: r["AP"] for r in ok},
                   "detections_by_seed": {r["seed"]: r["detections"] for r in ok if r.get("detections")},
                   "data": next((r.get("data") for r in ok if r.get("data")), None),
                   "minutes": sum(r.get("train_seconds") or 0 for r in mine) / 60}
        if ok:
            summary["AP"], summary["AP_std"] = mean_std(r["AP"] for r in ok)
            for k in ("AP50", "AP75", "APs", "APm", "APl", "latency_ms"):
                summary[k] = mean_std(r[k] for r in ok if r.get(k) is not None)[0]
            summary.update({k: ok[0][k] for k in ("params", "flops", "flops_input", "device")})
        out.append(summary)
    return out


def _worst(rows: list[dict]) -> str:
    states = {r["status"] for r in rows}
    return next((s for s in ("failed", "missing", "training") if s in states), "done")


def verdict_on_test(rows: list[dict], min_gain: float = MIN_GAIN, archs: list[dict] | None = None,
                    latency_target=None) -> dict:
    """The product's answer for one run: does a promoted architecture beat the control on test
    beyond seed noise? Each architecture's final test AP against the control's, paired by seed
    (`stats.paired_difference`: mean difference above t(0.975, n-1)·s.e.) and by at least
    `min_gain` AP points, and - with a `latency_target` - measured within it; the headline names
    the best architecture that beats it, else says none does, and names what it costs: its FLOPs
    and latency against the control's (`archs` with latency: `with_latency`)."""
    archs = {a["arch"]: a for a in (archs if archs is not None else architectures(rows))}
    control = archs.get("baseline")
    if control is None or not control["ap_by_seed"]:
        return {"beats_control": None, "per_arch": {}, "text": "no test verdict: the control has no finished seed"}
    per_arch, resampled = {}, {}
    for name, a in archs.items():
        if name == "baseline" or not a["ap_by_seed"]:
            continue
        d = paired_difference(a["ap_by_seed"], control["ap_by_seed"])
        d = {**d, **({k: 100 * d[k] for k in ("difference", "se", "threshold") if d[k] is not None})}
        d["p"] = paired_p_value(d["difference"], d["se"], d["n"])
        d["within_latency_target"] = within_target(a.get("latency"), latency_target)
        d["images"] = paired_image_bootstrap(a, control, resampled) if d["beats"] is not None else None
        per_arch[name] = d
    # Holm over the promoted family: "any of K beats the control" at the level one test has alone
    tested = {k: d["p"] for k, d in per_arch.items() if d["beats"] is not None}
    survives = holm(tested)
    for name, d in per_arch.items():
        if d["beats"] is not None:
            d["beyond_noise"], d["holm"], d["family"] = d["beats"], survives[name], len(tested)
            d["on_other_images"] = d["images"] is None or d["images"]["low"] > 0
            d["beats"] = (d["beats"] and survives[name] and d["difference"] >= min_gain
                          and d["within_latency_target"] is not False and d["on_other_images"])
    if not per_arch:
        return {"beats_control": None, "per_arch": {}, "text": "no test verdict: no promoted architecture finished"}
    best = max(per_arch, key=lambda k: per_arch[k]["difference"])
    d = per_arch[best]
    if d["beats"] is None:
        return {"beats_control": None, "per_arch": per_arch, "best": best,
                "text": f"no test verdict: {best} and the control share {d['n']} finished seed(s); "
                        f"it needs 2 (retrain --seeds 2 or more)"}
    target = f", latency target {latency_target}" if latency_target else ""
    winners = [k for k, v in per_arch.items() if v["beats"]]
    if winners:
        best = max(winners, key=lambda k: per_arch[k]["difference"])
        d = per_arch[best]
    family = f", Holm over {d['family']} architectures" if d["family"] > 1 else ""
    images = (f"; test images resampled: 95 % [{d['images']['low']:+.1f}, {d['images']['high']:+.1f}] AP over "
              f"{d['images']['draws']} draws" if d["images"] else "; no image bootstrap (detections not kept)")
    where = f"threshold {d['threshold']:.1f} AP = t·s.e., {d['n']} seeds paired, p = {d['p']:.3g}{family}{images}"
    if winners:
        text = f"on test, {best} beats the control by {d['difference']:+.1f} AP ({where}{target})"
    elif d["beyond_noise"] and d["holm"] and d["difference"] >= min_gain and not d["on_other_images"]:
        text = (f"on test, no architecture beats the control on other images from the same distribution "
                f"(best: {best}, {d['difference']:+.1f} AP beyond seed noise, but the image bootstrap's 95 % "
                f"interval reaches 0 or below: {where})")
    elif d["beyond_noise"] and not d["holm"]:
        text = (f"on test, no architecture beats the control after Holm over {d['family']} architectures "
                f"(best: {best}, {d['difference']:+.1f} AP, beyond seed noise on its own but p = {d['p']:.3g} > "
                f"0.025/{d['family']}: {where})")
    elif d["beyond_noise"] and d["difference"] >= min_gain:
        text = (f"on test, no architecture beats the control within the latency target {latency_target} "
                f"(best: {best}, {d['difference']:+.1f} AP beyond seed noise, but over the target: {where})")
    elif d["beyond_noise"]:
        text = (f"on test, no architecture beats the control by the {min_gain:g} AP that counts as a win "
                f"(best: {best}, {d['difference']:+.1f} AP, beyond seed noise: {where})")
    else:
        text = (f"on test, no architecture beats the control beyond seed noise (best: {best}, "
                f"{d['difference']:+.1f} AP, {where})")
    if not winners and d["threshold"] > min_gain:
        text += f"; {what_it_would_take(d, min_gain)}"
    cost = cost_words(archs[best], control)
    if cost:
        text += f"; {best} runs {cost}"
    return {"beats_control": bool(winners), "per_arch": per_arch, "best": best, "text": text}


def what_it_would_take(d: dict, min_gain: float) -> str:
    """When the seed threshold is above the gain that counts, this promotion cannot resolve that
    gain: how many seeds the measured seed noise would need for 80 % power (at Holm's first step)."""
    from .stats import seeds_for_power

    sd = d["se"] * d["n"] ** 0.5
    family = d.get("family") or 1
    needed = seeds_for_power(sd, min_gain, 0.025 / family)
    seeds = (f"about {needed} seeds" if needed else "more than 100 seeds (more test images, or a steadier "
             "recipe, would cut the noise)")
    return (f"with {d['n']} seeds this promotion cannot resolve a {min_gain:g} AP gain: at the measured seed noise "
            f"(sd {sd:.1f} AP of the paired differences) 80 % power needs {seeds}; fix that count before a "
            f"test split is read (adding seeds after seeing this result would bias it)")


def paired_image_bootstrap(arch: dict, control: dict, memo: dict) -> dict | None:
    """evaluate.image_bootstrap of an architecture against the control over the seeds both kept
    detections for, on the test json they were scored on; None when none were kept. `memo` keeps
    each detections file's resampled APs, so the control's are computed once per verdict."""
    from .data.coco import load_coco
    from .evaluate import image_bootstrap, resampled_aps

    seeds = sorted(set(arch["detections_by_seed"]) & set(control["detections_by_seed"]))
    if not seeds or not arch.get("data") or not Path(arch["data"]).is_file():
        return None

    def aps(path):
        if path not in memo:
            if arch["data"] not in memo:  # the ground truth eval scored against
                memo[arch["data"]] = load_coco(arch["data"], usable_boxes=True)
            memo[path] = resampled_aps(memo[arch["data"]], json.loads(Path(path).read_text()))
        return memo[path]

    return {**image_bootstrap([aps(arch["detections_by_seed"][s]) for s in seeds],
                              [aps(control["detections_by_seed"][s]) for s in seeds]), "seeds": len(seeds)}


def _verdict(run) -> str | None:
    """The search's own verdict (best re-scored candidate vs the control, on the proxy)."""
    from .protocol import summarize

    store = RunStore(run, create=False)
    try:
        return summarize(store)["verdict"]["text"] if store.control() is not None else None
    finally:
        store.close()


_COMPARED = ("AP", "AP50", "AP75", "APs", "APm", "APl", "params", "flops", "flops_input", "latency_ms",
             "train_seconds", "eval_seconds", "device", "data")


def compare_figure(result: dict, out) -> Path:
    """Two panels: AP vs GFLOPs with the Pareto front, and AP vs proxy reward with tau / rho."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [a for a in result["architectures"] if a["status"] == "done"]
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4.5))
    timed = [a for a in done if a.get("latency")]
    for a in timed:  # AP against latency, as the control's multiple (runs measured apart share that scale)
        x, y = a["latency"]["ratio"], 100 * a["AP"]
        interval = a["latency"].get("ratio_interval") or [x, x]
        middle.errorbar(x, y, xerr=[[x - interval[0]], [interval[1] - x]], yerr=100 * (a["AP_std"] or 0), fmt="o",
                        color="C3" if a["arch"] == "baseline" else "C0", ms=5, zorder=3)
        middle.annotate(a["arch"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    for run in dict.fromkeys(a["run"] for a in timed):
        front = sorted((a for a in timed if a["run"] == run and a.get("pareto_latency")),
                       key=lambda a: a["latency"]["ratio"])
        if front:
            middle.step([a["latency"]["ratio"] for a in front], [100 * a["AP"] for a in front], where="post",
                        color="C2", label="Pareto front")
    if timed:
        middle.legend(fontsize=8)
        middle.axvline(1.0, color="k", lw=0.8, ls=":")
    middle.set_xlabel("latency / the control's (batch 1, this machine; bars: 95 %)")
    middle.set_ylabel("test AP, mean ± std over seeds (%)")
    middle.set_title("retrained: AP vs latency" + ("" if timed else " (not timed yet: compare --latency-images)"),
                     fontsize=10)
    for a in done:
        x, y, err = a["flops"] / 1e9, 100 * a["AP"], 100 * (a["AP_std"] or 0)
        left.errorbar(x, y, yerr=err, fmt="o", color="C3" if a["arch"] == "baseline" else "C0", ms=5, zorder=3)
        left.annotate(a["arch"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    front = sorted((a for a in done if a["pareto"]), key=lambda a: a["flops"])
    if front:
        left.step([a["flops"] / 1e9 for a in front], [100 * a["AP"] for a in front], where="post",
                  color="C2", label="Pareto front")
        left.legend()
    left.set_xlabel("GFLOPs (one image at the evaluation size)")
    left.set_ylabel("test AP, mean ± std over seeds (%)")
    left.set_title("retrained: AP vs FLOPs")
    titles = []
    for run, f in result["fidelity"].items():
        pts = [a for a in done if a["run"] == run and a["reward"] is not None]
        right.scatter([a["reward"] for a in pts], [100 * a["AP"] for a in pts], s=30, label=Path(run).name)
        for a in pts:
            right.annotate(a["arch"], (a["reward"], 100 * a["AP"]), fontsize=7, xytext=(3, 3),
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
