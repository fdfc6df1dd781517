"""Run reports: the reward-vs-trial figure and the run listing."""

from __future__ import annotations

from pathlib import Path

from .store import RunStore


def reward_figure(run_dir, out=None) -> Path:
    """PNG of every finished trial's reward and the running best, against the trial number."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    store = RunStore(run_dir, create=False)
    meta, rows = store.meta(), [t for t in store.trials() if t.status == "done"]
    store.close()
    out = Path(out or Path(run_dir) / "rewards.png")
    fig, ax = plt.subplots(figsize=(7, 4))
    if rows:
        ids, rewards = [t.id for t in rows], [t.reward for t in rows]
        best = [max(rewards[:i + 1]) for i in range(len(rewards))]
        ax.scatter(ids, rewards, s=12, alpha=0.6, label="trial reward")
        ax.plot(ids, best, color="C3", label="best so far")
        ax.legend()
    ax.set_xlabel("trial")
    ax.set_ylabel("reward = -(L_cls + L_reg + L_ctr) on meta-val")
    ax.set_title(f"{Path(run_dir).name}: {meta.get('method', '?')}")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def list_runs(root="runs") -> list[dict]:
    """Every run folder under root with its method, progress and best reward."""
    out = []
    for db in sorted(Path(root).glob("*/run.db")):
        store = RunStore(db.parent, create=False)
        meta, best = store.meta(), store.top(1)
        rows = store.trials()
        out.append({"run": str(db.parent), "method": meta.get("method"), "target": meta.get("trials"),
                    "finished": sum(t.status != "pending" for t in rows),
                    "failed": sum(t.status == "failed" for t in rows),
                    "best": best[0].reward if best else None})
        store.close()
    return out
