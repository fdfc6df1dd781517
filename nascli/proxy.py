"""Train and score one candidate decoder on cached features: the search's reward.

The candidate trains on meta-train crops with Adam while a Polyak (exponential) average of its
weights is kept; the averaged weights are scored on meta-val, by R = -(L_cls + L_reg + L_ctr),
the detector's losses summed over the meta-val batches (NAS-FCOS §3.3), or by the AP@[.5:.95] of
its detections on the meta-val crops (NAS-FPN §4.2), computed by the numba AP kernel.

What makes two rewards comparable (the evaluation protocol of DESIGN.md):
- the average warms up (decay min(polyak, (1+t)/(10+t)) at step t), so the first steps' weights
  do not dominate a short run; it averages parameters only;
- BatchNorm statistics of the averaged model are recomputed on meta-train, with no gradient,
  before scoring (averaged running statistics of a short run are mostly their initial values);
- batches come in one order for every candidate of a search (`data_seed`, the run's seed): the
  trial's own `seed` draws only the initial weights, so two candidates are a paired comparison.

A loss that turns NaN/inf, or running out of memory, makes a failed trial, never a crashed search.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import torch

from .config import ProxySpec
from .errors import SpecError
from .features import CachedSplit
from .runtime import training_precision
from .spaces import auto_fpn, build_decoder, nas_fcos, nas_fpn


@dataclass
class TrialResult:
    status: str                      # "done" or "failed"
    reward: float | None = None
    losses: dict = field(default_factory=dict)
    params: int = 0
    flops: int = 0
    seconds: float = 0.0
    reason: str = ""
    ap: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def space_for(spec: ProxySpec):
    if spec.space == "detnas":
        from .spaces import detnas

        o = spec.supernet
        return detnas.Space(detnas.SpaceSpec(o.get("layout", "small"), o.get("width", 1.0), o.get("depth", 1.0)))
    if spec.space == "sp-nas":
        from .spaces import spnas

        return spnas.Space(spec)
    if spec.space == "auto-fpn":
        if not set(auto_fpn.LEVELS) <= set(spec.inputs):  # (C2, in the default inputs, is not used)
            raise SpecError(f"field 'inputs': Auto-FPN fuses {list(auto_fpn.LEVELS)} (P3..P5); {spec.inputs} lacks some")
        return auto_fpn.Space(auto_fpn.SpaceSpec(layers=spec.layers, head_cells=spec.head_cells, width=spec.width))
    if spec.space == "nas-fpn":
        return nas_fpn.Space(nas_fpn.SpaceSpec(cells=spec.cells, width=spec.width, repeats=spec.repeats))
    return nas_fcos.Space(nas_fcos.SpaceSpec(inputs=tuple(spec.inputs), width=spec.width,
                                             fpn_blocks=spec.fpn_blocks, head_blocks=spec.head_blocks,
                                             fpn_ops=tuple(spec.fpn_ops), head_ops=tuple(spec.head_ops)))


@lru_cache(maxsize=4)
def _open_split(path: str, split: str) -> CachedSplit:
    """Kept open across trials in one process: the split is read (into RAM) once per search."""
    return CachedSplit(path, split)


def evaluate(genotype, spec: ProxySpec, cache_path, seed: int = 0, data_seed: int = 0, device="cpu") -> TrialResult:
    """The reward of one genotype (of any space: the control is scored the same way); pure in its
    arguments, so any executor can run it. `seed` draws the initial weights, `data_seed` the
    batch order (the same for every candidate of a search); `device` is where it trains."""
    started = time.perf_counter()
    train, val = _open_split(str(cache_path), "train"), _open_split(str(cache_path), "val")
    try:
        scorer, cost = train_candidate(genotype, spec, train, seed, data_seed, device)
        # AP ranks detections by score: a short proxy run is rarely calibrated above the usual 0.05
        # threshold, so the reward keeps the best 100 boxes per level (then NMS, best 100 per image).
        scorer.score_thresh, scorer.topk_per_level = 0.0, 100
        losses, ap = _score(scorer, val, spec, reward_kind(spec) == "ap", device)
    except Diverged as e:
        return TrialResult("failed", reason=str(e), seconds=time.perf_counter() - started, **e.cost)
    except torch.OutOfMemoryError:
        return TrialResult("failed", reason="out of memory", seconds=time.perf_counter() - started)
    total = sum(losses.values())
    if not torch.isfinite(torch.tensor(total)):
        return TrialResult("failed", reason="validation loss is not finite", losses=losses,
                           seconds=time.perf_counter() - started, **cost)
    reward = ap["AP"] if reward_kind(spec) == "ap" else -total
    return TrialResult("done", reward=reward, losses=losses, ap=ap, seconds=time.perf_counter() - started, **cost)


class Diverged(Exception):
    """A candidate's training loss became NaN or infinite (a failed trial, with its cost)."""

    def __init__(self, message: str, cost: dict):
        super().__init__(message)
        self.cost = cost


def train_candidate(genotype, spec: ProxySpec, train: CachedSplit, seed: int = 0, data_seed: int = 0, device="cpu"):
    """Trains the candidate on meta-train; returns (the model to score, its cost). The model to
    score is the warmed-up Polyak average with BatchNorm statistics recomputed on meta-train."""
    torch.manual_seed(seed)
    decoder = build_decoder(genotype, train.in_channels(), len(train.classes), spec.width)
    shapes = {lv: tuple(train.group[lv].shape[1:]) for lv in train.levels}
    cost = nas_fcos.cost(decoder, shapes)
    decoder = decoder.to(device)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=spec.lr)
    precision = training_precision(device, spec.amp)
    average = PolyakAverage(decoder, spec.polyak)
    samples = len(train) if spec.max_train_samples is None else min(len(train), spec.max_train_samples)
    epochs = max(spec.epochs, math.ceil(spec.min_steps / math.ceil(samples / spec.batch_size)))
    for epoch in range(epochs):
        decoder.train()
        for batch in train.batches(spec.batch_size, True, data_seed * 1000 + epoch, device,
                                   limit=spec.max_train_samples):
            loss = sum(decoder.loss_from_batch(precision.forward(decoder, batch), batch).values())
            if not torch.isfinite(loss):
                raise Diverged(f"loss diverged ({loss.item()}) in epoch {epoch + 1}", cost)
            precision.step(optimizer, loss)
            average.update(decoder)
    scorer = average.module
    recompute_batchnorm(scorer, train.batches(spec.batch_size, False, device=device, limit=spec.max_train_samples))
    return scorer.eval(), cost


class PolyakAverage:
    """An exponential moving average of a model's parameters with warm-up: at step t the decay is
    min(decay, (1 + t) / (10 + t)) (TensorFlow's ExponentialMovingAverage with num_updates), so
    early weights fade out instead of dominating a run of ~100 steps. Buffers are not averaged:
    BatchNorm statistics are recomputed for the averaged weights (`recompute_batchnorm`)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.module = copy.deepcopy(model)
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.steps = decay, 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))
        averaged, current = list(self.module.parameters()), [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(averaged, current, 1.0 - decay)


@torch.no_grad()
def recompute_batchnorm(model: torch.nn.Module, batches) -> None:
    """Sets every BatchNorm's running statistics to the average over `batches` of its batch
    statistics, with the model's current weights and no gradient (torch.optim.swa_utils.update_bn
    for feature-cache batches). Models without BatchNorm are left as they are."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    was_training = model.training
    model.train()
    for batch in batches:
        model(batch)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)


def reward_kind(spec: ProxySpec) -> str:
    return spec.reward or ("ap" if spec.space in ("nas-fpn", "sp-nas", "detnas") else "loss")


@torch.no_grad()
def _score(scorer, val: CachedSplit, spec: ProxySpec, with_ap: bool, device="cpu"):
    """Meta-val losses summed over batches, and (with_ap) the COCO AP of the detections on the
    crops against the cached boxes (an undefined AP, no boxes at all, counts as 0)."""
    from .kernels import coco_precision, summarize

    losses, gts, dets = {}, [], []
    for batch in val.batches(spec.batch_size, False, device=device, limit=spec.max_val_samples):
        out = scorer(batch)
        for k, v in scorer.loss_from_batch(out, batch).items():
            losses[k] = losses.get(k, 0.0) + float(v)
        if with_ap:
            found = scorer.postprocess(out, [(val.crop, val.crop)] * len(batch["index"]))
            for image, r in zip(batch["index"].tolist(), found):
                boxes, labels = val.boxes(image)
                gts += [(image, lab, box) for box, lab in zip(boxes, labels)]
                dets += [(image, lab, box, s) for box, lab, s in zip(r["boxes"], r["labels"], r["scores"])]
    if not with_ap:
        return losses, {}
    xywh = lambda b: [b[0], b[1], b[2] - b[0], b[3] - b[1]]  # noqa: E731
    gt_boxes = [xywh(b) for *_, b in gts]
    precision = coco_precision(
        gt_boxes, [g[1] for g in gts], [g[0] for g in gts], [w * h for *_, w, h in gt_boxes], [False] * len(gts),
        [xywh(d[2]) for d in dets], [d[3] for d in dets], [d[1] for d in dets], [d[0] for d in dets],
        len(val.classes), min(len(val), spec.max_val_samples or len(val)))
    ap = {k: max(0.0, v) for k, v in summarize(precision).items()}
    return losses, ap
