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


class FlatParameters:
    """Every parameter of `model` made a view of one buffer (`data`) and, with `grads`, every
    gradient a view of another (`grad`, which autograd then accumulates into in place), so an update
    is a few kernels on two tensors instead of a few per tensor: a demo decoder has ~380 parameter
    tensors, and on CPU each small kernel costs more in dispatch than in arithmetic (issue 30).
    Each parameter starts on a 64-byte boundary, as a tensor of its own would, and the gaps stay
    zero: packed without gaps, a demo decoder's outputs moved by up to 1.5e-5 (a 1×1 convolution on
    P7's 1×1 map sums in another order when its weight is off the boundary); aligned, the trial's
    rewards are bit for bit the same."""

    ALIGN = 16  # float32 elements in 64 bytes

    @torch.no_grad()
    def __init__(self, model: nn.Module, grads: bool = True):
        params = list(model.parameters())
        starts, end = [], 0
        for p in params:
            starts.append(end)
            end += -(-p.numel() // self.ALIGN) * self.ALIGN
        first = params[0]
        self.data = torch.zeros(end, dtype=first.dtype, device=first.device)
        self.grad = torch.zeros_like(self.data) if grads else None
        for p, start in zip(params, starts):
            window = slice(start, start + p.numel())
            self.data[window].copy_(p.reshape(-1))
            p.data = self.data[window].view_as(p)
            p.grad = self.grad[window].view_as(p) if grads else None
        self.params = params


class FlatAdam:
    """torch's Adam (no weight decay, no amsgrad) on a `FlatParameters` buffer: the same
    elementwise formulas in the same order as torch's multi-tensor Adam, so the same weights bit for
    bit (tested), in ~0.5 ms a step instead of ~3.8 for a demo decoder on one thread. A parameter
    that never gets a gradient (a cell's unused input) keeps a zero gradient, whose update is
    exactly zero, as torch's skipping it. `zero_grad` zeroes the gradient buffer in place: setting
    gradients to None would detach them from it."""

    def __init__(self, flat: FlatParameters, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.flat, self.betas, self.eps, self.steps = flat, betas, eps, 0
        self.exp_avg, self.exp_avg_sq = torch.zeros_like(flat.data), torch.zeros_like(flat.data)
        self.param_groups = [{"params": flat.params, "lr": lr}]  # torch's layout: `step` reads the lr here

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.flat.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        (beta1, beta2), grad = self.betas, self.flat.grad
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = -self.param_groups[0]["lr"] / (1 - beta1 ** self.steps)
        denominator = self.exp_avg_sq.sqrt().div_((1 - beta2 ** self.steps) ** 0.5).add_(self.eps)
        self.flat.data.addcdiv_(self.exp_avg, denominator, value=step_size)


def flatten(model: nn.Module) -> FlatParameters | None:
    """The decoder trial's parameters as one buffer on CPU (`FlatParameters`); None elsewhere (a
    GPU launches torch's multi-tensor kernels per tensor group; unmeasured there) and under
    `legacy_trial`, which keeps separate tensors as before issue 30."""
    params = list(model.parameters())
    if _LEGACY or not params or params[0].device.type != "cpu":
        return None
    return FlatParameters(model)


def adam(model: nn.Module, lr: float, flat: FlatParameters | None = None):
    """The decoder trial's Adam: `FlatAdam` on `flat` (the model's `flatten`) when there is one,
    else torch's multi-tensor Adam (one tensor at a time under `legacy_trial`)."""
    if flat is not None:
        return FlatAdam(flat, lr)
    return torch.optim.Adam(model.parameters(), lr=lr, foreach=not _LEGACY)


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

    def __init__(self, model: torch.nn.Module, decay: float, flat: FlatParameters | None = None):
        self.module = copy.deepcopy(model)
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.steps = decay, 0
        # both parameter lists are kept: walking a searched decoder's modules every step cost 10 ms,
        # ~7 % of a demo-proxy trial (issue 30); a flat model (`flat`, the model's buffer) is
        # averaged as one buffer of the same layout, one lerp a step
        self._averaged, self._source, self._current = list(self.module.parameters()), None, []
        self._flat = None if flat is None else (FlatParameters(self.module, grads=False).data, flat.data)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))
        if self._flat is not None:
            self._flat[0].lerp_(self._flat[1], 1.0 - decay)
            return
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
def keep_every_box(decoder) -> None:
    """What a proxy's AP is scored from: AP ranks detections by score, and a short proxy run is
    rarely calibrated above the usual 0.05 threshold, so every box counts (the best 100 per level,
    then NMS, the best 100 per image)."""
    decoder.score_thresh, decoder.topk_per_level = 0.0, 100


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
