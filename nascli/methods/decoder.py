"""The decoder trial (NAS-FCOS, NAS-FPN, Auto-FPN's decoded networks, random over their spaces):
train and score one candidate decoder on cached features, the search's reward.

The candidate trains on meta-train crops with Adam while a Polyak (exponential) average of its
weights is kept; the averaged weights are scored on meta-val, by R = -(L_cls + L_reg + L_ctr),
the detector's losses summed over the meta-val batches (NAS-FCOS §3.3), or by the AP@[.5:.95] of
its detections on the meta-val crops (NAS-FPN §4.2), computed by the numba AP kernel.

What makes two rewards comparable (the evaluation protocol of docs/protocol.md):
- the average warms up (decay min(polyak, (1+t)/(10+t)) at step t), so the first steps' weights
  do not dominate a short run; it averages parameters only;
- BatchNorm statistics of the averaged model are recomputed on meta-train, with no gradient,
  before scoring (averaged running statistics of a short run are mostly their initial values);
- batches come in one order for every candidate of a search (`data_seed`, the run's seed): the
  trial's own `seed` draws only the initial weights, so two candidates are a paired comparison.

A loss that turns NaN/inf, or running out of memory, makes a failed trial, never a crashed search.
"""

from __future__ import annotations

import math
import time
from functools import partial

import torch

from ..cache import CachedSplit
from ..config import ProxySpec
from ..runtime import training_precision
from ..spaces import build_decoder
from ..spaces.base import cost as decoder_cost
from .base import TrialSetup
from ..trial import (TRIAL_ERRORS, Diverged, PolyakAverage, TrialResult, adam, failure, flatten, open_split,
                     keep_every_box, outcome, recompute_batchnorm, score)


def evaluate(genotype, spec: ProxySpec, cache_path, seed: int = 0, data_seed: int = 0, device="cpu") -> TrialResult:
    """The reward of one genotype (of any space: the control is scored the same way); pure in its
    arguments, so any executor can run it. `seed` draws the initial weights, `data_seed` the
    batch order (the same for every candidate of a search); `device` is where it trains."""
    from . import reward_kind

    started, cost = time.perf_counter(), {}
    train, val = open_split(str(cache_path), "train"), open_split(str(cache_path), "val")
    try:
        scorer, cost = train_candidate(genotype, spec, train, seed, data_seed, device)
        keep_every_box(scorer)
        losses, ap = score(scorer, val, spec, reward_kind(spec) == "ap", device)
    except TRIAL_ERRORS as e:
        return failure(e, started, cost)
    return outcome(losses, ap, reward_kind(spec), started, cost)


def train_candidate(genotype, spec: ProxySpec, train: CachedSplit, seed: int = 0, data_seed: int = 0, device="cpu"):
    """Trains the candidate on meta-train; returns (the model to score, its cost). The model to
    score is the warmed-up Polyak average with BatchNorm statistics recomputed on meta-train."""
    torch.manual_seed(seed)
    decoder = build_decoder(genotype, train.in_channels(), len(train.classes), spec.width)
    shapes = {lv: tuple(train.group[lv].shape[1:]) for lv in train.levels}
    cost = decoder_cost(decoder, shapes)
    decoder = decoder.to(device)
    flat = flatten(decoder)
    optimizer = adam(decoder, spec.lr, flat)
    precision = training_precision(device, spec.amp)
    average = PolyakAverage(decoder, spec.polyak, flat)
    for epoch in range(training_epochs(spec, len(train))):
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


def training_epochs(spec: ProxySpec, samples: int) -> int:
    """Passes over meta-train (`samples` crops, capped by the spec's sample budget): the spec's
    epochs, or more until `min_steps` optimiser steps are taken."""
    used = samples if spec.max_train_samples is None else min(samples, spec.max_train_samples)
    return max(spec.epochs, math.ceil(spec.min_steps / math.ceil(used / spec.batch_size)))


def trial(spec: ProxySpec, cache, run_dir, seed: int, device: str, **_) -> TrialSetup:
    """A decoder search's trials: `evaluate` on the trial device; nothing beyond the cache to read."""
    return TrialSetup(partial(evaluate, device=device))


def fcos_control(spec: ProxySpec, cache):
    """The hand design of the FCOS family: FPN + FCOS head with the tower depth of the baseline the
    cache was built from."""
    from ..cache import describe
    from ..spaces import fpn_fcos

    convs = describe(cache).get("sources", {}).get("model_args", {}).get("num_convs", 4)
    return fpn_fcos.Genotype(num_convs=convs)
