"""Auto-FPN's search (papers/auto-fpn.md §3.4-3.5, §4.1): first-order bi-level optimisation of
the supernet on the feature cache, as an ask/tell strategy.

Each `ask` trains the supernet for one epoch and returns the genotype decoded from α (argmax), which
`run_search` scores with the proxy like any other trial. Meta-train is split once, by the seed,
into two disjoint halves: the weights learn on trainA (SGD, cosine schedule lr -> lr_min), the
architecture parameters α on trainB (Adam, lr 3e-3, weight decay 1e-3), by the detection loss plus
λ·C(α), C the mean over edges of softmax(α)·C(op), C(op) the normalised params + FLOPs + MAC of each
op; under a latency target C(α) is instead the promoted network's expected latency as a fraction
of the limit (`LatencyTerm`, docs/latency.md). α stays frozen for the first third of the epochs
(`alpha_start`).

Collapse guard (DARTS+'s early stopping, Liang et al. 2019): differentiable search drifts towards
parameter-free ops; once α is being searched and the decoded network has more than `collapse_share`
of its links and edges none or skip, the search stops there and that network is not returned (the
run keeps the ones decoded before it; `stopped` in the state says why).

The whole state (α, weights, both optimisers, the epoch) is the strategy's `state_dict`, saved in
the run database after every epoch, so a killed search resumes exactly. A batch whose loss is not finite is skipped and counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import ConfigDict, Field

from ..config import Spec, validate
from ..errors import SpecError
from ..spaces import auto_fpn

#: The paper's resource presets (§4.1): small models come from the strongest constraint.
LAMBDA_PRESETS = {"small": 0.2, "middle": 0.02, "big": 0.002}


class DartsOptions(Spec):
    """`darts:` in an auto-fpn proxy spec (paper values; a CPU spec may shrink the batch)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    lambda_: float | str = Field("middle", alias="lambda", description="resource weight λ or small|middle|big")
    lr: float = Field(0.02, gt=0)
    lr_min: float = Field(0.001, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    alpha_lr: float = Field(3e-3, gt=0)
    alpha_weight_decay: float = Field(1e-3, ge=0)
    alpha_start: float = Field(1 / 3, ge=0, le=1, description="fraction of the epochs with α frozen")
    collapse_share: float = Field(0.8, gt=0, le=1, description="stop once none + skip exceed this share of the "
                                                                  "decoded network (1: never)")
    batch_size: int = Field(16, ge=1)
    max_samples: int | None = Field(None, ge=2, description="use only the first N meta-train crops")


def resolve_lambda(value) -> float:
    """λ from a preset name or a number (a string of one, from the command line)."""
    if isinstance(value, str) and value in LAMBDA_PRESETS:
        return LAMBDA_PRESETS[value]
    try:
        lam = float(value)
    except (TypeError, ValueError):
        raise SpecError(f"--lambda {value}: a number or one of {', '.join(LAMBDA_PRESETS)}") from None
    if not lam >= 0 or not math.isfinite(lam):
        raise SpecError(f"--lambda {value}: must be a finite number >= 0")
    return lam


@dataclass(frozen=True)
class LatencyTerm:
    """The resource term of a search under a latency target (FBNet's, in place of the paper's
    params + FLOPs + MAC): the promoted network's predicted latency in expectation over softmax(α),
    as a fraction of the target's limit. `edge_ms`: auto_fpn.edge_latency's tables; `fixed_ms`:
    what every decoded network pays besides its edges; `limit_ms`: the search's limit."""

    edge_ms: tuple
    fixed_ms: float
    limit_ms: float

    def expected_ms(self, net) -> torch.Tensor:
        return self.fixed_ms + net.expected_latency(self.edge_ms)

    def __call__(self, net) -> torch.Tensor:
        return self.expected_ms(net) / self.limit_ms


class DartsStrategy:
    """Trains the Auto-FPN supernet an epoch per `ask`; see the module docstring. `latency`: a
    LatencyTerm replaces the paper's resource term (a search under --latency-target)."""

    graded_skips = False  # the supernet learns from its own loss (strategies/base.py's contract)

    def __init__(self, space, seed: int = 0, cache=None, epochs: int = 1, latency: LatencyTerm | None = None,
                 **options):
        from ..trial import open_split

        if not isinstance(space, auto_fpn.Space):
            raise SpecError(f"the darts strategy searches the auto-fpn space, not {space.name!r}")
        self.options = validate(DartsOptions, options, "proxy spec field 'darts'")
        self.lam = resolve_lambda(self.options.lambda_)
        self.space, self.seed, self.epochs, self.epoch = space, seed, max(1, epochs), 0
        self.train = open_split(str(cache), "train")
        n = len(self.train) if self.options.max_samples is None else min(len(self.train), self.options.max_samples)
        order = np.random.default_rng(seed).permutation(n)
        self.half_a, self.half_b = np.sort(order[: n // 2]), np.sort(order[n // 2:])
        torch.manual_seed(seed)
        self.net = auto_fpn.Supernet(space.spec, self.train.in_channels(), len(self.train.classes))
        o = self.options
        self.w_opt = torch.optim.SGD(self.net.weight_parameters(), lr=o.lr, momentum=o.momentum,
                                     weight_decay=o.weight_decay)
        self.a_opt = torch.optim.Adam(self.net.arch_parameters(), lr=o.alpha_lr, betas=(0.5, 0.999),
                                      weight_decay=o.alpha_weight_decay)
        self.costs = (auto_fpn.op_costs(auto_fpn.NECK_OPS, space.spec.width),
                      auto_fpn.op_costs(auto_fpn.HEAD_OPS, space.spec.width))
        self.latency = latency
        self.skipped, self.stopped = 0, ""

    def lr_at(self, epoch: int) -> float:
        from ..trial import cosine  # the decoder trial's schedule, per epoch here (same arithmetic)

        return cosine(epoch, self.epochs, self.options.lr, self.options.lr_min)

    def searching_alpha(self, epoch: int) -> bool:
        return epoch >= math.ceil(self.options.alpha_start * self.epochs)

    def ask(self, n: int = 1) -> list:
        out = []
        for _ in range(n):
            if self.stopped:
                break
            self._train_epoch()
            genotype = self.net.decode()
            shares = auto_fpn.op_shares(genotype)
            free = shares["none"] + shares["skip"]
            if self.searching_alpha(self.epoch - 1) and free > self.options.collapse_share:
                self.stopped = (f"collapse: after epoch {self.epoch} none + skip are {free:.0%} of the decoded "
                                f"network (collapse_share {self.options.collapse_share:g}); stopped there")
                break
            out.append(genotype)
        return out

    def tell(self, genotype, reward: float | None) -> None:
        """Nothing to learn from: the supernet follows its own loss; rewards live in the run database."""

    def discarded(self) -> list[str]:
        """Decoded networks inherit nothing from each other (strategies/base.py's contract)."""
        return []

    def _loss(self, batch) -> torch.Tensor:
        return sum(self.net.loss_from_batch(self.net(batch), batch).values())

    def resource(self) -> torch.Tensor:
        """C(α): the paper's normalised cost per edge, or under a latency target the expected
        latency as a fraction of the limit."""
        return self.net.resource(self.costs) if self.latency is None else self.latency(self.net)

    def _train_epoch(self) -> None:
        o, e = self.options, self.epoch
        for group in self.w_opt.param_groups:
            group["lr"] = self.lr_at(e)
        self.net.train()
        data_seed = self.seed * 1000 + e
        batches_a = self.train.batches(o.batch_size, True, data_seed, indices=self.half_a)
        batches_b = self.train.batches(o.batch_size, True, data_seed + 500, indices=self.half_b)
        for batch_a, batch_b in zip(batches_a, batches_b):
            loss = self._loss(batch_a)  # the weights, on trainA
            if torch.isfinite(loss):
                self.w_opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.net.weight_parameters(), 5.0)
                self.w_opt.step()
            else:
                self.skipped += 1
            if self.searching_alpha(e):  # α, on trainB (first order: the weights are taken as they are)
                loss = self._loss(batch_b) + self.lam * self.resource()
                if torch.isfinite(loss):
                    grads = torch.autograd.grad(loss, self.net.arch_parameters())
                    for p, g in zip(self.net.arch_parameters(), grads):
                        p.grad = g
                    self.a_opt.step()
                    self.a_opt.zero_grad(set_to_none=True)
                else:
                    self.skipped += 1
        self.epoch += 1

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "net": self.net.state_dict(), "w_opt": self.w_opt.state_dict(),
                "a_opt": self.a_opt.state_dict(), "skipped": self.skipped, "stopped": self.stopped}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.skipped = int(state["epoch"]), int(state["skipped"])
        self.stopped = state.get("stopped", "")  # runs from before the guard have none
        self.net.load_state_dict(state["net"])
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
