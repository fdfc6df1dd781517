"""Do bench-search's proxy wins survive retraining? A summary of `make bench-search-retrain`.

Every `benchmarks/runs/search/retrain-<recipe>-seed<S>` folder holds the control, the controller's
best and random's best retrained alike with one recipe and seed. This prints their test AP side by
side per recipe and seed, with each row's classification loss per epoch (a searched decoder that
spikes at the end of the warm-up is a recipe problem, not an architecture one), and writes
benchmarks/search-retrain.json.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

ARMS = {"baseline": "control", "trial-": "controller's best", "rank1_trial": "random's best"}


def arm(name: str) -> str:
    return next(label for prefix, label in ARMS.items() if name.startswith(prefix))


def collect(runs_root: Path) -> list[dict]:
    import torch

    from nascli.report import compare

    rows = []
    for run in sorted(runs_root.glob("retrain-*-seed*")):
        recipe, seed = re.fullmatch(r"retrain-(.+)-seed(\d+)", run.name).groups()
        for r in compare([run])["rows"]:
            if r["status"] != "done":
                continue
            ckpt = torch.load(r["checkpoint"], map_location="cpu", weights_only=False)
            rows.append({"recipe": recipe, "seed": int(seed), "arm": arm(r["name"]), "name": r["name"],
                         "reward": r["reward"], "AP": 100 * r["AP"], "AP50": 100 * r["AP50"],
                         "epochs": ckpt["config"]["epochs"], "lr": ckpt["config"]["lr"],
                         "cls_loss": [round(e["cls"], 3) for e in ckpt["history"]]})
    return rows


def losses(per_epoch: list) -> str:
    """The first three epochs (where a warm-up spike shows) and the last."""
    shown = [f"{c:.2f}" for c in per_epoch]
    return " ".join(shown if len(shown) <= 4 else shown[:3] + ["…", shown[-1]])


def main():
    from rich.console import Console
    from rich.table import Table

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", default="benchmarks/runs/search")
    parser.add_argument("--out", default="benchmarks/search-retrain.json")
    args = parser.parse_args()
    rows = collect(Path(args.runs))
    Path(args.out).write_text(json.dumps(rows, indent=1))
    table = Table(title="retrained on the demo's test split: AP (classification loss per epoch)")
    for col in ("epochs", "lr", "seed", *dict.fromkeys(ARMS.values())):
        table.add_column(col, justify="right")
    rows.sort(key=lambda r: (r["epochs"], -r["lr"], r["seed"]))
    for recipe, seed in dict.fromkeys((r["recipe"], r["seed"]) for r in rows):
        mine = [r for r in rows if (r["recipe"], r["seed"]) == (recipe, seed)]
        cell = {r["arm"]: f"{r['AP']:.1f} ({losses(r['cls_loss'])})" for r in mine}
        table.add_row(str(mine[0]["epochs"]), f"{mine[0]['lr']:g}", str(seed),
                      *(cell.get(a, "") for a in dict.fromkeys(ARMS.values())))
    Console(width=200).print(table)
    Console().print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
