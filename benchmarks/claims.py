"""Every number README.md's results state, with the json that holds it and the command that writes
that json (issue 43: every claim one command away).

`python -m benchmarks.claims` prints the table: the README's words, the value the json holds, the
json and its make target. tests/test_claims.py checks that README.md still says each, that each
cited json exists, and that each number is the json's value at the README's rounding. A number
added to the README's results without a row here is not checked: add the row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Claim:
    words: str  # as README.md writes them (whitespace aside); `shown` appears in them
    shown: float  # the number as written
    json: str  # under benchmarks/
    value: Callable[[dict], float]  # the number from the json, before rounding
    target: str  # what writes that json

    def held(self) -> float:
        return self.value(json.loads((ROOT / "benchmarks" / self.json).read_text()))


def arch(data: dict, name: str) -> dict:
    archs = data["architectures"]
    return next(a for a in (archs.values() if isinstance(archs, dict) else archs) if a["arch"] == name)


def ratio(data: dict, name: str, key: str, control: str = "baseline") -> float:
    return arch(data, name)[key] / arch(data, control)[key]


def tested(data: dict, name: str) -> dict:
    """An architecture's paired test statistics recomputed from the json's seeds (difference,
    threshold, p), as `compare` computes them now (benchmarks/verdict_from_json.py)."""
    from .verdict_from_json import verdicts

    for path in (ROOT / "benchmarks").glob("*.json"):
        if json.loads(path.read_text()) == data:
            return next(v for v in verdicts(path) if v["arch"] == name)
    raise KeyError(name)


BCCD = "make bccd-headline (the rows' history: benchmarks/README.md)"
SEARCH_RETRAIN = "make bench-search-retrain"

CLAIMS = [
    # BCCD under the fair promotion
    Claim("39.8 ± 0.3 AP against the control's 37.7 ± 0.3", 39.8, "bccd-promotion-adamw.json",
          lambda d: arch(d, "trial-18")["AP_mean"], BCCD),
    Claim("39.8 ± 0.3 AP against the control's 37.7 ± 0.3", 37.7, "bccd-promotion-adamw.json",
          lambda d: arch(d, "baseline")["AP_mean"], BCCD),
    Claim("+2.1 AP beyond seed noise (threshold 0.5;", 2.1, "bccd-promotion-adamw.json",
          lambda d: tested(d, "trial-18")["difference"], BCCD),
    Claim("+2.1 AP beyond seed noise (threshold 0.5;", 0.5, "bccd-promotion-adamw.json",
          lambda d: tested(d, "trial-18")["threshold"], BCCD),
    Claim("p = 0.0015, a win after Holm over the 3 promoted", 0.0015, "bccd-promotion-adamw.json",
          lambda d: tested(d, "trial-18")["p"], BCCD),
    Claim("0.88× the control's FLOPs — and 2.9× its latency (254 against 89 ms", 0.88, "bccd-promotion-adamw.json",
          lambda d: ratio(d, "trial-18", "flops"), BCCD),
    Claim("0.88× the control's FLOPs — and 2.9× its latency (254 against 89 ms", 2.9, "bccd-promotion-adamw.json",
          lambda d: ratio(d, "trial-18", "latency_ms"), BCCD),
    Claim("0.88× the control's FLOPs — and 2.9× its latency (254 against 89 ms", 254, "bccd-promotion-adamw.json",
          lambda d: arch(d, "trial-18")["latency_ms"], BCCD),
    Claim("0.88× the control's FLOPs — and 2.9× its latency (254 against 89 ms", 89, "bccd-promotion-adamw.json",
          lambda d: arch(d, "baseline")["latency_ms"], BCCD),
    Claim("(trial 14, +1.7 AP, threshold 1.6)", 1.7, "bccd-promotion-adamw.json",
          lambda d: tested(d, "trial-14")["difference"], BCCD),
    Claim("(trial 14, +1.7 AP, threshold 1.6)", 1.6, "bccd-promotion-adamw.json",
          lambda d: tested(d, "trial-14")["threshold"], BCCD),
    Claim("Holm (p = 0.022 > 0.025/2)", 0.022, "bccd-promotion-adamw.json",
          lambda d: tested(d, "trial-14")["p"], BCCD),
    Claim("at 0.85× FLOPs and 2.8× latency", 0.85, "bccd-promotion-adamw.json",
          lambda d: ratio(d, "trial-14", "flops"), BCCD),
    Claim("at 0.85× FLOPs and 2.8× latency", 2.8, "bccd-promotion-adamw.json",
          lambda d: ratio(d, "trial-14", "latency_ms"), BCCD),
    Claim("ties it (+0.3, threshold 2.0; 2.1× latency)", 0.3, "bccd-promotion-adamw.json",
          lambda d: tested(d, "trial-20")["difference"], BCCD),
    Claim("ties it (+0.3, threshold 2.0; 2.1× latency)", 2.0, "bccd-promotion-adamw.json",
          lambda d: tested(d, "trial-20")["threshold"], BCCD),
    Claim("ties it (+0.3, threshold 2.0; 2.1× latency)", 2.1, "bccd-promotion-adamw.json",
          lambda d: ratio(d, "trial-20", "latency_ms"), BCCD),
    Claim("the control led 33.5 ± 0.4 to 29.4 ± 1.5", 33.5, "bccd-promotion.json",
          lambda d: arch(d, "baseline")["AP_mean"], "make bccd-sgd"),
    # synthetic, demo-full
    Claim("control 20.3 ± 0.9 test AP, the search's best decoder 15.5 ± 1.1", 20.3, "demo-full.json",
          lambda d: arch(d, "baseline")["AP_mean"], "make demo-full DEMO_TRAIN='--num-convs 2 --lr 0.02'"),
    Claim("control 20.3 ± 0.9 test AP, the search's best decoder 15.5 ± 1.1", 15.5, "demo-full.json",
          lambda d: next(a for a in d["architectures"] if a["arch"] != "baseline")["AP_mean"],
          "make demo-full DEMO_TRAIN='--num-convs 2 --lr 0.02'"),
    # synthetic, 60-trial search and its promotion
    Claim("11.4 ± 0.9 AP against 9.7 ± 1.1, +1.7 AP (threshold 1.4", 11.4, "search-retrain.json",
          lambda d: arch(d, "trial-18")["AP_mean"], SEARCH_RETRAIN),
    Claim("11.4 ± 0.9 AP against 9.7 ± 1.1, +1.7 AP (threshold 1.4", 9.7, "search-retrain.json",
          lambda d: arch(d, "baseline")["AP_mean"], SEARCH_RETRAIN),
    Claim("11.4 ± 0.9 AP against 9.7 ± 1.1, +1.7 AP (threshold 1.4", 1.4, "search-retrain.json",
          lambda d: tested(d, "trial-18")["threshold"], SEARCH_RETRAIN),
    Claim("(p = 0.019 > 0.025/2)", 0.019, "search-retrain.json",
          lambda d: tested(d, "trial-18")["p"], SEARCH_RETRAIN),
    Claim("latency (52 against 23 ms an image)", 52, "search-retrain.json",
          lambda d: arch(d, "trial-18")["latency_ms"], SEARCH_RETRAIN),
    Claim("latency (52 against 23 ms an image)", 23, "search-retrain.json",
          lambda d: arch(d, "baseline")["latency_ms"], SEARCH_RETRAIN),
    Claim("best beats random search's (+0.39, 2 s.e. 0.16;", 0.39, "search.json",
          lambda d: d["controller_vs_random"]["difference"], "make bench-search"),
    Claim("best beats random search's (+0.39, 2 s.e. 0.16;", 0.16, "search.json",
          lambda d: d["controller_vs_random"]["two_se"], "make bench-search"),
    # trials per CPU-hour
    Claim("score 3.3× as many demo-proxy candidates an hour", 3.3, "trial.json",
          lambda d: d["speedup"], "make bench-trial"),
    Claim("(755 against 229 evaluations an hour;", 755, "trial.json",
          lambda d: d["after"]["trials_per_hour"], "make bench-trial"),
    Claim("(755 against 229 evaluations an hour;", 229, "trial.json",
          lambda d: d["before"]["trials_per_hour"], "make bench-trial"),
    Claim("another run 3.6×, `trial-repeat.json`", 3.6, "trial-repeat.json",
          lambda d: d["speedup"], "make bench-trial (again, --out benchmarks/trial-repeat.json)"),
    Claim("5.7× (35 → 200 evaluations an hour)", 5.7, "trial-nas-fcos.json",
          lambda d: d["speedup"], "make bench-trial-faithful"),
    Claim("5.7× (35 → 200 evaluations an hour)", 35, "trial-nas-fcos.json",
          lambda d: d["before"]["trials_per_hour"], "make bench-trial-faithful"),
    Claim("5.7× (35 → 200 evaluations an hour)", 200, "trial-nas-fcos.json",
          lambda d: d["after"]["trials_per_hour"], "make bench-trial-faithful"),
    # the baseline's recipe
    Claim("AdamW at 8e-4 reaches 9.9 test AP against SGD at 0.02's 3.9", 9.9, "baseline-recipe-synthetic.json",
          lambda d: 100 * d["arms"]["grid"]["test_AP"], "make bench-baseline-recipe DATASET=synthetic"),
    Claim("AdamW at 8e-4 reaches 9.9 test AP against SGD at 0.02's 3.9", 3.9, "baseline-recipe-synthetic.json",
          lambda d: 100 * d["arms"]["today"]["test_AP"], "make bench-baseline-recipe DATASET=synthetic"),
]


def decimals(number: float) -> int:
    text = f"{number}"
    return len(text.split(".")[1]) if "." in text and not text.endswith(".0") else 0


def main():
    for c in CLAIMS:
        print(f"{c.shown:>8g}  json {c.held():.6g}  {c.json}  <- {c.target}\n          README: \"{c.words}\"")


if __name__ == "__main__":
    main()
