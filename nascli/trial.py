"""The trial kit: what every method's trial shares to train a candidate briefly and score it.

A trial is a pure function of (genotype, spec, cache, seed, data seed): it opens the cache's
splits (`open_split`, read once per process), trains (`sgd_step` on a `cosine` schedule, or the
decoder trial's Adam with a `PolyakAverage`), recomputes BatchNorm statistics with no gradient
(`recompute_batchnorm`), scores on meta-val (`score`: summed losses and the numba AP) and turns
that into a `TrialResult` (`outcome`, `failure`): a diverging or out-of-memory candidate is a
failed trial, never a crashed search. Backbone methods train on image crops through an
`ImageDetector`. The methods' own trials live in nascli/methods/.
"""

from __future__ import annotations

import copy
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import torch
from torch import nn

from .cache import CachedSplit
from .runtime import MixedPrecision


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


class Diverged(Exception):
    """A candidate's training loss became NaN or infinite (a failed trial, with its cost)."""

    def __init__(self, message: str, cost: dict | None = None):
        super().__init__(message)
        self.cost = cost or {}


def outcome(losses: dict, ap: dict, reward: str, started: float, cost: dict) -> TrialResult:
    """The trial's result from its meta-val losses and AP: the reward is the AP (`reward` "ap")
    or minus the summed losses ("loss"); a loss that is not finite makes a failed trial."""
    total = sum(losses.values())
    seconds = time.perf_counter() - started
    if not math.isfinite(total):
        return TrialResult("failed", reason="validation loss is not finite", losses=losses, seconds=seconds, **cost)
    return TrialResult("done", reward=ap["AP"] if reward == "ap" else -total, losses=losses, ap=ap,
                       seconds=seconds, **cost)


def failure(error: Exception, started: float, cost: dict) -> TrialResult:
    """A failed trial for a candidate that diverged or ran out of memory, with what it cost."""
    reason = "out of memory" if isinstance(error, torch.OutOfMemoryError) else str(error)
    cost = {**cost, **getattr(error, "cost", {})}
    return TrialResult("failed", reason=reason, seconds=time.perf_counter() - started, **cost)


#: What `failure` turns into a failed trial.
TRIAL_ERRORS = (Diverged, torch.OutOfMemoryError)


@lru_cache(maxsize=4)
def open_split(path: str, split: str) -> CachedSplit:
    """A cache split kept open across trials in one process: read (into RAM) once per search."""
    return CachedSplit(path, split)


def cosine(step: int, total: int, lr: float, lr_min: float = 0.0) -> float:
    """The learning rate at `step` of `total` on a cosine from `lr` to `lr_min`."""
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * step / max(1, total)))


def sgd_step(optimizer, loss, lr: float, where: str, precision: MixedPrecision | None = None) -> None:
    """One step at `lr`, gradients clipped to norm 10 (through `precision`'s loss scaling when
    given); a loss that is not finite is a Diverged trial. Parameters without a gradient (off a
    supernet's path) are left alone by torch's SGD and AdamW."""
    if not torch.isfinite(loss):
        raise Diverged(f"loss diverged ({loss.item()}) in {where}")
    for group in optimizer.param_groups:
        group["lr"] = lr
    (precision or MixedPrecision(loss.device, False)).step(optimizer, loss, clip_norm=10.0)


_LEGACY: list[bool] = []


def adam(params, lr: float) -> torch.optim.Adam:
    """The decoder trial's Adam on torch's multi-tensor path: on CPU torch otherwise updates one
    tensor at a time, whose dispatch is ~8 % of a demo-proxy trial; the updates are bit-identical
    (issue 30, measured on 4 genotypes)."""
    return torch.optim.Adam(params, lr=lr, foreach=not _LEGACY)


@contextmanager
def legacy_trial():
    """The trial kit as it was before issue 30 (benchmarks/bench_trial.py's "before" arm): `adam`
    one tensor at a time, `PolyakAverage` walking the modules at every step, `recompute_batchnorm`
    through the whole model, every convolution computed whole and as the conv it is and the head's
    three predictions one call a level (`spaces.ops.nominal_taps`)."""
    from .spaces.ops import nominal_taps

    _LEGACY.append(True)
    try:
        with nominal_taps():
            yield
    finally:
        _LEGACY.pop()


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
        # both parameter lists are kept: walking a searched decoder's modules every step cost 10 ms,
        # ~7 % of a demo-proxy trial (issue 30)
        self._averaged, self._source, self._current = list(self.module.parameters()), None, []

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))
        if model is not self._source or _LEGACY:
            self._source, self._current = model, [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(self._averaged, self._current, 1.0 - decay)


@torch.no_grad()
def recompute_batchnorm(model: torch.nn.Module, batches) -> None:
    """Sets every BatchNorm's running statistics to the average over `batches` of its batch
    statistics, with the model's current weights and no gradient (torch.optim.swa_utils.update_bn
    for feature-cache batches). Models without BatchNorm are left as they are; a model's
    `batchnorm_pass`, when it has one, replaces its forward (only what reaches a BatchNorm need run)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    was_training = model.training
    model.train()
    forward = model if _LEGACY else getattr(model, "batchnorm_pass", model)
    for batch in batches:
        forward(batch)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)


@torch.no_grad()
def score(scorer, val: CachedSplit, spec, with_ap: bool, device="cpu"):
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


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Cached uint8 crops (as float, 0..255) normalised as the baseline's training normalised images."""
    from .data.coco import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1) * 255
    return (images - mean) / std


class ImageDetector(nn.Module):
    """A backbone and an FCOS decoder over cache batches of uint8 image crops (backbone methods)."""

    def __init__(self, backbone: nn.Module, decoder: nn.Module):
        super().__init__()
        self.backbone, self.decoder = backbone, decoder

    def forward(self, batch: dict) -> dict:
        return self.decoder(self.backbone(normalize(batch["images"])))

    def loss_from_batch(self, outputs: dict, batch: dict) -> dict:
        return self.decoder.loss_from_batch(outputs, batch)

    def postprocess(self, outputs: dict, image_sizes) -> list[dict]:
        return self.decoder.postprocess(outputs, image_sizes)


def image_detector_cost(detector: ImageDetector, crop: int) -> dict:
    """Params and FLOPs of a whole image detector on one crop."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    was_training = detector.training
    detector.eval()
    with counter, torch.no_grad():
        detector({"images": torch.zeros(1, 3, crop, crop)})
    detector.train(was_training)
    return {"params": sum(p.numel() for p in detector.parameters()), "flops": int(counter.get_total_flops())}
