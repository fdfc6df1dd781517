"""Which method for my data? Every method on one budget, one table (`make methods`; issue 28).

From one baseline on one dataset (a pipeline folder of `make pipeline-*`: its baseline, splits and
feature cache; an image cache for the backbone methods is built beside the runs), each method
searches for the same wall-clock minutes on this machine (`nascli search --minutes`):
nas-fcos, random (the nas-fcos space), nas-fpn, auto-fpn (its three λ presets a third of the
minutes each, the preset kept by its best re-scored proxy mean on meta-val: its own meta-val rule),
detnas (its supernet's training counts) and sp-nas. Each method's winner and its control are then
promoted by the fair protocol (`retrain`: the rate chosen on meta-val, `--seeds` on test), and
one table reports per method: search minutes, trials, the proxy verdict, test AP mean ± std,
AP50, params, FLOPs, latency and the test verdict against the control; a figure puts every
winner and control on AP against FLOPs. A method whose proxy cannot separate candidates (NAS-FPN:
spread over seed noise measured below 3, benchmarks/proxy-study-nas-fpn.json) gets a row that
says so instead of a promotion.

Resumable: every search and every promoted row is in a run database under `--work`; rerunning
the command continues where a kill stopped it, and the table is rebuilt from the databases.
A control whose genotype another method's run already promoted is shared (its finished rows
copied, its model files hard-linked), so the decoder methods' common hand design is trained once.

`python -m benchmarks.bench_methods --pipeline pipelines/nas-fcos --minutes 10 --out benchmarks/methods.json`
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

METHODS = ("nas-fcos", "random", "nas-fpn", "auto-fpn", "detnas", "sp-nas")
#: The budget is minutes; the trial count only caps a search (auto-fpn: its supernet epochs).
TRIAL_CAP = {"auto-fpn": 6}
TRIAL_CAP_DEFAULT = 10_000
#: Grid extensions where an architecture's best is its optimiser's largest rate (the Makefile's
#: PROMOTE_EXTEND: every promotion of the table is the pipelines').
EXTEND_GRID = 2
#: A proxy whose spread between candidates is below this many seed-noise widths cannot steer a search.
MIN_SIGNAL_TO_NOISE = 3.0
AUTO_FPN_PRESETS = ("small", "middle", "big")


@dataclass(frozen=True)
class Inputs:
    """What every method starts from: the baseline's feature cache, an image cache of the same
    crops (the backbone methods), and the test split the promotion evaluates on."""

    features: str
    images: str | None
    test: str


@contextmanager
def timed(work: Path, step: str, clock=time.monotonic):
    """Adds the wall-clock seconds of one step to `work/wall.json`, summed over every run of the
    command, so a table resumed after a kill reports what it cost in all. An interrupted step's
    time is kept (Ctrl-C, `kill`, an exception); only `kill -9` loses the step it stopped."""
    start = clock()
    try:
        yield
    finally:
        spent = wall_seconds(work)
        spent[step] = spent.get(step, 0.0) + clock() - start
        work.mkdir(parents=True, exist_ok=True)
        (work / "wall.json").write_text(json.dumps(spent, indent=1))


def wall_seconds(work: Path) -> dict:
    """Every step's summed wall-clock seconds (see `timed`)."""
    ledger = work / "wall.json"
    return json.loads(ledger.read_text()) if ledger.is_file() else {}


def pipeline_inputs(pipeline: Path, work: Path, seed: int, methods=METHODS) -> Inputs:
    """A `make pipeline-*` folder's cache and test split; its image cache built under `work` once,
    and only when one of `methods` trains on images (a decoder-only row needs none)."""
    from nascli.cache import build_cache
    from nascli.cache.read import describe
    from nascli.methods import IMAGES, lookup

    features = sorted((pipeline / "cache").glob("*.h5"))
    if not features:
        raise SystemExit(f"bench_methods: no feature cache in {pipeline}/cache; run make demo first")
    if all(lookup(m).cache != IMAGES for m in methods):
        return Inputs(str(features[0]), None, str(pipeline / "test.json"))
    info = describe(features[0])
    images = sorted((work / "images").glob("*.h5"))
    if not images:
        src = info["sources"]
        with timed(work, "image cache"):
            r = build_cache(src["data"], src["val"], out_dir=work / "images", checkpoint=src["checkpoint"],
                            levels=["images"], crop=info["crop"], seed=seed, device="cpu")
        images = [Path(r["path"])]
    return Inputs(str(features[0]), str(images[0]), str(pipeline / "test.json"))


def proxy_signal(method: str) -> float | None:
    """The measured spread/noise of the better reward of a method's proxy as shipped (the proxy this
    table runs), where one was measured: the proxy study's "as shipped" design when there is a study
    (benchmarks/proxy-study-<method>.json; a design it chose replaces the shipped spec by hand, so
    the study then measures it as shipped), else the single measurement (reward_noise-<method>.json)."""
    study = Path(__file__).with_name(f"proxy-study-{method}.json")
    if study.is_file():
        shipped = json.loads(study.read_text())["designs"].get("as shipped")
        if shipped:
            return max(shipped["ratio"].values())
    path = Path(__file__).with_name(f"reward_noise-{method}.json")
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return max(data[kind]["signal_to_noise"] for kind in ("ap", "loss") if kind in data)


def search(method: str, inputs: Inputs, work: Path, minutes: float | None, seed: int, proxies: dict,
           trials: int | None, executor: str, latency_target: str | None = None) -> tuple[Path, str]:
    """The method's search on the budget (resumed if its run exists); auto-fpn: every preset on a
    third of it, and the preset `choose_preset` keeps. Returns the winning run and its note."""
    from nascli.methods import IMAGES, default_proxy, lookup
    from nascli.search import run_search

    cache = inputs.images if lookup(method).cache == IMAGES else inputs.features
    proxy = proxies.get(method) or default_proxy(method)
    cap = trials or TRIAL_CAP.get(method, TRIAL_CAP_DEFAULT)
    presets = AUTO_FPN_PRESETS if lookup(method).resource_weight else (None,)
    runs = {}
    for preset in presets:
        run = work / (method if preset is None else f"{method}-{preset}")
        share = None if minutes is None else minutes / len(presets)
        resume = (run / "run.db").is_file()
        runs[run] = run_search(method, proxy, cache, None if resume else cap, run, seed=seed, resume=resume,
                               lam=None if resume else preset, minutes=share, executor=executor,
                               latency_target=latency_target)
        runs[run]["stopped"] = stopped_because(run) if preset else ""
    return choose_preset(runs)


def _best(summary: dict) -> dict | None:
    return next((t for t in summary["top"] if t["mean"] is not None), None)


def choose_preset(runs: dict) -> tuple[Path, str]:
    """The run (one per λ preset) whose best re-scored proxy mean is highest, and a note for the
    table: the presets are "indistinguishable" when that best does not beat the runner-up's beyond
    the seed noise pooled over both (the proxy verdict's test), and a preset whose search stopped
    on collapse (`stopped` in its summary) is named. One run: itself, no note."""
    from nascli.protocol import noise_dof, seed_noise, verdict

    order = sorted(runs, key=lambda r: -(_best(runs[r]) or {"mean": float("-inf")})["mean"])
    if len(order) == 1:
        return order[0], ""
    notes = []
    first, second = (_best(runs[r]) for r in order[:2])
    if first and second:
        stats = [t for r in order[:2] for t in runs[r]["top"] if t["mean"] is not None]
        v = verdict(first, second, seed_noise(stats), noise_dof(stats))
        if not v["beats_control"]:
            notes.append(f"presets indistinguishable on the proxy: the best λ {runs[order[0]].get('lambda'):g} "
                         f"leads λ {runs[order[1]].get('lambda'):g} by {v['difference']:+.4f} "
                         f"(threshold {v['threshold']:.4f}); the first is promoted")
    notes += [f"λ {runs[r].get('lambda'):g} stopped on {runs[r]['stopped']}" for r in order if runs[r].get("stopped")]
    return order[0], "; ".join(notes)


def stopped_because(run: Path) -> str:
    """Why a supernet search stopped early (its collapse guard), or ""."""
    from nascli.store import RunStore, unpack_state

    store = RunStore(run, create=False, readonly=True)
    try:
        blob = store.load_state()
    finally:
        store.close()
    return unpack_state(blob).get("stopped", "") if blob else ""


def promote(run: Path, test: str, epochs: int | None, seeds: int, lr: float | None, shared: Path | None,
            ledger: Path | None = None, method: str = "") -> None:
    """The winner and the control by the fair protocol; the control's finished rows are copied from
    `shared` first when that run promoted the same control genotype (retrain then skips them).
    With a `ledger` (retrain --ledger) the winner is fixed there once, as LEDGER/winners/<method>.json,
    and promoted by that file: a search rerun on another machine for the same minutes may rank
    another first, and the rows kept in the ledger are the fixed winner's (and the control's,
    shared by every row made from the same baseline and recipe)."""
    from nascli.retrain import Promotion, retrain

    if shared is not None:
        share_control(shared, run)
    request = Promotion(top=1, val=test, epochs=epochs, seeds=seeds, lr=lr, device="cpu", extend_grid=EXTEND_GRID)
    if ledger is not None:
        request = replace(request, top=0, archs=(str(fixed_winner(run, Path(ledger), method)),), ledger=ledger)
    retrain(run, request)


def fixed_winner(run: Path, ledger: Path, method: str) -> Path:
    """LEDGER/winners/<method>.json: the run's best genotype, written the first time only."""
    from nascli.report import export_best

    path = ledger / "winners" / f"{method}.json"
    if not path.is_file():
        [best] = export_best(run, top=1, out=run / "export") or [None]
        if best is None:
            raise SystemExit(f"bench_methods: {run} finished no trial to promote")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Path(best).read_text())
    return path


def same_control(a: Path, b: Path) -> bool:
    """Whether two runs' controls are the same genotype (so one promotion of it serves both)."""
    from nascli.store import RunStore

    sa, sb = RunStore(a, create=False), RunStore(b, create=False)
    try:
        return bool(sa.control() and sb.control() and sa.control().genotype == sb.control().genotype)
    finally:
        sa.close()
        sb.close()


def share_control(source: Path, target: Path) -> int:
    """Copies `source`'s finished control rows into `target` when both runs' controls are the same
    genotype; returns how many were copied."""
    from nascli.store import RunStore

    if not same_control(source, target):
        return 0
    src, dst = RunStore(source, create=False), RunStore(target, create=False)
    try:
        have = {r["name"] for r in dst.retrained()}
        rows = [r for r in src.retrained() if r["trial"] is None and r["status"] == "done"
                and r["metrics"].get("arch") == "baseline" and r["name"] not in have]
        for r in rows:  # the model file linked to where retrain looks for it in this run (no copy on disk);
            here = None  # grid rows keep no model file, only their meta-val metrics
            if r["checkpoint"]:
                here = target / Path(r["checkpoint"]).relative_to(source)
                here.parent.mkdir(parents=True, exist_ok=True)
                if not here.exists():
                    os.link(r["checkpoint"], here)
            dst.set_retrained(r["name"], None, r["genotype"], dst.control().reward, "done",
                              here and str(here), r["metrics"])
        return len(rows)
    finally:
        src.close()
        dst.close()


def method_row(method: str, run: Path, note: str = "", latency_images: int = 0) -> dict:
    """One line of the table from a method's run database (search and promotion); `latency_images`
    > 0 re-times the winner with the control in one process, interleaved (compare's latency)."""
    from nascli.protocol import summarize
    from nascli.report import compare
    from nascli.store import RunStore

    store = RunStore(run, create=False)
    try:
        s, meta = summarize(store), store.meta()
    finally:
        store.close()
    c = compare([run], latency_images=latency_images)
    archs = {a["arch"]: a for a in c["architectures"]}
    best = next((t for t in s["top"] if t["mean"] is not None), None)
    winner = next((a for name, a in archs.items() if name != "baseline"), None)

    def promoted(a):
        if a is None or a["status"] != "done":
            return None
        return {"arch": a["arch"], "lr": a["lr"], "optimizer": a["optimizer"], "seeds": a["seeds"], "AP": 100 * a["AP"],
                "AP_std": 100 * a["AP_std"] if a["AP_std"] is not None else None, "AP50": 100 * a["AP50"],
                "params": a["params"], "flops": a["flops"], "latency_ms": a["latency_ms"],
                "latency": a.get("latency"), "ap_by_seed": {str(k): 100 * v for k, v in a["ap_by_seed"].items()}}

    return {"method": method, "run": str(run), "lambda": meta.get("lambda"),
            "search_minutes": (meta.get("elapsed") or 0) / 60,
            # trained candidates; under a latency target most asks are skipped untrained (milliseconds each)
            "trials": s["finished"] - s["skipped"], "asked": s["finished"], "failed": s["failed"],
            "proxy_verdict": s["verdict"]["text"], "proxy_beats_control": s["verdict"]["beats_control"],
            "best_trial": best and best["trial"], "best_mean": best and best["mean"],
            "best_std": best and best["std"], "best_seeds": best and best["seeds"],
            "control_mean": s["control"] and s["control"]["mean"], "noise": s["noise"],
            "winner": promoted(winner), "control": promoted(archs.get("baseline")),
            "test_verdict": c["test_verdict"][str(run)]["text"] if c["rows"] else None,
            "test_beats_control": c["test_verdict"][str(run)].get("beats_control") if c["rows"] else None,
            "note": note}


def run(inputs: Inputs, work: Path, methods=METHODS, minutes: float | None = 10.0, seed: int = 0,
        epochs: int | None = None, seeds: int = 3, lr: float | None = None, proxies: dict | None = None,
        trials: int | None = None, executor: str = "local", on_row=None, ledger: Path | None = None,
        latency_target: str | None = None, latency_images: int = 0) -> dict:
    """Every method searched and promoted (resuming whatever is done), then the table; each promoted
    winner re-timed with the control, interleaved, on `latency_images` test images (0: as retrain
    timed them, apart)."""
    work.mkdir(parents=True, exist_ok=True)
    rows, promoted_runs = [], []
    for method in methods:
        separation = proxy_signal(method)
        with timed(work, f"{method} search"):
            winner, note = search(method, inputs, work, minutes, seed, proxies or {}, trials, executor, latency_target)
        if separation is not None and separation < MIN_SIGNAL_TO_NOISE:
            note = (f"not promoted: its proxy's spread between candidates is {separation:.2f} seed-noise widths "
                    f"(< {MIN_SIGNAL_TO_NOISE:g}), too little to steer a search at this budget")
            rows.append(method_row(method, winner, note))
        else:
            shared = next((r for r in promoted_runs if same_control(r, winner)), None)
            with timed(work, f"{method} promotion"):
                promote(winner, inputs.test, epochs, seeds, lr, shared, ledger, method)
            promoted_runs.append(winner)
            rows.append(method_row(method, winner, note, latency_images))
        spent = wall_seconds(work)
        rows[-1]["wall_minutes"] = {step: spent.get(f"{method} {step}", 0.0) / 60
                                    for step in ("search", "promotion")}
        if on_row:
            on_row(rows[-1])
    return {"minutes_per_method": minutes, "wall_minutes": sum(wall_seconds(work).values()) / 60, "seed": seed,
            "executor": executor, "features": inputs.features, "images": inputs.images, "test": inputs.test,
            "seeds": seeds, "epochs": epochs, "latency_target": latency_target, "latency_images": latency_images,
            "proxies": {m: str(p) for m, p in (proxies or {}).items()}, "rows": rows,
            "strategies_vs_random": strategies_vs_random(rows, minutes)}


def strategies_vs_random(rows: list[dict], minutes: float | None, here: Path | None = None) -> list[dict]:
    """Each search strategy against random sampling of its own space, with its interval: NAS-FCOS's
    controller in this table (equal minutes) and over every search seed of `make bench-search`
    (benchmarks/search[-seedS].json, equal trials; the seeds' differences as a distribution: their
    mean against the t interval over seeds), DetNAS's evolution on one supernet
    (benchmarks/detnas.json, equal paths)."""
    import re

    from nascli.stats import paired_difference

    from .bench_search import difference

    here = here or Path(__file__).parent
    out = []
    by = {r["method"]: r for r in rows}
    arms = [by.get(m) for m in ("nas-fcos", "random")]
    if all(a and a["best_mean"] is not None and a["best_std"] is not None for a in arms):
        a, b = ({"mean": r["best_mean"], "std": r["best_std"], "seeds": r["best_seeds"]} for r in arms)
        budget = f"{minutes:g} search minutes each (this table)" if minutes is not None else "this table"
        out.append({"strategy": "nas-fcos controller", "budget": budget, "source": "this table", **difference(a, b)})
    per_seed, names = {}, []
    found = ((re.fullmatch(r"search(?:-seed(\d+))?\.json", p.name), p) for p in here.glob("search*.json"))
    for seed, path in sorted((int(m.group(1) or 0), p) for m, p in found if m):
        data = per_seed[seed] = json.loads(path.read_text())
        names.append(f"benchmarks/{path.name}")
        out.append({"strategy": "nas-fcos controller", "budget": f"{data['nas-fcos']['trials']} trials each, "
                    f"search seed {seed}", "source": f"benchmarks/{path.name}", **data["controller_vs_random"]})
    if len(per_seed) >= 2:
        d = paired_difference({k: v["nas-fcos"]["mean"] for k, v in per_seed.items()},
                              {k: v["random"]["mean"] for k, v in per_seed.items()})
        lo, hi = d["difference"] - d["threshold"], d["difference"] + d["threshold"]
        verdict = "beats" if lo > 0 else ("loses to" if hi < 0 else "ties with")
        out.append({"strategy": "nas-fcos controller", "budget": f"over {d['n']} search seeds",
                    "source": ", ".join(names),
                    "difference": d["difference"], "interval": [lo, hi],
                    "text": f"over {d['n']} search seeds the controller's best {verdict} random's: "
                            f"{d['difference']:+.4g}, 95 % interval [{lo:+.4g}, {hi:+.4g}]"})
    detnas = here / "detnas.json"
    if detnas.is_file():
        data = json.loads(detnas.read_text())
        out.append({"strategy": "detnas evolution", "budget": f"{data['evolution']['trials']} paths each, one supernet",
                    "source": "benchmarks/detnas.json", **difference(data["evolution"], data["random"], "evolution")})
    return out


def assemble(folder: Path, methods=METHODS) -> dict:
    """The table from the rows measured so far: FOLDER/<method>.json, each written by one `make
    methods-row`; a method without its json is a row marked not measured yet, never dropped."""
    rows, settings = [], {}
    for method in methods:
        path = folder / f"{method}.json"
        if not path.is_file():
            rows.append({"method": method, "missing": True})
            continue
        data = json.loads(path.read_text())
        rows += [r for r in data["rows"] if r["method"] == method]
        settings.setdefault("minutes_per_method", data["minutes_per_method"])
        settings.setdefault("seeds", data["seeds"])
        settings.setdefault("epochs", data["epochs"])
    measured = [r for r in rows if not r.get("missing")]
    return {**settings, "rows": rows, "missing": [r["method"] for r in rows if r.get("missing")],
            "strategies_vs_random": strategies_vs_random(measured, settings.get("minutes_per_method"), folder)}


def figure(result: dict, path: Path) -> Path:
    """Test AP (mean ± std over seeds) against GFLOPs: every method's winner and its control."""
    from benchmarks.common import save_figure, subplots

    fig, ax = subplots(figsize=(7.5, 5))
    for k, r in enumerate(result["rows"]):
        for arm, marker in (("winner", "o"), ("control", "s")):
            a = r.get(arm)
            if a is None:
                continue
            ax.errorbar(a["flops"] / 1e9, a["AP"], yerr=a["AP_std"] or 0, fmt=marker, color=f"C{k}", ms=6,
                        mfc="none" if arm == "control" else f"C{k}",
                        label=f"{r['method']} {'winner' if arm == 'winner' else 'control'}")
    ax.set_xlabel("GFLOPs (one image at the evaluation size)")
    ax.set_ylabel("test AP (%), mean ± std over seeds")
    ax.set_title(f"every method on {result.get('minutes_per_method')} search minutes: winners (filled) and controls")
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path)


def verdict_cell(row: dict) -> str:
    """A row's test verdict and its note (why it was not promoted, Auto-FPN's preset choice)."""
    return "; ".join(filter(None, (row["test_verdict"], row["note"])))


def latency_cell(winner: dict | None) -> str:
    """ms/image, with its ratio to the control and interval where it was timed interleaved with it."""
    from .bench_promotion import latency_text

    if winner is None:
        return "—"
    return latency_text(winner["latency"]) if winner.get("latency") else f"{winner['latency_ms']:.0f}"


def table_lines(result: dict) -> list[str]:
    """The table as Markdown rows (benchmarks/README.md)."""
    def ap(a):
        return "—" if a is None else f"{a['AP']:.1f} ± {a['AP_std'] or 0:.1f}"

    def of_winner(r, key, scale, digits):
        return "—" if r["winner"] is None else f"{r['winner'][key] / scale:.{digits}f}"

    lines = ["| method | search min | trials | proxy verdict | winner test AP | control test AP | winner AP50 | "
             "params M | GFLOPs | ms/img | test verdict |", "|" + " --- |" * 11]
    for r in result["rows"]:
        if r.get("missing"):
            lines.append(f"| {r['method']} | not measured yet (`make methods-row METHOD={r['method']}`) |"
                         + " |" * 9)
            continue
        name = r["method"] if r["lambda"] is None else f"{r['method']} (λ {r['lambda']:g})"
        trials = str(r["trials"]) if r.get("asked", r["trials"]) == r["trials"] else f"{r['trials']} of {r['asked']:,} asked"
        lines.append(f"| {name} | {r['search_minutes']:.1f} | {trials} | {r['proxy_verdict']} | "
                     f"{ap(r['winner'])} | {ap(r['control'])} | {of_winner(r, 'AP50', 1, 1)} | "
                     f"{of_winner(r, 'params', 1e6, 2)} | {of_winner(r, 'flops', 1e9, 3)} | "
                     f"{latency_cell(r['winner'])} | {verdict_cell(r)} |")
    lines += ["", "| strategy vs random | budget | re-scored bests on the proxy | json |", "| --- | --- | --- | --- |"]
    lines += [f"| {s['strategy']} | {s['budget']} | {s['text']} | {s['source']} |"
              for s in result.get("strategies_vs_random", [])]
    return lines


def parse_proxies(pairs: list[str]) -> dict:
    """`METHOD=SPEC` pairs as the proxies `run` takes: the demo cache has no C2, so the Makefile
    names the NAS-FCOS demo proxy for nas-fcos and random as its pipelines do."""
    proxies = {}
    for pair in pairs:
        method, sep, spec = pair.partition("=")
        if not sep or method not in METHODS or not spec:
            raise ValueError(f"--proxy {pair!r}: expected METHOD=SPEC with METHOD one of {', '.join(METHODS)}")
        proxies[method] = spec
    return proxies


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default="pipelines/nas-fcos", help="a make pipeline-* folder (baseline, cache)")
    parser.add_argument("--minutes", type=float, default=10.0, help="search minutes per method")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--epochs", type=int, default=None, help="final schedule (default: the baseline's)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--executor", default=os.environ.get("METHODS_EXECUTOR", "local"))
    parser.add_argument("--proxy", action="append", default=[], metavar="METHOD=SPEC",
                        help="a method's proxy spec (name or path; default: the method's own), repeatable")
    parser.add_argument("--work", default="benchmarks/runs/methods")
    parser.add_argument("--out", default="benchmarks/methods.json")
    parser.add_argument("--ledger", default=None, help="keep every promoted row here (retrain --ledger) and fix "
                                                       "each method's winner in it once")
    parser.add_argument("--latency-target", default=None, help="every search under it, e.g. 1.0x (search --latency-target)")
    parser.add_argument("--latency-images", type=int, default=0,
                        help="re-time each winner with the control, interleaved, on this many test images")
    parser.add_argument("--assemble", default=None, metavar="FOLDER",
                        help="only build FOLDER/table.json and .png from the rows FOLDER/<method>.json present")
    args = parser.parse_args()
    if args.assemble:
        folder = Path(args.assemble)
        result = assemble(folder, args.methods.split(","))
        (folder / "table.json").write_text(json.dumps(result, indent=1))
        figure(result, folder / "table.png")
        print("\n".join(table_lines(result)))
        print(f"wrote {folder / 'table.json'} and {folder / 'table.png'}; not measured yet: "
              f"{', '.join(result['missing']) or 'none'}")
        return
    # `kill` unwinds like Ctrl-C, so the wall ledger keeps the interrupted step's time
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        proxies = parse_proxies(args.proxy)
    except ValueError as e:
        parser.error(str(e))  # exit 2, like every other bad argument
    work = Path(args.work)
    inputs = pipeline_inputs(Path(args.pipeline), work, args.seed, args.methods.split(","))
    result = run(inputs, work, args.methods.split(","), args.minutes, args.seed, args.epochs, args.seeds,
                 proxies=proxies, executor=args.executor, on_row=lambda r: print(f"{r['method']}: {verdict_cell(r)}",
                                                                flush=True),
                 ledger=Path(args.ledger) if args.ledger else None, latency_target=args.latency_target,
                 latency_images=args.latency_images)
    out = Path(args.out)
    out.write_text(json.dumps(result, indent=1))
    figure(result, out.with_suffix(".png"))
    print("\n".join(table_lines(result)))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
