"""Promotion: a search's winners (and the hand-designed baseline) trained in full from images.

Each promoted architecture becomes a full detector: the baseline's backbone (its trained weights,
or a torchvision weights file), the searched decoder at the retraining width (for an SP-NAS run:
the searched backbone, its weights the baseline's carried through its morphisms, under the
baseline's FPN + FCOS head; for a DetNAS run: the path's backbone with the trained supernet's
weights, the ShuffleNetV2 control likewise), trained with the
baseline's own schedule, data and seed, then evaluated with pycocotools. The baseline decoder
(FPN + FCOS head as the baseline had it) is always retrained the same way as the reference row,
and scored by the run's proxy too, so proxy fidelity covers it.

Everything lands in the run: `RUN/retrain/<name>/last.pt` per architecture, and one row per
architecture in run.db's `retrained` table ('training' -> 'done' | 'failed'). Running the same
command again resumes: finished architectures are skipped, an interrupted one continues from its
last epoch (train.py's resume is exact), so Ctrl-C or kill loses at most one epoch.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from .config import ProxySpec, TrainConfig, load_spec, validate
from .errors import CacheError, DataError, NascliError, SpecError
from .runtime import load_checkpoint
from .store import RunStore
from .train import TrainingDiverged, train

BASELINE = "baseline"


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
    from .search import ranked
    from .spaces import fpn_fcos, load_genotype

    control = store.control()
    if control is not None:
        out = [Candidate(BASELINE, load_genotype(control.genotype, "control"), reward=control.reward)]
    else:
        out = [Candidate(BASELINE, fpn_fcos.Genotype(num_convs=baseline_convs))]
    lineage = _lineage(store)
    for t in ranked(store)[:top]:
        reward = t["mean"] if t["mean"] is not None else t["reward"]
        genotype = load_genotype(t["genotype"], f"trial {t['trial']}")
        if lineage:  # a grown backbone starts from the baseline's weights, like the control
            from .backbone_proxy import from_baseline

            genotype = from_baseline(genotype, lineage)
        out.append(Candidate(f"trial-{t['trial']}", genotype, t["trial"], reward))
    for arch in archs:
        name = str(arch).replace("zoo:", "zoo-") if str(arch).startswith("zoo:") else Path(arch).stem
        out.append(Candidate(name, load_genotype(arch)))
    return out


def _lineage(store: RunStore) -> dict:
    """tag -> genotype of every trial of an sp-nas run (whose candidates inherit weights); {} otherwise."""
    from .spaces import spnas

    if store.meta().get("method") != "sp-nas":
        return {}
    return {g.tag: g for g in (spnas.Genotype.from_json(t.genotype, f"trial {t.id}") for t in store.trials("id > 0"))}


def _inputs(meta: dict, run_dir: Path, checkpoint, val, val_image_dir):
    """Baseline checkpoint (given, else the one the run's cache was built from) and the test split
    to evaluate on, which must share no image with the meta-val the search selected on."""
    from .data.coco import CocoDetection
    from .data.split import shared_images
    from .features import describe

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
    meta_val = sources.get("val")
    if meta_val and Path(meta_val).is_file():
        shared = shared_images(CocoDetection(meta_val, sources.get("val_image_dir")).image_files(),
                               CocoDetection(val, val_image_dir))
        if shared:
            raise DataError(f"{val}: field 'images' shares {len(shared)} images with the search's meta-val "
                            f"{meta_val} (e.g. {Path(shared[0]).name}); evaluate on a test split the search "
                            f"never saw")
    return Path(checkpoint), Path(val), val_image_dir or sources.get("val_image_dir")


def _config(base: dict, candidate: Candidate, out: Path, overrides: dict) -> TrainConfig:
    """The baseline's config with the given overrides, this candidate's decoder and folder."""
    data = {**base, **{k: v for k, v in overrides.items() if v is not None},
            "out": str(out), "genotype": json.loads(candidate.genotype.to_json())}
    return validate(TrainConfig, data, "retrain options")


def _check_resumable(last: Path, config: TrainConfig) -> None:
    """A checkpoint left by an earlier retrain must come from the same request."""
    old = load_checkpoint(last)["config"]
    new = config.model_dump()
    for k in new:
        if k != "device" and old.get(k) != new[k]:
            raise NascliError(f"{last}: field '{k}' was {old.get(k)!r} when this retraining started, now "
                              f"{new[k]!r}; retrain into another run folder or delete {last.parent}")


def _proxy_reward(store: RunStore, genotype, seed: int) -> float | None:
    """The run's proxy reward for an architecture the search did not score (the baseline)."""
    from .proxy import evaluate as proxy_evaluate

    meta = store.meta()
    spec_path = store.run_dir / "spec.yaml"
    if meta.get("method") == "sp-nas":  # its proxy needs a lineage; an --arch backbone has none
        return None
    if not meta.get("cache") or not spec_path.is_file() or not Path(meta["cache"]).is_file():
        return None
    try:
        result = proxy_evaluate(genotype, load_spec(ProxySpec, spec_path), meta["cache"], seed, meta.get("seed", 0))
    except CacheError:  # the run's cache is of an older format: no proxy reward for this row
        return None
    return result.reward if result.status == "done" else None


def retrain(run_dir, top: int = 3, archs=(), checkpoint=None, weights=None, data=None, val=None,
            image_dir=None, val_image_dir=None, epochs: int | None = None, width: int | None = None,
            head_width: int | None = None, seed: int | None = None, lr: float | None = None, device: str = "auto",
            on_progress=None, train_fn=train, deep_supervision: bool = False) -> dict:
    """Retrains and evaluates the promoted set of a run; returns {run, checkpoint, val, rows}.

    Defaults come from the baseline checkpoint's config (data, schedule, width, seed): only what is
    given here changes, identically for every architecture.
    """
    from .evaluate import evaluate

    from .spaces import load_genotype

    run_dir = Path(run_dir)
    if archs and not (run_dir / "run.db").is_file():  # a new run of given architectures: checked before it exists
        for arch in archs:
            load_genotype(arch)
        load_checkpoint(_inputs({}, run_dir, checkpoint, val, val_image_dir)[0])
    store = RunStore(run_dir, create=bool(archs))
    try:
        checkpoint, val, val_image_dir = _inputs(store.meta(), run_dir, checkpoint, val, val_image_dir)
        base = load_checkpoint(checkpoint)
        # the backbone starts from the baseline's trained weights, or from a weights file if given
        base_cfg = {**base["config"], "init_from": None if weights else str(checkpoint),
                    "weights": str(weights) if weights else None}
        overrides = {"data": str(data) if data else None, "image_dir": str(image_dir) if image_dir else None,
                     "epochs": epochs, "width": width, "head_width": head_width, "seed": seed, "lr": lr,
                     "device": device, "val": str(val)}
        if store.meta().get("space") == "detnas":  # paths start from the supernet's weights, the control too
            overrides["init_from"] = str(run_dir / "supernet.pt")
        deep = {"deep_supervision": True} if deep_supervision else {}
        promoted = candidates(store, top, archs, base["model_args"]["num_convs"])
        # deep supervision applies to the stacked (NAS-FPN) decoders only
        rows = [_retrain_one(store, cand, base_cfg, {**overrides, **(deep if getattr(cand.genotype, "repeats", 1) > 1
                                                                  else {})},
                             val, val_image_dir, device, on_progress, train_fn, evaluate) for cand in promoted]
        return {"run": str(run_dir), "checkpoint": str(checkpoint), "val": str(val), "rows": rows}
    finally:
        store.close()


def _retrain_one(store, cand: Candidate, base_cfg, overrides, val, val_image_dir, device, on_progress,
                 train_fn, evaluate) -> dict:
    out = store.run_dir / "retrain" / cand.name
    config = _config(base_cfg, cand, out, overrides)
    last = out / "last.pt"
    previous = {r["name"]: r for r in store.retrained()}.get(cand.name)
    if previous and previous["status"] == "done" and last.is_file():
        _check_resumable(last, config)
        return previous
    reward = cand.reward
    if cand.trial is None and reward is None:
        reward = previous["reward"] if previous and previous["reward"] is not None else \
            _proxy_reward(store, cand.genotype, config.seed)
    genotype = cand.genotype.to_json()
    store.set_retrained(cand.name, cand.trial, genotype, reward, "training", str(last), {})
    resume = last.is_file()
    if resume:
        _check_resumable(last, config)
    progress = (lambda e: on_progress({**e, "arch": cand.name})) if on_progress else None
    try:
        if not (resume and load_checkpoint(last)["epoch"] >= config.epochs):
            train_fn(config, resume=resume, on_progress=progress)
    except TrainingDiverged as e:
        metrics = {"reason": str(e)}
        store.set_retrained(cand.name, cand.trial, genotype, reward, "failed", str(last), metrics)
        return {"name": cand.name, "trial": cand.trial, "genotype": genotype, "reward": reward,
                "status": "failed", "checkpoint": str(last), "metrics": metrics}
    ckpt = load_checkpoint(last)
    started = time.perf_counter()
    metrics = evaluate(last, val, val_image_dir, device)
    metrics["eval_seconds"] = time.perf_counter() - started
    metrics["train_seconds"] = sum(h["seconds"] for h in ckpt["history"])
    store.set_retrained(cand.name, cand.trial, genotype, reward, "done", str(last), metrics)
    return {"name": cand.name, "trial": cand.trial, "genotype": genotype, "reward": reward,
            "status": "done", "checkpoint": str(last), "metrics": metrics}
