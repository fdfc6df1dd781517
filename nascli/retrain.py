"""Promotion: a search's winners and the hand-designed control trained in full from images, fairly.

Each promoted architecture becomes a full detector: the baseline's backbone (its trained weights,
or a torchvision weights file), the searched decoder at the retraining width (for an SP-NAS run:
the searched backbone, its weights the baseline's carried through its morphisms, under the
baseline's FPN + FCOS head; for a DetNAS run: the path's backbone with the trained supernet's
weights, the ShuffleNetV2 control likewise). The control (the run's hand design) is always
promoted the same way, as the reference row.

The recipe is the references', never the control's own tuning: FCOS's rate per image for SGD
(0.01 per 16 images; NAS-FCOS's released configs too), linear warm-up from 1/3 of the peak over
FCOS's share of the schedule (500 of 90k iterations) but at least the first epoch, gradient
clipping at 35. Every architecture, the control included:
1. *grid* - trains the short schedule at every point of the grid (default: SGD at the reference
   rate and AdamW at 8e-4, 1.6e-3 and 3.2e-3 for 8 images a batch, `default_grid`; `--lr-grid`
   takes rates and points such as `adamw:4e-4`) and is evaluated on the search's meta-val; it
   keeps its best point (optimiser and rate). The test split is never looked at to choose.
2. *final* - trains the full schedule at its chosen rate with each of `seeds` seeds (the same
   seeds for every architecture, so the test verdict pairs them) and is evaluated on test.

Everything lands in the run: `RUN/retrain/<arch>/<recipe>/last.pt`, one row per architecture and
recipe in run.db's `retrained` table ('training' -> 'done' | 'failed'), named `<arch>/<recipe>`:
a changed recipe is a new row. Running the same command again resumes: finished rows are
skipped, an interrupted one continues from its last epoch (train.py's resume is exact).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from .config import ProxySpec, TrainConfig, load_spec, validate
from .errors import CacheError, DataError, NascliError, SpecError
from .runtime import load_checkpoint, save_checkpoint
from .stats import MIN_GAIN
from .cache.format import sha256_file, tensors_digest
from .ledger import RowLedger, fingerprint
from .store import RunStore
from .train import TrainingDiverged, train

BASELINE = "baseline"

#: FCOS's reference recipe (Tian et al. 2019; the released NAS-FCOS configs use the same): SGD at
#: 0.01 per 16 images, linear warm-up over 500 of 90k iterations from 1/3 of the peak, clipping 35.
REFERENCE_LR_PER_IMAGE = 0.01 / 16
WARMUP_FRACTION = 500 / 90_000
WARMUP_START = 1 / 3
#: AdamW's smallest default rate at 8 images a batch, scaled by the square root of the batch (the
#: square-root rule for adaptive optimisers, Malladi et al. 2022). Measured (benchmarks/bccd-promotion-adamw.json,
#: benchmarks/README.md): on BCCD every promoted architecture and the control chose AdamW on
#: meta-val over every SGD rate (the control by 2.6 AP, searched decoders by 12-17 AP: their
#: separable, dilated GroupNorm ops are badly conditioned for SGD) - the control 8e-4, the searched
#: decoders 1.6e-3 and 3.2e-3, none 2e-4 or 4e-4 - and on the synthetic demo both arms chose AdamW
#: (8e-4 and 1.6e-3).
ADAMW_LR_AT_8 = 8e-4
#: The default grid: FCOS's own recipe (SGD at the reference rate) and AdamW at one, two and four
#: times the rate the hand design chose.
ADAMW_FACTORS = (1, 2, 4)


def reference_lr(batch_size: int) -> float:
    return REFERENCE_LR_PER_IMAGE * batch_size


#: A final row's test detections (COCO results json), in the row's folder.
DETECTIONS = "detections.json"


def default_grid(batch_size: int) -> tuple[tuple[str, float], ...]:
    adamw = ADAMW_LR_AT_8 * math.sqrt(batch_size / 8)
    return (("sgd", round(reference_lr(batch_size), 8)),) + tuple(
        ("adamw", float(f"{adamw * f:.3g}")) for f in ADAMW_FACTORS)


OPTIMIZERS = ("sgd", "adamw")


def grid_point(entry, optimizer: str = "sgd") -> tuple[str, float]:
    """(optimizer, peak rate) of one grid entry: a rate (with `optimizer`), "adamw:4e-4", or a pair."""
    if isinstance(entry, tuple):
        name, rate = entry
    elif isinstance(entry, str) and ":" in entry:
        name, rate = entry.split(":", 1)
    else:
        name, rate = optimizer, entry
    try:
        rate = float(rate)
    except ValueError:
        raise SpecError(f"--lr-grid: {entry!r} is not a rate or OPTIMIZER:RATE") from None
    if name not in OPTIMIZERS or not rate > 0:
        raise SpecError(f"--lr-grid: {entry!r} needs a positive rate and an optimiser of {', '.join(OPTIMIZERS)}")
    return name, rate


def point_label(optimizer: str, lr: float) -> str:
    """How a grid point is shown and keyed: the rate for SGD (as before AdamW was offered), else
    'adamw:RATE'."""
    return f"{lr:g}" if optimizer == "sgd" else f"{optimizer}:{lr:g}"


@dataclass(frozen=True)
class Recipe:
    """How one promotion row trains: stage ('grid' on meta-val or 'final' on test), peak lr,
    epochs, seed and optimiser. Its folder name is the row's key, so a changed recipe is a new row."""

    stage: str
    lr: float
    epochs: int
    seed: int
    optimizer: str = "sgd"

    @property
    def folder(self) -> str:
        optimizer = "" if self.optimizer == "sgd" else f"{self.optimizer}-"  # SGD rows keep their old names
        return f"{'grid-' if self.stage == 'grid' else ''}{optimizer}lr{self.lr:g}-e{self.epochs}-s{self.seed}"

    def fields(self) -> dict:
        return {"stage": self.stage, "lr": self.lr, "optimizer": self.optimizer, "epochs": self.epochs,
                "seed": self.seed, "split": "meta-val" if self.stage == "grid" else "test"}


@dataclass(frozen=True)
class Candidate:
    """One architecture to retrain: its folder name, genotype, the trial it won (if any) and the
    proxy reward (None until scored)."""

    name: str
    genotype: object
    trial: int | None = None
    reward: float | None = None


def candidates(store: RunStore, top: int, archs, baseline_convs: int) -> list[Candidate]:
    """The reference row, then the run's `top` best trials (re-scored ones by their mean over
    seeds first), then each `--arch` genotype. The reference is the run's control (the family's
    hand design: FPN + RetinaNet head for a NAS-FPN run) with its mean reward; a run without one
    (older, or made by --arch alone) gets the FPN + FCOS head as the baseline had it."""
    from .protocol import ranked
    from .spaces import fpn_fcos, load_genotype

    control = store.control()
    if control is not None:
        out = [Candidate(BASELINE, load_genotype(control.genotype, "control"), reward=control.reward)]
    else:
        out = [Candidate(BASELINE, fpn_fcos.Genotype(num_convs=baseline_convs))]
    method = _method(store)
    promoted = method.promoted(store) if method else (lambda genotype: genotype)
    # a trial the search did not re-score is re-scored when promoted, where the proxy can score it
    rescorable = method is None or method.scores_any_genotype
    for t in ranked(store)[:top]:
        reward = t["mean"] if t["mean"] is not None else None if rescorable else t["reward"]
        genotype = promoted(load_genotype(t["genotype"], f"trial {t['trial']}"))
        out.append(Candidate(f"trial-{t['trial']}", genotype, t["trial"], reward))
    for arch in archs:
        name = str(arch).replace("zoo:", "zoo-") if str(arch).startswith("zoo:") else Path(arch).stem
        out.append(Candidate(name, load_genotype(arch)))
    return out


def _method(store: RunStore):
    """The registry entry of the run's search; None for a run made by `--arch` alone."""
    from .methods import lookup

    meta = store.meta()
    return lookup(meta["method"], meta.get("space")) if meta.get("method") else None


def _inputs(meta: dict, run_dir: Path, checkpoint, val, val_image_dir, select_val=None, select_image_dir=None):
    """Baseline checkpoint (given, else the one the run's cache was built from), the test split to
    evaluate on, which must share no image with the meta-val the search selected on, and that
    meta-val (given, else the cache's), on which the learning-rate grid chooses."""
    from .data.coco import CocoDetection
    from .data.split import shared_images
    from .cache import describe

    sources = {}
    cache = meta.get("cache")
    if cache and Path(cache).is_file():
        try:
            sources = describe(cache).get("sources", {})
        except CacheError:  # an older cache format: the options must say what it would have
            sources = {}
    checkpoint = checkpoint or sources.get("checkpoint")
    if checkpoint is None:
        raise SpecError(f"{run_dir}: give --checkpoint (the baseline whose backbone and schedule "
                        f"retraining uses); " + ("the run's cache does not record one" if meta else
                                                   "there is no search here to take it from"))
    if val is None:
        raise SpecError(f"{run_dir}: give --val TEST.json, a test split the search never saw "
                        f"(not the meta-val that selected the winners)")
    if select_val is None and sources.get("val"):
        select_val, select_image_dir = sources["val"], select_image_dir or sources.get("val_image_dir")
    if select_val and Path(select_val).is_file():
        shared = shared_images(CocoDetection(select_val, select_image_dir).image_files(),
                               CocoDetection(val, val_image_dir))
        if shared:
            raise DataError(f"{val}: field 'images' shares {len(shared)} images with the search's meta-val "
                            f"{select_val} (e.g. {Path(shared[0]).name}); evaluate on a test split the search "
                            f"never saw")
    return {"checkpoint": Path(checkpoint), "val": Path(val), "val_image_dir": val_image_dir,
            "select_val": str(select_val) if select_val else None, "select_image_dir": select_image_dir}


def _check_unseen_by_baseline(base: dict, checkpoint, val, val_image_dir) -> None:
    """The test split shares no image with what the baseline trained on (its checkpoint records
    them): every promoted row starts from that backbone, so a test image it saw flatters them all."""
    from .data.coco import CocoDetection
    from .data.split import shared_images

    trained_on = base.get("train_images")
    if not trained_on:  # a checkpoint from before the record, or a torchvision weights file
        return
    shared = shared_images(trained_on, CocoDetection(val, val_image_dir))
    if shared:
        raise DataError(f"{val}: field 'images' shares {len(shared)} images with the images the baseline "
                        f"{checkpoint} trained on (e.g. {Path(shared[0]).name}); evaluate on a test split "
                        f"neither the baseline nor the search saw")


def _config(base: dict, candidate: Candidate, out: Path, overrides: dict) -> TrainConfig:
    """The baseline's config with the given overrides, this candidate's decoder and folder."""
    data = {**base, **{k: v for k, v in overrides.items() if v is not None},
            "out": str(out), "genotype": json.loads(candidate.genotype.to_json()),
            "watch": False}  # a promotion row is judged by its grid and evaluations, not the baseline's guards
    return validate(TrainConfig, data, "retrain options")


#: Config fields that do not change what is trained: where it lands, runs, or is evaluated, and the
#: start weights' path (a run folder moved elsewhere keeps its rows).
_NOT_RECIPE = ("out", "device", "val", "init_from", "workers", "watch")
#: Recipe fields added after rows were made, with the value those rows trained with: at that value
#: they stay out of the key, so existing rows keep their folders and resume.
_ADDED_LATER = {"frozen_backbone_epochs": 0, "optimizer": "sgd"}


def recipe_key(config: TrainConfig) -> str:
    """A short hash of everything else that defines the training (data, widths, schedule, ...):
    part of the row's folder, so a changed request is a new row, never a refusal."""
    import hashlib

    fields = {k: v for k, v in config.model_dump().items()
              if k not in _NOT_RECIPE and not (k in _ADDED_LATER and v == _ADDED_LATER[k])}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:6]


def _check_resumable(last: Path, config: TrainConfig) -> None:
    """A checkpoint left by an earlier retrain must come from the same request."""
    old = load_checkpoint(last, stand_in_ok=True)["config"]
    new = config.model_dump()
    for k in new:
        if k not in _NOT_RECIPE and old.get(k, _ADDED_LATER.get(k)) != new[k]:
            raise NascliError(f"{last}: field '{k}' was {old.get(k)!r} when this retraining started, now "
                              f"{new[k]!r}; retrain into another run folder or delete {last.parent}")


def _proxy_reward(store: RunStore, genotype, trial: int | None) -> float | None:
    """The run's proxy reward for a promoted architecture without a re-scored mean (an `--arch`
    genotype, a trial outside the search's re-scored top), defined as every other row's: the mean
    over the run's re-scoring seeds and batch orders. A trial's scores are stored with it, marked
    as the promotion's: the search's verdict and ranking never see them (store.scores)."""
    from .protocol import rescore_data_seed, rescore_seed

    meta, method = store.meta(), _method(store)
    spec_path = store.run_dir / "spec.yaml"
    if method is None or not method.scores_any_genotype:  # e.g. SP-NAS: its proxy needs a lineage
        return None
    if not meta.get("cache") or not spec_path.is_file() or not Path(meta["cache"]).is_file():
        return None
    spec, run_seed = load_spec(ProxySpec, spec_path), meta.get("seed", 0)
    stored = store.scores(trial, promotion=True).get(trial, {}) if trial is not None else {}
    supernet = Path(meta["supernet"]).parent if meta.get("supernet") else None
    proxy_evaluate = None
    rewards = []
    for k in range(spec.rescore_seeds):
        seed = rescore_seed(run_seed, -1 if trial is None else trial, k)
        if seed in stored:
            rewards.append(stored[seed])
            continue
        try:
            proxy_evaluate = proxy_evaluate or method.trial(spec, meta["cache"], store.run_dir, run_seed, "cpu",
                                                            supernet=supernet).evaluate
            result = proxy_evaluate(genotype, spec, meta["cache"], seed, rescore_data_seed(run_seed, k))
        except CacheError:  # the run's cache is of an older format: no proxy reward for this row
            return None
        if trial is not None:
            store.add_score(trial, seed, result.status, result.reward, {**result.to_dict(), "promotion": True})
        rewards.append(result.reward if result.status == "done" else None)
    ok = [r for r in rewards if r is not None]
    return sum(ok) / len(ok) if ok else None


def _with_reward(store: RunStore, cand: Candidate) -> Candidate:
    """The candidate with its proxy reward: as given, as an earlier row of it recorded, or scored now."""
    if cand.reward is not None:
        return cand
    known = [r["reward"] for r in store.retrained()
             if r["metrics"].get("arch", r["name"]) == cand.name and r["reward"] is not None]
    return replace(cand, reward=known[0] if known else _proxy_reward(store, cand.genotype, cand.trial))


@dataclass(frozen=True)
class Promotion:
    """One promotion request, the same for every architecture: which architectures (the run's
    `top` best and `archs` genotype files, besides the control), from which baseline and data,
    what of the recipe changes, where rows are judged (`val`: test; `select_val`: the meta-val the
    grid chooses on) and where they are kept (`ledger`: a folder, ledger.py).

    Defaults come from the baseline checkpoint's config (data, schedule, width, batch, seed): only
    what is given here changes. `lr` pins one rate (no grid); `lr_grid` replaces the default grid;
    `grid_epochs` defaults to a third of the schedule; `frozen_backbone_epochs`: each row's first
    epochs train the decoder on the frozen backbone; `optimizer` (sgd | adamw): the optimiser of
    bare rates (default sgd); a grid entry 'adamw:4e-4' names its own; `extend_grid` K: an
    architecture whose best meta-val point is its optimiser's largest rate also tries twice that
    rate, up to K times (each architecture by the same rule, so their grids may end apart).
    `seeds` 'auto': the count the seed noise measured on meta-val asks for (`seeds_from_meta_val`),
    decided before any test evaluation."""

    val: str | Path | None = None
    top: int = 3
    archs: tuple = ()
    checkpoint: str | Path | None = None
    weights: str | Path | None = None
    data: str | Path | None = None
    image_dir: str | Path | None = None
    val_image_dir: str | Path | None = None
    select_val: str | Path | None = None
    select_image_dir: str | Path | None = None
    epochs: int | None = None
    width: int | None = None
    head_width: int | None = None
    seed: int | None = None
    seeds: int | str = 2
    lr: float | None = None
    lr_grid: tuple | None = None
    grid_epochs: int | None = None
    extend_grid: int = 0
    optimizer: str | None = None
    deep_supervision: bool = False
    frozen_backbone_epochs: int | None = None
    device: str = "auto"
    ledger: str | Path | None = None


def retrain(run_dir, promotion: Promotion, *, on_progress=None, train_fn=train, evaluate_fn=None) -> dict:
    """Promotes a run as `promotion` asks: grid on meta-val, then the chosen rate with its seeds on
    test (module docstring). Returns {run, checkpoint, val, select_val, grid, chosen, rows,
    grid_seconds, final_seconds, ledger_not_reused}; `rows` holds every row, grid and final; `grid`
    and `chosen` are keyed by `point_label`. `train_fn` and `evaluate_fn` stand in for training
    and evaluation (tests)."""
    from .evaluate import evaluate
    from .spaces import load_genotype

    p = promotion
    archs, seeds, device = tuple(p.archs), p.seeds, p.device
    run_dir = Path(run_dir)
    new_run = archs and not (run_dir / "run.db").is_file()
    if new_run:  # a new run of given architectures: checked before it exists
        for arch in archs:
            load_genotype(arch)
        first = _inputs({}, run_dir, p.checkpoint, p.val, p.val_image_dir)
        _check_unseen_by_baseline(load_checkpoint(first["checkpoint"]), first["checkpoint"], first["val"],
                                  p.val_image_dir)
    store = RunStore(run_dir, create=bool(archs))
    try:
        where = _inputs(store.meta(), run_dir, p.checkpoint, p.val, p.val_image_dir, p.select_val,
                        p.select_image_dir)
        checkpoint = where["checkpoint"]
        base = load_checkpoint(checkpoint)
        if not new_run:  # a new run's was checked above
            _check_unseen_by_baseline(base, checkpoint, where["val"], p.val_image_dir)
        # the backbone starts from the baseline's trained weights, or from a weights file if given
        base_cfg = {**base["config"], "init_from": None if p.weights else str(checkpoint),
                    "weights": str(p.weights) if p.weights else None,
                    "warmup_fraction": WARMUP_FRACTION, "warmup_start": WARMUP_START}
        overrides = {"data": str(p.data) if p.data else None, "image_dir": str(p.image_dir) if p.image_dir else None,
                     "width": p.width, "head_width": p.head_width, "device": device, "val": str(where["val"]),
                     "frozen_backbone_epochs": p.frozen_backbone_epochs}
        method = _method(store)
        start = method.retrain_init(run_dir, store.meta()) if method else None
        if start is not None:  # e.g. DetNAS: paths start from the supernet's weights, the control too
            overrides["init_from"] = str(start)
        epochs = p.epochs or base["config"]["epochs"]
        first_seed = base["config"]["seed"] if p.seed is None else p.seed
        if seeds != "auto" and not (isinstance(seeds, int) and seeds >= 1):
            raise SpecError(f"--seeds {seeds}: a count >= 1 or 'auto'")
        seed_list = [first_seed + k for k in range(2 if seeds == "auto" else seeds)]
        entries = (p.lr,) if p.lr else tuple(p.lr_grid) if p.lr_grid else default_grid(base["config"]["batch_size"])
        grid = tuple(dict.fromkeys(grid_point(e, p.optimizer or "sgd") for e in entries))
        grid_epochs = p.grid_epochs or max(1, epochs // 3)
        if len(grid) > 1 and not where["select_val"]:
            raise SpecError(f"{run_dir}: the learning-rate grid chooses on the search's meta-val, and this run "
                            f"records none: give --select-val META_VAL.json, or pin one rate with --lr")
        promoted = [_with_reward(store, c) for c in candidates(store, p.top, archs, base["model_args"]["num_convs"])]
        job = _Job(store, base_cfg, overrides, where, device, on_progress, train_fn, evaluate_fn or evaluate,
                   {"deep_supervision": True} if p.deep_supervision else {})
        if p.ledger is not None:
            job.ledger, job.sources = RowLedger(p.ledger), row_sources(base, p.weights, start, p.data, where)
        rows, chosen, scores = [], {}, {}
        for cand in promoted:  # stage 1: every architecture at every point, short schedule, meta-val
            if len(grid) == 1:
                chosen[cand.name] = grid[0]
                continue
            def meta_val_ap(point, cand=cand) -> float | None:  # one grid row (kept in rows); None: diverged
                row = job.run(cand, Recipe("grid", point[1], grid_epochs, seed_list[0], point[0]))
                rows.append(row)
                return row["metrics"]["AP"] if row["status"] == "done" else None

            ap = {point: meta_val_ap(point) for point in grid}
            for _ in range(p.extend_grid):  # the best point at its optimiser's largest rate: try twice that rate
                best = choose_rate(ap)
                if best is None or not at_edge(best, ap):
                    break
                point = (best[0], float(f"{2 * best[1]:.3g}"))
                ap[point] = meta_val_ap(point)
            scores[cand.name] = {point_label(*point): v for point, v in ap.items()}
            chosen[cand.name] = choose_rate(ap)
        auto = None
        if seeds == "auto":  # before stage 2 reads any test image
            auto = seeds_from_meta_val(job, promoted, chosen, grid_epochs, first_seed, rows)
            seed_list = [first_seed + k for k in range(auto["seeds"])]
            store.set_meta(auto_seeds=auto)
        # the choice is the run's record of this promotion: `compare` reports these recipes' seeds,
        # also where their rows were made before (a grid rerun that chooses an older recipe again)
        store.set_meta(promoted={**store.meta().get("promoted", {}),
                                 **{c.name: dict(zip(RECIPE_FIELDS, (*chosen[c.name], epochs)))
                                    for c in promoted if chosen[c.name] is not None}})
        for cand in promoted:  # stage 2: the chosen point, full schedule, every seed, test
            point = chosen[cand.name]
            if point is None:
                rows.append(job.fail(cand, Recipe("final", 0.0, epochs, seed_list[0]),
                                     "diverged at every rate of the grid"))
                continue
            rows += [job.run(cand, Recipe("final", point[1], epochs, s, point[0])) for s in seed_list]
        seconds = {stage: sum(r["metrics"].get("train_seconds", 0) + r["metrics"].get("eval_seconds", 0)
                              for r in rows if r["metrics"].get("stage") == stage) for stage in ("grid", "final")}
        return {"run": str(run_dir), "checkpoint": str(checkpoint), "val": str(where["val"]),
                "select_val": where["select_val"], "grid": scores,
                "chosen": {name: point and point_label(*point) for name, point in chosen.items()}, "seeds": seed_list,
                "auto_seeds": auto,
                "rows": rows, "grid_seconds": seconds["grid"], "final_seconds": seconds["final"],
                "ledger_not_reused": job.not_reused}
    finally:
        store.close()


def row_sources(base: dict, weights, start, data, where: dict) -> dict:
    """Digests of everything a promotion's rows train from and are judged on, besides their own
    recipe: the start weights (the baseline's, a weights file, a method's start), the training
    data and the meta-val and test jsons (a row's ledger fingerprint)."""
    train_data = data or base["config"]["data"]
    sources = {"baseline": tensors_digest(base["model"]), "data": sha256_file(train_data),
               "test": sha256_file(where["val"])}
    if where["select_val"]:
        sources["meta_val"] = sha256_file(where["select_val"])
    for name, path in (("weights", weights), ("start", start)):
        if path is not None and Path(path).is_file():
            sources[name] = sha256_file(path)
    return sources


#: The most seeds `--seeds auto` asks of each architecture's full schedule.
AUTO_SEEDS_CAP = 5


def seeds_from_meta_val(job, promoted, chosen: dict, grid_epochs: int, first_seed: int, rows: list,
                        min_gain: float = MIN_GAIN, cap: int = AUTO_SEEDS_CAP) -> dict:
    """`retrain --seeds auto`: every architecture's chosen grid point trained again with the next
    seed on meta-val (a grid row), the paired differences to the control's two give a pooled seed
    noise (one degree of freedom an architecture), and the count is the seeds that noise needs to
    find a `min_gain` AP gain at 80 % power at Holm's first step (stats.seeds_for_power), at least
    2, at most `cap`. Short-schedule meta-val noise stands in for the final schedule's on test:
    what matters is that the count is fixed before any test evaluation, never grown while watching
    test results (which manufactures wins)."""
    from .stats import seeds_for_power

    ap = {}
    for cand in promoted:
        point = chosen[cand.name]
        if point is None:
            continue
        for seed in (first_seed, first_seed + 1):
            row = job.run(cand, Recipe("grid", point[1], grid_epochs, seed, point[0]))
            if seed != first_seed:
                rows.append(row)
            ap.setdefault(cand.name, []).append(row["metrics"]["AP"] if row["status"] == "done" else None)
    control = ap.get("baseline")
    diffs = [[100 * (a - c) for a, c in zip(v, control)] for name, v in ap.items()
             if name != "baseline" and control and None not in v + control]
    if not diffs:
        return {"seeds": 2, "sd": None, "dof": 0, "needed": None, "cap": cap,
                "why": "no architecture and control finished both meta-val seeds: 2 seeds"}
    sd = (sum((d[0] - d[1]) ** 2 / 2 for d in diffs) / len(diffs)) ** 0.5
    needed = seeds_for_power(sd, min_gain, 0.025 / len(diffs))
    count = cap if needed is None else min(cap, max(2, needed))
    why = (f"meta-val seed noise {sd:.2f} AP (paired, {len(diffs)} dof) needs "
           f"{'more than 100' if needed is None else needed} seeds for a {min_gain:g} AP gain at 80 % power"
           + (f"; capped at {cap}: this promotion cannot resolve that gain" if needed is None or needed > cap else ""))
    return {"seeds": count, "sd": sd, "dof": len(diffs), "needed": needed, "cap": cap, "why": why}


#: What makes two final rows of one architecture the same recipe (their seeds are averaged together).
RECIPE_FIELDS = ("optimizer", "lr", "epochs")


def same_recipe(a: dict, b: dict) -> bool:
    return all(a[k] == b[k] for k in RECIPE_FIELDS)


def at_edge(point: tuple[str, float], points) -> bool:
    """Whether `point` (optimiser, rate) has the largest rate tried with its optimiser."""
    return point[1] == max(rate for name, rate in points if name == point[0])


def choose_rate(scores: dict):
    """The grid point (or rate) with the best meta-val AP (on a tie the first in sorted order: the
    lower rate of one optimiser); None if every point failed."""
    ok = {point: ap for point, ap in scores.items() if ap is not None}
    return max(sorted(ok), key=lambda point: ok[point]) if ok else None


@dataclass
class _Job:
    """What every promotion row shares: the store, the baseline's config and the overrides, where
    to evaluate, and the training and evaluation functions."""

    store: RunStore
    base_cfg: dict
    overrides: dict
    where: dict
    device: str
    on_progress: object
    train_fn: object
    evaluate: object
    deep: dict
    ledger: object = None  # ledger.RowLedger: rows kept beyond this machine (module docstring)
    sources: dict | None = None  # digests of what every row trains from: part of each row's fingerprint
    not_reused: dict = field(default_factory=dict)  # ledger rows trained again: {row: the sources that differ}

    def fail(self, cand: Candidate, recipe: Recipe, reason: str) -> dict:
        name = f"{cand.name}/{recipe.folder}"
        metrics = {"arch": cand.name, **recipe.fields(), "reason": reason}
        self.store.set_retrained(name, cand.trial, cand.genotype.to_json(), cand.reward, "failed", None, metrics)
        return {"name": name, "trial": cand.trial, "genotype": cand.genotype.to_json(), "reward": cand.reward,
                "status": "failed", "checkpoint": None, "metrics": metrics}

    def run(self, cand: Candidate, recipe: Recipe) -> dict:
        """Trains and evaluates one (architecture, recipe) row, or returns it if it is done."""
        extra = self.deep if getattr(cand.genotype, "repeats", 1) > 1 else {}  # stacked (NAS-FPN) decoders only
        options = {**self.overrides, **extra, "lr": recipe.lr, "epochs": recipe.epochs, "seed": recipe.seed,
                   "optimizer": recipe.optimizer}
        folder = f"{recipe.folder}-{recipe_key(_config(self.base_cfg, cand, Path('.'), options))}"
        name = f"{cand.name}/{folder}"
        out = self.store.run_dir / "retrain" / cand.name / folder
        config = _config(self.base_cfg, cand, out, options)
        last = out / "last.pt"
        previous = {r["name"]: r for r in self.store.retrained()}.get(name)
        print_ = fingerprint(name, self.sources) if self.ledger is not None else None
        if previous and previous["status"] == "done" and (recipe.stage == "grid" or last.is_file()):
            if last.is_file():
                _check_resumable(last, config)
            if self.ledger is not None and not self.ledger.find(name, print_):  # done before the ledger came
                self._keep(name, print_, previous, last, out)
            return previous
        kept = self.ledger.find(name, print_) if self.ledger is not None else None
        if kept:
            return self._from_ledger(cand, name, config, out, kept)
        differs = self.ledger.differs(name, self.sources) if self.ledger is not None else None
        if differs is not None:  # kept, but trained from other inputs
            self.not_reused[name] = differs
        reward = cand.reward
        genotype, fields = cand.genotype.to_json(), {"arch": cand.name, **recipe.fields()}
        self.store.set_retrained(name, cand.trial, genotype, reward, "training", str(last), fields)
        resume = last.is_file()
        if resume:
            _check_resumable(last, config)
        progress = (lambda e: self.on_progress({**e, "arch": f"{cand.name} {recipe.folder}"})) \
            if self.on_progress else None
        try:
            if not (resume and load_checkpoint(last)["epoch"] >= config.epochs):
                self.train_fn(config, resume=resume, on_progress=progress)
        except TrainingDiverged as e:
            metrics = {**fields, "reason": str(e)}
            self.store.set_retrained(name, cand.trial, genotype, reward, "failed", str(last), metrics)
            row = {"name": name, "trial": cand.trial, "genotype": genotype, "reward": reward,
                   "status": "failed", "checkpoint": str(last), "metrics": metrics}
            if self.ledger is not None:
                self._keep(name, print_, row, last, out)
            return row
        ckpt = load_checkpoint(last)
        started = time.perf_counter()
        if recipe.stage == "grid":  # meta-val: what chooses the rate; latency is measured on test only
            metrics = self.evaluate(last, self.where["select_val"], image_dir=self.where["select_image_dir"],
                                    device=self.device, latency_images=1)
        else:
            metrics = self.evaluate(last, self.where["val"], image_dir=self.where["val_image_dir"], device=self.device,
                                    detections_out=out / DETECTIONS)
            metrics["detections"] = DETECTIONS  # beside the row's checkpoint: the image bootstrap reads it
        metrics.update(fields, eval_seconds=time.perf_counter() - started,
                       train_seconds=sum(h["seconds"] for h in ckpt["history"]))
        kept = str(last) if recipe.stage == "final" else None
        self.store.set_retrained(name, cand.trial, genotype, reward, "done", kept, metrics)
        row = {"name": name, "trial": cand.trial, "genotype": genotype, "reward": reward,
               "status": "done", "checkpoint": kept, "metrics": metrics}
        if self.ledger is not None:
            self._keep(name, print_, row, last, out)
        _prune(last, keep_model=kept is not None)
        return row

    def _keep(self, name: str, print_: str, row: dict, last: Path, out: Path) -> None:
        """Writes a finished row to the ledger, with its training record and test detections."""
        ckpt = load_checkpoint(last, stand_in_ok=True) if last.is_file() else {}
        record = {k: ckpt[k] for k in ("history", "model_args", "classes") if k in ckpt}
        detections = out / DETECTIONS if row["metrics"].get("detections") else None
        self.ledger.keep(name, print_, row, record, detections, self.sources)

    def _from_ledger(self, cand: Candidate, name: str, config: TrainConfig, out: Path, kept: dict) -> dict:
        """The row as the ledger kept it: in run.db, with its detections and, for a finished final
        row, a stand-in checkpoint (ledger.py) where compare times it."""
        checkpoint = None
        if kept["status"] == "done" and kept["metrics"].get("stage") == "final":
            checkpoint = out / "last.pt"
            out.mkdir(parents=True, exist_ok=True)
            detections = self.ledger.detections(kept)
            if detections is not None:
                (out / DETECTIONS).write_bytes(detections)
            save_stand_in(checkpoint, config, kept["record"], f"rebuilt from the promotion ledger {self.ledger.folder} "
                                                              f"(row {name}); its weights are seeded, not trained")
        self.store.set_retrained(name, cand.trial, kept["genotype"], kept["reward"], kept["status"],
                                 str(checkpoint) if checkpoint else None, kept["metrics"])
        return {"name": name, "trial": cand.trial, "genotype": kept["genotype"], "reward": kept["reward"],
                "status": kept["status"], "checkpoint": str(checkpoint) if checkpoint else None,
                "metrics": kept["metrics"]}


def save_stand_in(path: Path, config: TrainConfig, record: dict, why: str) -> None:
    """A checkpoint of the row's architecture with seeded initial weights, its config and training
    record, marked `stand_in` (ledger.py): what timing and reports need of a row trained elsewhere."""
    import torch

    from .train import build_detector

    torch.manual_seed(0)
    model = build_detector(record["model_args"])
    save_checkpoint({"kind": "fcos", "model": model.state_dict(), "epoch": config.epochs,
                     "history": record.get("history", []), "config": config.model_dump(),
                     "model_args": record["model_args"], "classes": record.get("classes", {}),
                     "genotype": config.genotype, "stand_in": why}, path)


def _prune(last: Path, keep_model: bool) -> None:
    """Keeps what compare and eval need once a row is done: a grid row's meta-val AP is in run.db,
    so its folder goes; a final row keeps its model without the optimiser state (about half the
    file). A grid multiplies the rows, so this is what keeps a promotion's disk use bounded."""
    if not keep_model:
        shutil.rmtree(last.parent, ignore_errors=True)
        return
    ckpt = load_checkpoint(last)
    if ckpt.pop("optimizer", None) is not None:
        save_checkpoint(ckpt, last)
