"""The test verdict's statistics recomputed from a promotion json's per-seed AP (issue 43): paired
difference, t threshold, one-sided p and Holm over the json's promoted family, as `nascli compare`
now computes them - for jsons written before compare applied Holm.

python -m benchmarks.verdict_from_json benchmarks/bccd-promotion-adamw.json benchmarks/search-retrain.json
"""

from __future__ import annotations

import argparse
import json


def verdicts(path) -> list[dict]:
    from nascli.stats import holm, paired_difference, paired_p_value

    archs = json.loads(open(path).read())["architectures"]
    archs = list(archs.values()) if isinstance(archs, dict) else archs
    ap = {a["arch"]: {seed: v["AP"] for seed, v in a["seeds"].items()} for a in archs if a.get("seeds")}
    control = ap.pop("baseline")
    rows = []
    for arch, seeds in ap.items():
        d = paired_difference(seeds, control)
        rows.append({"arch": arch, "n": d["n"], "difference": d["difference"], "threshold": d["threshold"],
                     "p": paired_p_value(d["difference"], d["se"], d["n"])})
    survives = holm({r["arch"]: r["p"] for r in rows if r["p"] is not None})
    return [{**r, "holm": survives.get(r["arch"]), "family": len(survives)} for r in rows]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("jsons", nargs="+")
    for path in p.parse_args().jsons:
        for r in verdicts(path):
            print(f"{path}: {r['arch']} {r['difference']:+.2f} AP (threshold {r['threshold']:.2f}, {r['n']} seeds), "
                  f"p = {r['p']:.4f}, {'passes' if r['holm'] else 'fails'} Holm over {r['family']}")


if __name__ == "__main__":
    main()
