"""The baseline's recipe chosen on meta-val (`train --lr-grid`) against today's fixed recipe.

Both arms train on the same meta-train split with the same schedule: today's (SGD at the rate
the Makefile gives, `--lr 0.02`) and the grid's choice among promotion's default points plus
today's rate (each point a third of the schedule, scored on meta-val). Reported: the grid's
meta-val scores, the choice, and both finished baselines' meta-val and test AP. The choice is
made on meta-val only; test is read once per arm, after both are trained.

`python -m benchmarks.bench_baseline_recipe --dataset synthetic|bccd --out benchmarks/baseline-recipe-<dataset>.json`
(or `make bench-baseline-recipe DATASET=...`). Run folders live outside the work tree, under
$NASCLI_WORK (default ~/.cache/nascli/work)/baseline-recipe-<dataset>; a rerun reuses what finished.
Run it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

#: dataset -> (the Makefile's baseline options, how its splits are made)
SETUPS = {
    "synthetic": ["--epochs", "10", "--min-size", "96", "--num-convs", "2"],
    "bccd": ["--epochs", "24", "--min-size", "256", "--num-convs", "2"],
}
TODAY_LR = "0.02"


def nascli(*args) -> dict:
    """Runs one nascli command with --json; its parsed output."""
    out = subprocess.run([sys.executable, "-m", "nascli", *map(str, args), "--json"], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out)


def prepare(dataset: str, work: Path, bccd_root: Path | None) -> dict:
    """meta-train / meta-val / test jsons as `make demo` and `make bccd` make them."""
    splits = {name: work / f"{name}.json" for name in ("meta-train", "meta-val", "test")}
    if all(p.is_file() for p in splits.values()):
        return splits
    if dataset == "synthetic":
        nascli("data", "synth", "--out", work / "synth", "--images", 400, "--size", 96, "--seed", 0)
        nascli("data", "split", work / "synth" / "instances.json", "--train", work / "trainval.json",
               "--val", splits["test"], "--val-size", 80, "--seed", 0)
        nascli("data", "split", work / "trainval.json", "--train", splits["meta-train"], "--val", splits["meta-val"],
               "--val-size", 60, "--seed", 0)
    else:
        nascli("data", "convert-voc", bccd_root, "--split", "train", "--out", work / "train.json")
        nascli("data", "convert-voc", bccd_root, "--split", "test", "--out", splits["test"])
        nascli("data", "split", work / "train.json", "--train", splits["meta-train"], "--val", splits["meta-val"],
               "--val-size", 0.3, "--seed", 0)
    return splits


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", choices=sorted(SETUPS), default="synthetic")
    parser.add_argument("--bccd", type=Path, default=Path("../shared/datasets/bccd/BCCD"))
    parser.add_argument("--grid", default=f"default,{TODAY_LR}")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    work = Path(os.environ.get("NASCLI_WORK") or Path.home() / ".cache" / "nascli" / "work") / \
        f"baseline-recipe-{args.dataset}"
    work.mkdir(parents=True, exist_ok=True)
    splits = prepare(args.dataset, work, args.bccd.resolve())
    common = ["--data", splits["meta-train"], "--val", splits["meta-val"], *SETUPS[args.dataset], "--seed", 0]
    arms, seconds = {}, {}
    for arm, extra in (("today", ["--lr", TODAY_LR]), ("grid", ["--lr-grid", args.grid])):
        started = time.perf_counter()
        arms[arm] = nascli("train", *common, *extra, "--out", work / arm)
        seconds[arm] = time.perf_counter() - started
    result = {"dataset": args.dataset, "options": [str(x) for x in SETUPS[args.dataset]], "work": str(work),
              "grid": arms["grid"]["grid"], "grid_epochs": arms["grid"]["grid_epochs"],
              "chosen": arms["grid"]["chosen"], "arms": {}}
    for arm in arms:
        test = nascli("eval", work / arm / "last.pt", "--data", splits["test"], "--latency-images", 1)
        result["arms"][arm] = {"recipe": TODAY_LR if arm == "today" else arms[arm]["chosen"],
                               "meta_val_AP": arms[arm]["evaluation"]["AP"], "test_AP": test["AP"],
                               "test_AP50": test["AP50"], "train_seconds": round(arms[arm]["train_seconds"]),
                               "wall_seconds_this_run": round(seconds[arm]),
                               "cls_loss_by_epoch": [round(h["cls"], 3) for h in arms[arm]["history"]]}
    out = args.out or Path(f"benchmarks/baseline-recipe-{args.dataset}.json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
