"""run_search(): the evaluation protocol around the ask/tell loop, with crash-safe resume.

1. The control (the family's hand-designed decoder) is scored first with `rescore_seeds` seeds,
   outside the trial budget: its mean is the line to beat, its spread the proxy's seed noise.
2. The ask/tell loop: the strategy asks -> the trial is stored as pending together with the
   strategy's state -> it is evaluated (one seed; every candidate sees the same batch order) ->
   its result is committed -> the strategy is told -> the trial is marked told together with the
   new strategy state. A kill loses at most the trial in flight, which `resume` re-queues.
3. The top `rescore_top` trials are re-scored with fresh seeds and ranked by their mean (the
   search's own seed is left out: it is the one that selected them, and it flatters them).
4. The verdict: does the best re-scored candidate beat the control by more than the noise?
Every score is a row in run.db as soon as it arrives, so a resumed run re-runs nothing finished.
Evaluations run through an executor (executors.py): in this process one at a time, or on Ray with
as many in flight as there are workers; the strategy and the database stay here either way.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from collections import deque
from pathlib import Path

import torch

from .config import ProxySpec, load_spec, resolve_proxy, validate
from .errors import NascliError, SpecError, unknown_name
from .executors import check_executor, make_executor
from .features import describe
from .proxy import evaluate, space_for
from .spaces import load_genotype
from .store import RunStore
from .strategies import STRATEGIES
from .strategies.darts import DartsOptions, resolve_lambda


def _pack(state: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _unpack(blob: bytes) -> dict:
    return torch.load(io.BytesIO(blob), weights_only=True)


def _check_cache(spec: ProxySpec, cache, proxy_path) -> None:
    levels = describe(cache)["levels"]
    if spec.space in ("sp-nas", "detnas"):
        if levels != ["images"]:
            raise SpecError(f"{cache}: field 'levels' is {levels}; {spec.space} trains backbones on image crops "
                            f"(cache-features --levels images)")
        return
    missing = [lv for lv in spec.inputs if lv not in levels]
    for lv in ("c3", "c4", "c5"):  # P3..P5 are resized to these sizes
        if lv not in levels and lv not in missing:
            missing.append(lv)
    if missing:
        raise SpecError(f"{proxy_path}: field 'inputs' needs levels {missing} that cache {cache} "
                        f"does not hold (it has {levels})")


def run_search(method: str, proxy, cache, trials: int, run_dir, seed: int = 0, resume: bool = False,
               on_progress=None, evaluate_fn=evaluate, lam=None, device="cpu", executor="local",
               ray_address="auto", workers=None) -> dict:
    """Runs (or resumes) a search until `trials` trials are finished; returns the summary.
    `lam` (auto-fpn): the resource weight λ, a number or small|middle|big, over the spec's.
    `device` (auto|cpu|cuda): where trials train (the Auto-FPN supernet stays on the CPU).
    `executor` (local|ray, see executors.py): where trials run; `ray_address` and `workers` for ray.
    A run resumes on any device and any executor."""
    if method not in STRATEGIES:
        raise unknown_name("method", method, STRATEGIES)
    check_executor(executor, workers)
    if executor == "local":
        trial_device(device, executor, None)  # a missing GPU is an error before anything is written
    run_dir = Path(run_dir)
    if not resume:  # a bad spec or cache is an error before the run folder exists
        proxy_path = resolve_proxy(proxy)
        spec = _checked_spec(method, proxy_path, cache)
    store = RunStore(run_dir, create=not resume)
    try:
        if resume:
            meta = store.meta()
            if not meta:
                raise NascliError(f"{run_dir}: nothing to resume (empty run database)")
            method, cache, seed = meta["method"], meta["cache"], meta["seed"]
            proxy_path = run_dir / "spec.yaml"
            if lam is not None and meta.get("lambda") is not None and resolve_lambda(lam) != meta["lambda"]:
                raise SpecError(f"--lambda {lam}: {run_dir} was searched with lambda {meta['lambda']}; "
                                f"resume it without --lambda, or start a new --run")
            lam = meta.get("lambda")
            # a supernet's schedule (cosine, α frozen for the first third) is fixed by its epochs at start
            trials = meta["trials"] if not trials or method == "auto-fpn" else max(trials, meta["trials"])
            spec = _checked_spec(method, proxy_path, cache)
        elif store.count():
            raise NascliError(f"{run_dir}: run already has {store.count()} trials; pass --resume or a new --run")
        device = trial_device(device, executor, spec)
        pool = make_executor(executor, spec, ray_address, workers)
        try:
            if not resume:
                shutil.copyfile(proxy_path, run_dir / "spec.yaml")
            score = _evaluator(spec, method, cache, run_dir, seed, device, evaluate_fn, on_progress, pool)
            return _search(store, spec, method, proxy_path, cache, trials, run_dir, seed, lam, score, pool,
                           on_progress)
        finally:
            pool.close()
    finally:
        store.close()


def _checked_spec(method: str, proxy_path, cache) -> ProxySpec:
    """The proxy spec, checked against the method and the cache it will search."""
    spec = load_spec(ProxySpec, proxy_path)
    if method == "random" and spec.space == "sp-nas":
        raise SpecError(f"{proxy_path}: the sp-nas space is searched by --method sp-nas only (it grows one network)")
    if method != "random" and method != spec.space:
        raise SpecError(f"{proxy_path}: field 'space' is {spec.space!r}, but --method {method} searches "
                        f"the {method} space (pass --proxy {method} or a spec of that space)")
    _check_cache(spec, cache, proxy_path)
    return spec


def trial_device(device: str, executor: str, spec: ProxySpec) -> str:
    """Where a trial trains. Locally: auto -> cuda if this machine has one. On Ray the workers'
    GPUs count, not the driver's: auto -> cuda iff the spec's resources give a trial a GPU."""
    from .runtime import resolve_device

    if executor != "ray":
        return str(resolve_device(device))
    if device not in ("auto", "cpu", "cuda"):
        return str(resolve_device(device))  # the one-line error for an unknown name
    if device == "cuda" and not spec.resources.gpus:
        raise SpecError("--device cuda with --executor ray: give each trial a GPU in the spec "
                        "(field 'resources.gpus')")
    return "cuda" if device == "cuda" or spec.resources.gpus else "cpu"


def _evaluator(spec, method, cache, run_dir, seed, device, evaluate_fn, on_progress, pool):
    """What a trial runs: `evaluate_fn(genotype, spec, cache, trial_seed, run_seed)` bound to its
    device and the files it reads, all absolute so a worker in another folder finds them. The
    executor checks first that its workers can use those files."""
    from functools import partial

    from .runtime import resolve_device

    cache, run_dir = str(Path(cache).resolve()), Path(run_dir).resolve()
    readable, writable = {"cache": cache}, {}
    if method == "sp-nas" and evaluate_fn is evaluate:  # weights travel through files in the run folder
        from .backbone_proxy import evaluate as evaluate_backbone

        (run_dir / "weights").mkdir(exist_ok=True)
        writable["run folder"] = run_dir / "weights"
        evaluate_fn = partial(evaluate_backbone, weights_dir=run_dir / "weights", device=device)
    elif spec.space == "detnas":  # the one-shot supernet first (resumable); then paths inherit its weights
        from .supernet import evaluate_path, train_supernet

        # trained on the driver: on Ray its own GPU if it has one, unless --device cpu
        here = device if pool.name == "local" or device == "cpu" else str(resolve_device("auto"))
        train_supernet(run_dir / "supernet.pt", spec, cache, seed, on_progress, here)
        readable["supernet"] = run_dir / "supernet.pt"
        if evaluate_fn is evaluate:
            evaluate_fn = partial(evaluate_path, supernet_path=run_dir / "supernet.pt", device=device)
    elif evaluate_fn is evaluate:
        evaluate_fn = partial(evaluate, device=device)
    pool.check_paths(readable, writable)
    return _Trial(evaluate_fn, spec, cache, seed)


class _Trial:
    """One evaluation as a picklable call: `score(genotype, trial_seed)`; every candidate of a run
    sees the run seed's batches (`data_seed`), so rewards differ by architecture, not by order."""

    def __init__(self, evaluate_fn, spec, cache: str, run_seed: int):
        self.evaluate_fn, self.spec, self.cache, self.run_seed = evaluate_fn, spec, cache, run_seed

    def __call__(self, genotype, trial_seed: int, data_seed: int | None = None):
        data_seed = self.run_seed if data_seed is None else data_seed
        return self.evaluate_fn(genotype, self.spec, self.cache, trial_seed, data_seed)


def _search(store, spec, method, proxy_path, cache, trials, run_dir, seed, lam, score, pool, on_progress):
    """The protocol of the module docstring, with the trials run by `pool` (`slots` at a time)."""
    options = strategy_options(method, spec, cache, trials, lam)
    store.set_meta(method=method, cache=str(cache), seed=seed, trials=trials, space=spec.space,
                   proxy=str(proxy_path), **({"lambda": options["lambda"]} if "lambda" in options else {}))
    space = space_for(spec)
    strategy = STRATEGIES[method](space, seed=seed, **options)
    blob = store.load_state()
    if blob is not None:
        strategy.load_state_dict(_unpack(blob))
    for t in store.finished_untold():  # committed, but the kill came before the strategy saw it
        strategy.tell(space.genotype_class.from_json(t.genotype), t.reward)
        store.mark_told([t.id], _pack(strategy.state_dict()))

    started, evaluated, rescored = time.perf_counter(), 0, 0
    run = lambda key, g, s, d=None: pool.submit(key, score, g, s, d)  # noqa: E731
    store.add_control(control_genotype(spec, cache, proxy_path).to_json())
    rescored += _rescore(store, [0], spec.rescore_seeds, seed, run, pool, on_progress)
    in_flight: set[int] = set()
    while True:
        while pool.busy() < pool.slots:  # fill the free slots: re-queued trials first, then new asks
            queue = [t for t in store.pending() if t.id not in in_flight]
            if not queue:
                room = min(trials - store.count(), pool.slots - pool.busy())
                asked = strategy.ask(room) if room > 0 else []
                if not asked:  # the budget is spent, the strategy waits for results, or it stops
                    break
                first = store.count() + 1
                store.add_pending([g.to_json() for g in asked], [seed * 100_003 + first + i for i in range(len(asked))],
                                  _pack(strategy.state_dict()))
                continue
            trial = queue[0]
            in_flight.add(trial.id)
            run(trial.id, space.genotype_class.from_json(trial.genotype), trial.seed)
        if not pool.busy():
            break
        trial_id, result = pool.next_done()
        in_flight.discard(trial_id)
        genotype = space.genotype_class.from_json(store.trials(f"id = {int(trial_id)}")[0].genotype)
        store.finish(trial_id, result.status, result.reward, result.to_dict())
        strategy.tell(genotype, result.reward if result.status == "done" else None)
        store.mark_told([trial_id], _pack(strategy.state_dict()))
        _drop_discarded_weights(strategy, run_dir)
        evaluated += 1
        if on_progress:
            best = store.top(1)
            on_progress({"step": store.count() - len(store.pending()), "steps": trials,
                         "reward": result.reward if result.reward is not None else result.reason,
                         "best": best[0].reward if best else float("nan")})
    rescored += _rescore(store, [t.id for t in store.top(spec.rescore_top)], spec.rescore_seeds, seed, run, pool,
                         on_progress)
    _drop_discarded_weights(strategy, run_dir)  # re-scoring a discarded candidate wrote its weights again
    summary = summarize(store, top=5)
    summary["seconds"] = time.perf_counter() - started
    summary["evaluated_now"], summary["rescored_now"] = evaluated, rescored  # trials; extra seeds
    if summary["top"]:
        (run_dir / "best.json").write_text(json.dumps(json.loads(summary["top"][0]["genotype"]), indent=2))
    return summary


def _drop_discarded_weights(strategy, run_dir: Path) -> None:
    """SP-NAS candidates leave their weights for their children; a strategy that knows which can
    never be a parent (`discarded`) gets those files deleted, so a long search does not fill the disk."""
    if hasattr(strategy, "discarded"):
        for tag in strategy.discarded():
            (Path(run_dir) / "weights" / f"{tag}.pt").unlink(missing_ok=True)


def strategy_options(method: str, spec: ProxySpec, cache, trials: int, lam=None) -> dict:
    """What the method's strategy is built with: the controller's options, or for auto-fpn the
    supernet's (`darts:`, λ resolved to a number) with the cache it trains on and its epochs."""
    if method == "random":
        return {}
    if method == "sp-nas":
        from .backbone_proxy import baseline_of, start_genotype

        return {**spec.morphism, "trials": trials, "start": start_genotype(baseline_of(cache)).to_json()}
    if method == "detnas":
        return dict(spec.evolution)
    if method == "auto-fpn":
        darts = dict(spec.darts)
        default = validate(DartsOptions, darts, "proxy spec field 'darts'").lambda_
        darts["lambda"] = resolve_lambda(lam if lam is not None else default)
        return {**darts, "cache": str(cache), "epochs": trials}
    if lam is not None:
        raise SpecError(f"--lambda: only auto-fpn has a resource weight, not --method {method}")
    return dict(spec.controller)


def control_genotype(spec: ProxySpec, cache, source):
    """The control arm: the spec's `control`, else the family's hand design (FPN + FCOS head with
    the tower depth of the baseline the cache was built from; FPN + RetinaNet head for nas-fpn)."""
    from .spaces import fpn_fcos, fpn_retinanet

    if spec.control:
        return load_genotype(spec.control, f"{source}: field 'control'")
    if spec.space == "detnas":  # the hand design of the family: ShuffleNetV2 (every block 3x3) of the layout
        from .proxy import space_for

        space = space_for(spec)
        return space.decode([0] * len(space.decisions()))
    if spec.space == "sp-nas":  # the network the search grows from, trained as briefly as a candidate
        from .backbone_proxy import baseline_of, start_genotype

        return start_genotype(baseline_of(cache))
    if spec.space == "nas-fpn":
        return fpn_retinanet.Genotype()
    convs = describe(cache).get("sources", {}).get("model_args", {}).get("num_convs", 4)
    return fpn_fcos.Genotype(num_convs=convs)


def rescore_seed(run_seed: int, trial_id: int, k: int) -> int:
    """The k-th re-scoring seed of a trial: fresh (never a search trial's seed) and reproducible."""
    return 1_000_000 * (k + 1) + 1000 * run_seed + trial_id


def rescore_data_seed(run_seed: int, k: int) -> int:
    """The batch order of the k-th re-scoring: fresh (the search's order selected the winners, so
    it must not stay in their re-scored mean or in the noise), and the same for every genotype at
    that k, so re-scored means stay paired with the control's."""
    return 7_000_003 * (k + 1) + run_seed


def _rescore(store: RunStore, trial_ids: list[int], seeds: int, run_seed: int, run, pool, on_progress) -> int:
    """Scores the trials' genotypes with `seeds` fresh seeds each (those not already stored), all
    submitted at once to `pool`; the control's row (trial 0) then holds its mean. Returns how many
    were evaluated now."""
    todo = []
    for trial_id in trial_ids:
        trial = store.trials(f"id = {int(trial_id)}")[0]
        genotype = load_genotype(trial.genotype, f"trial {trial_id}")
        done = store.scores(trial_id).get(trial_id, {})
        todo += [(trial_id, genotype, rescore_seed(run_seed, trial_id, k), rescore_data_seed(run_seed, k))
                 for k in range(seeds) if rescore_seed(run_seed, trial_id, k) not in done]
    waiting = deque(todo)
    for evaluated in range(1, len(todo) + 1):
        while waiting and pool.busy() < pool.slots:
            trial_id, genotype, s, order = waiting.popleft()
            run((trial_id, s), genotype, s, order)
        (trial_id, s), result = pool.next_done()
        store.add_score(trial_id, s, result.status, result.reward, result.to_dict())
        if on_progress:
            on_progress({"step": evaluated, "steps": len(todo),
                         "phase": "control" if trial_id == 0 else f"re-score trial {trial_id}",
                         "reward": result.reward if result.reward is not None else result.reason})
    if 0 in trial_ids and store.control().status == "pending":
        stats = seed_stats(list(store.scores(0).get(0, {}).values()))
        cost = {k: v for k, v in store.score_metrics(0).items() if k in ("params", "flops")}
        store.finish(0, "done" if stats["seeds"] else "failed", stats["mean"], {"seeds": stats["seeds"], **cost})
    return len(todo)


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
    text = (f"on the proxy, trial {best['trial']} beats the control by {diff:.4f} ({where})"
            if beats else f"on the proxy, no candidate beats the hand design beyond noise (best trial "
                          f"{best['trial']}: {diff:+.4f} vs the control, {where})")
    return {"beats_control": beats, "difference": diff, "noise": noise, "threshold": t * se, "t": t,
            "best_trial": best["trial"], "text": text}


def ranked(store: RunStore) -> list[dict]:
    """Search trials best first: the re-scored ones by their mean over fresh seeds, then the
    others by their single search reward. Each: trial, reward, mean, std, seeds, params, FLOPs,
    seconds, losses, genotype."""
    scores = store.scores()
    rows = []
    for t in store.trials("status = 'done' AND id > 0", "reward DESC, id"):
        stats = seed_stats(list(scores[t.id].values())) if t.id in scores else \
            {"mean": None, "std": None, "seeds": 0, "failed_seeds": 0}
        rows.append({"trial": t.id, "reward": t.reward, **stats, "params": t.metrics.get("params"),
                     "flops": t.metrics.get("flops"), "seconds": t.metrics.get("seconds"),
                     "losses": t.metrics.get("losses"), "genotype": t.genotype})
    rescored = sorted((r for r in rows if r["mean"] is not None), key=lambda r: (-r["mean"], r["trial"]))
    return rescored + [r for r in rows if r["mean"] is None]


def summarize(store: RunStore, top: int = 5) -> dict:
    """Counts, the control, the best trials (re-scored first, by mean), the seed noise, the
    verdict and the reward curve."""
    rows = store.trials("id > 0")
    best = ranked(store)
    control, scores = store.control(), store.scores()
    control_row = None
    if control is not None:
        control_row = {"trial": 0, "status": control.status, "genotype": control.genotype,
                       "params": control.metrics.get("params"), "flops": control.metrics.get("flops"),
                       **seed_stats(list(scores.get(0, {}).values()))}
    stats = ([control_row] if control_row else []) + [r for r in best if r["mean"] is not None]
    noise = seed_noise(stats)
    rescored = best[0] if best and best[0]["mean"] is not None else None
    return {"run": str(store.run_dir), **store.meta(),
            "finished": sum(t.status != "pending" for t in rows),
            "failed": sum(t.status == "failed" for t in rows),
            "control": control_row, "noise": noise, "verdict": verdict(rescored, control_row, noise, noise_dof(stats)),
            "top": best[:top],
            "curve": [[t.id, t.reward] for t in rows if t.status == "done"]}
