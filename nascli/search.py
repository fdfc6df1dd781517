"""run_search(): the evaluation protocol around the ask/tell loop, with crash-safe resume.

1. The control (the family's hand-designed decoder) is scored first with `rescore_seeds` seeds,
   outside the trial budget: its mean is the line to beat, its spread the proxy's seed noise.
2. The ask/tell loop (until `trials` are finished, or `minutes` of the search's wall clock, summed
   over resumes, are spent: then nothing new is asked): the strategy asks -> the trial is stored as pending together with the
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

import json
import math
import shutil
import time
from collections import deque
from pathlib import Path

from .cache import describe
from .config import ProxySpec, load_spec, resolve_proxy
from .errors import CheckpointError, NascliError, SpecError
from .executors import check_executor, make_executor
from .methods import IMAGES, METHODS, check_sections, for_space, lookup
from .protocol import rescore_data_seed, rescore_seed, seed_stats, summarize
from .spaces import load_genotype, space_for
from .store import RunStore, pack_state, unpack_state
from .strategies.base import StrategyExhausted


def _check_cache(entry, spec: ProxySpec, cache, proxy_path) -> None:
    """The cache holds what the method's trials train on: image crops, or the spec's feature levels."""
    levels = describe(cache)["levels"]
    if entry.cache == IMAGES:
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


def run_search(method: str, proxy, cache, trials: int, run_dir, *, seed: int = 0, resume: bool = False,
               on_progress=None, evaluate_fn=None, lam=None, device="cpu", executor="local",
               ray_address="auto", workers=None, supernet=None, minutes: float | None = None,
               latency_target: str | None = None, force: bool = False) -> dict:
    """Runs (or resumes) a search until `trials` trials are finished; returns the summary.
    `method`: a name of the registry (nascli/methods) or random; `evaluate_fn` replaces the
    method's trial (tests). `lam` (auto-fpn): the resource weight λ, a number or small|middle|big,
    over the spec's. `device` (auto|cpu|cuda): where trials train (the Auto-FPN supernet stays on
    the CPU). `executor` (local|ray, see executors.py): where trials run; `ray_address` and
    `workers` for ray. `supernet` (detnas, random over its space): another run folder whose
    trained supernet this run scores paths of. `minutes`: a wall-clock budget (the control and
    the re-scoring still run after it). `latency_target` ('1.0x' of the control, or '80ms'): a
    candidate whose predicted latency once promoted (latency_table.py) is over it is recorded as
    a failed trial without training, outside the budget, and the strategy is told it failed.
    A cache of a baseline that learned nothing (train.learned_nothing) is refused unless `force`
    (or the cache was built with --force). A run resumes on any device and any executor."""
    from .latency import parse_latency_target

    lookup(method)  # an unknown name is an error before anything else
    parse_latency_target(latency_target)
    check_executor(executor, workers)
    if executor == "local":
        trial_device(device, executor, None)  # a missing GPU is an error before anything is written
    run_dir = Path(run_dir)
    if not resume:  # a bad spec or cache is an error before the run folder exists
        proxy_path = resolve_proxy(proxy)
        spec, entry = _checked_spec(method, proxy_path, cache)
        if not force:
            _refuse_untrained_baseline(cache)
    store = RunStore(run_dir, create=not resume)
    try:
        if resume:
            meta = store.meta()
            if not meta:
                raise NascliError(f"{run_dir}: nothing to resume (empty run database)")
            method, cache, seed = meta["method"], meta["cache"], meta["seed"]
            supernet = Path(meta["supernet"]).parent if meta.get("supernet") else None
            proxy_path = run_dir / "spec.yaml"
            spec, entry = _checked_spec(method, proxy_path, cache)
            if (lam is not None and entry.resource_weight and meta.get("lambda") is not None
                    and entry.resource_weight(lam) != meta["lambda"]):
                raise SpecError(f"--lambda {lam}: {run_dir} was searched with lambda {meta['lambda']}; "
                                f"resume it without --lambda, or start a new --run")
            lam = meta.get("lambda")
            if latency_target is not None and latency_target != meta.get("latency_target"):
                raise SpecError(f"--latency-target {latency_target}: {run_dir} was searched with "
                                f"{meta.get('latency_target') or 'no target'}; resume it without --latency-target")
            latency_target = meta.get("latency_target")
            minutes = minutes if minutes is not None else meta.get("minutes")
            trials = meta["trials"] if not trials or entry.budget_fixed else max(trials, meta["trials"])
        elif store.count():
            raise NascliError(f"{run_dir}: run already has {store.count()} trials; pass --resume or a new --run")
        if lam is not None and not entry.resource_weight:
            weighted = [m.name for m in METHODS.values() if m.resource_weight]
            raise SpecError(f"--lambda: --method {method} has no resource weight (one has: {', '.join(weighted)})")
        if latency_target and entry.resource_weight and entry.latency_term is None:
            raise SpecError(f"--latency-target: --method {method} has a resource term but no latency term yet")
        device = trial_device(device, executor, spec)
        pool = make_executor(executor, spec, ray_address, workers)
        try:
            if not resume:
                shutil.copyfile(proxy_path, run_dir / "spec.yaml")
            clock = SearchClock(store)  # a supernet trained before the trials (DetNAS) counts too
            score = _trial(entry, spec, cache, run_dir, seed, device, evaluate_fn, on_progress, pool, supernet)
            return _search(store, spec, entry, proxy_path, cache, trials, run_dir, seed, lam, score, pool,
                           on_progress, minutes, clock, latency_target)
        finally:
            pool.close()
    finally:
        store.close()


def _checked_spec(method: str, proxy_path, cache):
    """The proxy spec and the registry entry of the method over its space, checked against the cache."""
    spec = load_spec(ProxySpec, proxy_path)
    try:
        entry = lookup(method, spec.space)
    except SpecError as e:
        raise SpecError(f"{proxy_path}: {e}") from None
    check_sections(spec, proxy_path)
    _check_cache(entry, spec, cache, proxy_path)
    # resolved once: every trial reads the reward kind off the spec, not the registry
    return spec.model_copy(update={"reward": spec.reward or entry.reward}), entry


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


def _trial(entry, spec, cache, run_dir, seed, device, evaluate_fn, on_progress, pool, supernet):
    """What a trial runs: the method's trial (or `evaluate_fn`) as `score(genotype, trial_seed,
    data_seed)`, bound to its device and the files it reads, all absolute so a worker in another
    folder finds them. The executor checks first that its workers can use those files."""
    from .runtime import resolve_device

    cache, run_dir = str(Path(cache).resolve()), Path(run_dir).resolve()
    # what runs before the trials (a supernet) runs here: on Ray its own GPU if it has one, unless --device cpu
    driver = device if pool.name == "local" or device == "cpu" else str(resolve_device("auto"))
    setup = entry.trial(spec, cache, run_dir, seed, device, driver_device=driver, on_progress=on_progress,
                        supernet=supernet)
    pool.check_paths({"cache": cache, **setup.readable}, setup.writable)
    return _Trial(evaluate_fn or setup.evaluate, spec, cache, seed, setup.meta)


class _Trial:
    """One evaluation as a picklable call: `score(genotype, trial_seed)`; every candidate of a run
    sees the run seed's batches (`data_seed`), so rewards differ by architecture, not by order."""

    def __init__(self, evaluate_fn, spec, cache: str, run_seed: int, meta: dict):
        self.evaluate_fn, self.spec, self.cache, self.run_seed, self.meta = evaluate_fn, spec, cache, run_seed, meta

    def __call__(self, genotype, trial_seed: int, data_seed: int | None = None):
        data_seed = self.run_seed if data_seed is None else data_seed
        return self.evaluate_fn(genotype, self.spec, self.cache, trial_seed, data_seed)


def _search(store, spec, entry, proxy_path, cache, trials, run_dir, seed, lam, score, pool, on_progress,
            minutes, clock, latency_target=None):
    """The protocol of the module docstring, with the trials run by `pool` (`slots` at a time)."""
    options = entry.options(spec, cache, trials, lam)
    store.set_meta(method=entry.name, cache=str(cache), seed=seed, trials=trials, space=spec.space,
                   proxy=str(proxy_path), **({"lambda": options["lambda"]} if "lambda" in options else {}),
                   **({"minutes": minutes} if minutes is not None else {}), **score.meta)
    space = space_for(spec)
    control = control_genotype(spec, cache, proxy_path, entry)
    gate = latency_budget(latency_target, cache, control, space, seed) if latency_target else None
    if gate is not None:
        store.set_meta(latency_target=latency_target, latency_limit_ms=gate.limit_ms,
                       latency_control_ms=gate.control_ms, latency_table=str(gate.candidates.table.path))
    if gate is not None and entry.latency_term is not None:
        options.update(entry.latency_term(gate, space, seed))
        store.set_meta(latency_term=f"expected latency once promoted / {gate.limit_ms:.1f} ms, weighted by lambda")
    strategy = entry.strategy(space, seed=seed, **options)
    blob = store.load_state()
    if blob is not None:
        strategy.load_state_dict(unpack_state(blob))
    for t in store.finished_untold():  # committed, but the kill came before the strategy saw it
        strategy.tell(space.genotype_class.from_json(t.genotype), t.reward)
        store.mark_told([t.id], pack_state(strategy.state_dict()))

    # a strategy whose asks train (Auto-FPN: one supernet epoch each) spends its budget on a skipped ask too
    spent = entry.budget_fixed
    started, evaluated, rescored = time.perf_counter(), 0, 0
    run = lambda key, g, s, d=None: pool.submit(key, score, g, s, d)  # noqa: E731
    store.add_control(control.to_json())
    rescored += _rescore(store, [0], spec.rescore_seeds, seed, run, pool, on_progress)
    in_flight: set[int] = set()
    while True:
        while pool.busy() < pool.slots:  # fill the free slots: re-queued trials first, then new asks
            queue = [t for t in store.pending() if t.id not in in_flight]
            if not queue:
                over = minutes is not None and clock.seconds() >= 60 * minutes
                room = 0 if over else min(trials - store.count(spent), pool.slots - pool.busy())
                try:
                    asked = strategy.ask(room) if room > 0 else []
                except StrategyExhausted as e:  # stop asking; the control, the finished trials and the
                    store.set_meta(stopped=str(e))  # re-scoring stand
                    asked = []
                if gate is not None and asked:  # over the target: recorded and told, never trained
                    asked = _within_target(store, strategy, gate, asked, seed)
                    if not asked and not gate.exhausted:
                        continue
                if not asked:  # the budget is spent, the strategy waits for results, or it stops
                    if room > 0 and not pool.busy():  # it stops: kept as it is now (e.g. Auto-FPN's guard's
                        store.save_state(pack_state(strategy.state_dict()))  # reason); waiting: saved when told
                    break
                first = store.count() + 1
                store.add_pending([g.to_json() for g in asked], [seed * 100_003 + first + i for i in range(len(asked))],
                                  pack_state(strategy.state_dict()))
                continue
            trial = queue[0]
            in_flight.add(trial.id)
            run(trial.id, space.genotype_class.from_json(trial.genotype), trial.seed)
        if not pool.busy():
            break
        trial_id, result = pool.next_done()
        in_flight.discard(trial_id)
        genotype = space.genotype_class.from_json(store.trial(trial_id).genotype)
        predicted = {"predicted_latency_ms": gate.predict(genotype)} if gate is not None else {}
        store.finish(trial_id, result.status, result.reward, {**result.to_dict(), **predicted})
        clock.save()
        strategy.tell(genotype, result.reward if result.status == "done" else None)
        store.mark_told([trial_id], pack_state(strategy.state_dict()))
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
    clock.save()
    summary = summarize(store, top=5)
    summary["seconds"] = time.perf_counter() - started
    summary["evaluated_now"], summary["rescored_now"] = evaluated, rescored  # trials; extra seeds
    if summary["top"]:
        (run_dir / "best.json").write_text(json.dumps(json.loads(summary["top"][0]["genotype"]), indent=2))
    return summary


#: Candidates over the latency target asked in a row after which the search stops asking (the
#: strategy cannot find the target's region of the space; each costs one forward pass).
MAX_SKIPS_IN_A_ROW = 200


def skips_allowed(admitted: int, asked: int) -> int:
    """How many candidates in a row over the target end the asking: MAX_SKIPS_IN_A_ROW while none has
    been within it; once some have, also ten times the asks each cost so far. A strategy that finds
    the target's region rarely is not stopped by an ordinary gap: uniform sampling of BCCD's
    nas-fcos-cpu space finds 15 in 1,000 within 1.0x (benchmarks/latency-space-bccd-nas-fcos-cpu.json),
    where 200 misses in a row come once in 20 gaps and would end 63 % of 20-trial searches early;
    ten times its 67 asks a find, once in 25,000 gaps."""
    if admitted == 0:
        return MAX_SKIPS_IN_A_ROW
    return max(MAX_SKIPS_IN_A_ROW, math.ceil(10 * asked / admitted))


def latency_budget(target: str, cache, control, space, seed: int):
    """The search's latency limit, predicted for the detector `retrain` will build from each
    candidate: the baseline the cache was built from gives backbone, widths and input size; the
    machine's latency table lives beside the cache (latency/<machine>.json)."""
    from .latency_table import CandidateLatency, LatencyBudget

    return LatencyBudget(target, CandidateLatency.for_checkpoint(baseline_of(cache), Path(cache).parent), control,
                         space, seed)


def _refuse_untrained_baseline(cache) -> None:
    """One line when the cache's baseline diverged, stopped early or scored ~0 AP: features of a
    backbone that learned nothing are not worth searching. Caches of torchvision backbones, and
    caches built with --force (the user already chose), pass."""
    from .runtime import load_checkpoint
    from .train import learned_nothing

    if cache is None or describe(cache).get("sources", {}).get("forced"):
        return
    try:
        checkpoint = baseline_of(cache)
    except SpecError:
        return
    why = learned_nothing(load_checkpoint(checkpoint))
    if why:
        raise CheckpointError(f"{checkpoint}: {why}; {cache} holds its features (--force searches them anyway)")


def baseline_of(cache) -> Path:
    """The baseline checkpoint a cache was built from: what a promoted candidate is built on. A
    relative path recorded where cache-features ran is also looked for from each folder above the
    cache (the project folder of `cache-features --out pipelines/x/cache` is two levels up)."""
    checkpoint = describe(cache).get("sources", {}).get("checkpoint")
    if checkpoint:
        tried = [Path(checkpoint)] + ([] if Path(checkpoint).is_absolute() else
                                      [folder / checkpoint for folder in Path(cache).resolve().parents])
        found = next((p for p in tried if p.is_file()), None)
        if found is not None:
            return found
    raise SpecError(f"{cache}: field 'sources.checkpoint' names no baseline checkpoint found here or above the "
                    f"cache ({checkpoint or 'none'}); a promoted candidate's latency is predicted on it")


def skip_reward(worst: float | None, over: float) -> float | None:
    """What a learning strategy is told of a candidate predicted `over` times the latency limit
    and skipped: the worst reward seen so far, made worse in proportion (MnasNet's hard-constraint
    exponent, -1: twice the limit scores half an AP reward, twice a loss). A flat "worst" for
    every skip gives the controller no direction: on BCCD its 252 skips ended in a policy that drew
    only invalid choices (benchmarks/bench_skip_feedback.py compares the two)."""
    if worst is None:
        return None
    return worst / over if worst >= 0 else worst * over


def _within_target(store, strategy, gate, asked: list, seed: int) -> list:
    """The asked candidates the latency target admits; each other one becomes a failed trial
    ('skipped': 'latency', outside the budget) that the strategy is told about at once."""
    kept = []
    for g in asked:
        if gate.admits(g):
            kept.append(g)
            gate.skipped_in_a_row = 0
            continue
        [trial_id] = store.add_pending([g.to_json()], [seed], pack_state(strategy.state_dict()))
        told = skip_reward(store.worst_reward(), gate.predict(g) / gate.limit_ms) if strategy.graded_skips else None
        store.finish(trial_id, "failed", None, {"reason": gate.reason(g), "skipped": "latency",
                                                "predicted_latency_ms": gate.predict(g),
                                                **({"told_reward": told} if told is not None else {})})
        strategy.tell(g, told)
        store.mark_told([trial_id], pack_state(strategy.state_dict()))
        gate.skipped_in_a_row += 1
    allowed = skips_allowed(store.count(), store.count(skipped=True))
    if gate.skipped_in_a_row >= allowed:
        gate.exhausted = True
        store.set_meta(stopped=f"{allowed} candidates in a row were over the latency target "
                               f"{gate.target} ({gate.limit_ms:.1f} ms): the strategy finds nothing within it")
    return kept


class SearchClock:
    """The search's wall clock summed over its resumes (meta 'elapsed'): what `minutes` budgets.
    Saved with every finished trial, so a kill loses at most the time since the last one."""

    def __init__(self, store: RunStore):
        self.store, self.before, self.started = store, store.meta().get("elapsed", 0.0), time.perf_counter()

    def seconds(self) -> float:
        return self.before + time.perf_counter() - self.started

    def save(self) -> None:
        self.store.set_meta(elapsed=self.seconds())


def _drop_discarded_weights(strategy, run_dir: Path) -> None:
    """SP-NAS candidates leave their weights for their children; the files of those the strategy
    says can never be a parent (`discarded`) are deleted, so a long search does not fill the disk."""
    for tag in strategy.discarded():
        (Path(run_dir) / "weights" / f"{tag}.pt").unlink(missing_ok=True)


def control_genotype(spec: ProxySpec, cache, source, entry=None):
    """The control arm: the spec's `control`, else the hand design of the spec's method (`entry`,
    the search's resolved registry entry, or the one of the spec's space)."""
    if spec.control:
        return load_genotype(spec.control, f"{source}: field 'control'")
    return (entry or for_space(spec.space)).control(spec, cache)


def _rescore(store: RunStore, trial_ids: list[int], seeds: int, run_seed: int, run, pool, on_progress) -> int:
    """Scores the trials' genotypes with `seeds` fresh seeds each (those not already stored), all
    submitted at once to `pool`; the control's row (trial 0) then holds its mean. Returns how many
    were evaluated now."""
    todo = []
    for trial_id in trial_ids:
        trial = store.trial(trial_id)
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
