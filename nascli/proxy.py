"""Train and score one candidate decoder on cached features: the search's reward.

The candidate trains on meta-train crops with Adam for a fixed number of epochs while a Polyak
(exponential) average of its weights is kept; the averaged weights are scored on meta-val, by
R = -(L_cls + L_reg + L_ctr), the detector's losses summed over the meta-val batches (NAS-FCOS
§3.3), or by the AP@[.5:.95] of its detections on the meta-val crops (NAS-FPN §4.2), computed by
the numba AP kernel. A loss that turns NaN/inf, or running out of memory, makes a failed trial,
never a crashed search.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import torch

from .config import ProxySpec
from .features import CachedSplit
from .spaces import build_decoder, nas_fcos, nas_fpn


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
    if spec.space == "nas-fpn":
        return nas_fpn.Space(nas_fpn.SpaceSpec(cells=spec.cells, width=spec.width, repeats=spec.repeats))
    return nas_fcos.Space(nas_fcos.SpaceSpec(inputs=tuple(spec.inputs), width=spec.width,
                                             fpn_blocks=spec.fpn_blocks, head_blocks=spec.head_blocks,
                                             fpn_ops=tuple(spec.fpn_ops), head_ops=tuple(spec.head_ops)))


@lru_cache(maxsize=4)
def _open_split(path: str, split: str) -> CachedSplit:
    """Kept open across trials in one process: the split is read (into RAM) once per search."""
    return CachedSplit(path, split)


def evaluate(genotype, spec: ProxySpec, cache_path, seed: int = 0) -> TrialResult:
    """The reward of one genotype (of any space: retrain scores the hand-designed baseline too);
    pure in its arguments, so any executor can run it."""
    started = time.perf_counter()
    torch.manual_seed(seed)
    train, val = _open_split(str(cache_path), "train"), _open_split(str(cache_path), "val")
    decoder = build_decoder(genotype, train.in_channels(), len(train.classes), spec.width)
    shapes = {lv: tuple(train.group[lv].shape[1:]) for lv in train.levels}
    cost = nas_fcos.cost(decoder, shapes)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=spec.lr)
    averaged = torch.optim.swa_utils.AveragedModel(
        decoder, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(spec.polyak), use_buffers=True)
    try:
        for epoch in range(spec.epochs):
            decoder.train()
            for batch in train.batches(spec.batch_size, True, seed * 1000 + epoch,
                                       limit=spec.max_train_samples):
                loss = sum(decoder.loss_from_batch(decoder(batch), batch).values())
                if not torch.isfinite(loss):
                    return TrialResult("failed", reason=f"loss diverged ({loss.item()}) in epoch {epoch + 1}",
                                       seconds=time.perf_counter() - started, **cost)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                averaged.update_parameters(decoder)
        scorer = averaged.module.eval()
        # AP ranks detections by score: a short proxy run is rarely calibrated above the usual 0.05
        # threshold, so the reward keeps the best 100 boxes per level (then NMS, best 100 per image).
        scorer.score_thresh, scorer.topk_per_level = 0.0, 100
        losses, ap = _score(scorer, val, spec, reward_kind(spec) == "ap")
    except torch.OutOfMemoryError:
        return TrialResult("failed", reason="out of memory", seconds=time.perf_counter() - started, **cost)
    total = sum(losses.values())
    if not torch.isfinite(torch.tensor(total)):
        return TrialResult("failed", reason="validation loss is not finite", losses=losses,
                           seconds=time.perf_counter() - started, **cost)
    reward = ap["AP"] if reward_kind(spec) == "ap" else -total
    return TrialResult("done", reward=reward, losses=losses, ap=ap, seconds=time.perf_counter() - started, **cost)


def reward_kind(spec: ProxySpec) -> str:
    return spec.reward or ("ap" if spec.space == "nas-fpn" else "loss")


@torch.no_grad()
def _score(scorer, val: CachedSplit, spec: ProxySpec, with_ap: bool):
    """Meta-val losses summed over batches, and (with_ap) the COCO AP of the detections on the
    crops against the cached boxes (an undefined AP, no boxes at all, counts as 0)."""
    from .kernels import coco_precision, summarize

    losses, gts, dets = {}, [], []
    for batch in val.batches(spec.batch_size, False, limit=spec.max_val_samples):
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
