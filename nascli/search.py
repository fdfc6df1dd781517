"""run_search(): the ask/tell loop over the run database, with crash-safe resume.

Order of events per trial: the strategy asks -> the trial is stored as pending together with the
strategy's state -> it is evaluated -> its result is committed -> the strategy is told -> the
trial is marked told together with the new strategy state. A kill at any point loses at most the
trial in flight, which `resume` re-queues; nothing finished is evaluated twice.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path

import torch

from .config import ProxySpec, load_spec, resolve_proxy
from .errors import NascliError, SpecError, unknown_name
from .features import describe
from .proxy import evaluate, space_for
from .store import RunStore
from .strategies import STRATEGIES


def _pack(state: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _unpack(blob: bytes) -> dict:
    return torch.load(io.BytesIO(blob), weights_only=True)


def _check_cache(spec: ProxySpec, cache, proxy_path) -> None:
    levels = describe(cache)["levels"]
    missing = [lv for lv in spec.inputs if lv not in levels]
    for lv in ("c3", "c4", "c5"):  # P3..P5 are resized to these sizes
        if lv not in levels and lv not in missing:
            missing.append(lv)
    if missing:
        raise SpecError(f"{proxy_path}: field 'inputs' needs levels {missing} that cache {cache} "
                        f"does not hold (it has {levels})")


def run_search(method: str, proxy, cache, trials: int, run_dir, seed: int = 0, resume: bool = False,
               on_progress=None, evaluate_fn=evaluate) -> dict:
    """Runs (or resumes) a search until `trials` trials are finished; returns the summary."""
    if method not in STRATEGIES:
        raise unknown_name("method", method, STRATEGIES)
    run_dir = Path(run_dir)
    store = RunStore(run_dir, create=not resume)
    if resume:
        meta = store.meta()
        if not meta:
            raise NascliError(f"{run_dir}: nothing to resume (empty run database)")
        method, cache, seed = meta["method"], meta["cache"], meta["seed"]
        proxy_path = run_dir / "spec.yaml"
        trials = max(trials, meta["trials"]) if trials else meta["trials"]
    else:
        if store.count():
            raise NascliError(f"{run_dir}: run already has {store.count()} trials; pass --resume or a new --run")
        proxy_path = resolve_proxy(proxy)
    spec = load_spec(ProxySpec, proxy_path)
    if method != "random" and method != spec.space:
        raise SpecError(f"{proxy_path}: field 'space' is {spec.space!r}, but --method {method} searches "
                        f"the {method} space (pass --proxy {method} or a spec of that space)")
    _check_cache(spec, cache, proxy_path)
    if not resume:
        shutil.copyfile(proxy_path, run_dir / "spec.yaml")
    store.set_meta(method=method, cache=str(cache), seed=seed, trials=trials, space=spec.space,
                   proxy=str(proxy_path))
    space = space_for(spec)
    options = spec.controller if method != "random" else {}
    strategy = STRATEGIES[method](space, seed=seed, **options)
    blob = store.load_state()
    if blob is not None:
        strategy.load_state_dict(_unpack(blob))
    for t in store.finished_untold():  # committed, but the kill came before the strategy saw it
        strategy.tell(space.genotype_class.from_json(t.genotype), t.reward)
        store.mark_told([t.id], _pack(strategy.state_dict()))

    started, evaluated = time.perf_counter(), 0
    done_before = store.count() - len(store.pending())
    while True:
        queue = store.pending()
        if not queue:
            if store.count() >= trials:
                break
            genotype = strategy.ask(1)[0]
            trial_id = store.count() + 1
            store.add_pending([genotype.to_json()], [seed * 100_003 + trial_id], _pack(strategy.state_dict()))
            queue = store.pending()
        trial = queue[0]
        genotype = space.genotype_class.from_json(trial.genotype)
        result = evaluate_fn(genotype, spec, cache, trial.seed)
        store.finish(trial.id, result.status, result.reward, result.to_dict())
        strategy.tell(genotype, result.reward if result.status == "done" else None)
        store.mark_told([trial.id], _pack(strategy.state_dict()))
        evaluated += 1
        if on_progress:
            best = store.top(1)
            on_progress({"step": done_before + evaluated, "steps": trials,
                         "reward": result.reward if result.reward is not None else result.reason,
                         "best": best[0].reward if best else float("nan")})
    summary = summarize(store, top=5)
    summary["seconds"] = time.perf_counter() - started
    summary["evaluated_now"] = evaluated
    if summary["top"]:
        (run_dir / "best.json").write_text(json.dumps(json.loads(summary["top"][0]["genotype"]), indent=2))
    store.close()
    return summary


def summarize(store: RunStore, top: int = 5) -> dict:
    """Counts, the top-k trials (reward, losses, params, FLOPs, genotype) and the reward curve."""
    rows = store.trials()
    return {"run": str(store.run_dir), **store.meta(),
            "finished": sum(t.status != "pending" for t in rows),
            "failed": sum(t.status == "failed" for t in rows),
            "top": [{"trial": t.id, "reward": t.reward, "params": t.metrics.get("params"),
                     "flops": t.metrics.get("flops"), "seconds": t.metrics.get("seconds"),
                     "losses": t.metrics.get("losses"), "genotype": t.genotype} for t in store.top(top)],
            "curve": [[t.id, t.reward] for t in rows if t.status == "done"]}
