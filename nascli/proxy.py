"""Train and score one candidate decoder on cached features: the search's reward (NAS-FCOS §3.3).

The candidate trains on meta-train crops with Adam for a fixed number of epochs while a Polyak
(exponential) average of its weights is kept; the averaged weights are scored on meta-val by
R = -(L_cls + L_reg + L_ctr), the three FCOS losses summed over the meta-val batches. A loss that
turns NaN/inf, or running out of memory, makes a failed trial, never a crashed search.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import torch

from .config import ProxySpec
from .features import CachedSplit
from .spaces import build_decoder, nas_fcos


@dataclass
class TrialResult:
    status: str                      # "done" or "failed"
    reward: float | None = None
    losses: dict = field(default_factory=dict)
    params: int = 0
    flops: int = 0
    seconds: float = 0.0
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def space_for(spec: ProxySpec) -> nas_fcos.Space:
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
                out = decoder(batch)
                loss = sum(decoder.loss_from_targets(out, batch["labels"], batch["ltrb"], batch["ctr"]).values())
                if not torch.isfinite(loss):
                    return TrialResult("failed", reason=f"loss diverged ({loss.item()}) in epoch {epoch + 1}",
                                       seconds=time.perf_counter() - started, **cost)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                averaged.update_parameters(decoder)
        losses = {"cls": 0.0, "reg": 0.0, "ctr": 0.0}
        scorer = averaged.module.eval()
        with torch.no_grad():
            for batch in val.batches(spec.batch_size, False, limit=spec.max_val_samples):
                terms = scorer.loss_from_targets(scorer(batch), batch["labels"], batch["ltrb"], batch["ctr"])
                for k, v in terms.items():
                    losses[k] += float(v)
    except torch.OutOfMemoryError:
        return TrialResult("failed", reason="out of memory", seconds=time.perf_counter() - started, **cost)
    total = sum(losses.values())
    if not torch.isfinite(torch.tensor(total)):
        return TrialResult("failed", reason="validation loss is not finite", losses=losses,
                           seconds=time.perf_counter() - started, **cost)
    return TrialResult("done", reward=-total, losses=losses, seconds=time.perf_counter() - started, **cost)
