"""LSTM controller trained with PPO (Zoph & Le 2017; Schulman et al. 2017), as NAS-FCOS §3.3 and
NAS-FPN use it. It samples any space's decision sequence one choice at a time, each choice fed
back as the next input, and after every `batch` results takes `ppo_epochs` clipped-objective
steps with a moving-average reward baseline and an entropy bonus.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field
from torch import nn

from ..config import Spec, validate
from .base import Strategy


class Policy(nn.Module):
    """An LSTM cell stepping through the decisions; one embedding and one softmax per decision."""

    def __init__(self, options: list[int], hidden: int = 64):
        super().__init__()
        self.hidden = hidden
        self.start = nn.Parameter(torch.zeros(1, hidden))
        self.cell = nn.LSTMCell(hidden, hidden)
        self.embed = nn.ModuleList(nn.Embedding(n, hidden) for n in options)
        self.heads = nn.ModuleList(nn.Linear(hidden, n) for n in options)
        for head in self.heads:  # start near uniform
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def run(self, choices=None, rng: np.random.Generator | None = None):
        """Samples (rng given) or scores (choices given) one sequence -> (choices, log-prob, entropy)."""
        x, state = self.start, None
        out, logp, entropy = [], 0.0, 0.0
        for k, head in enumerate(self.heads):
            state = self.cell(x, state)
            dist = torch.distributions.Categorical(logits=head(state[0])[0])
            if choices is None:
                c = int(rng.choice(len(dist.probs), p=_normalised(dist.probs.detach().numpy())))
            else:
                c = int(choices[k])
            out.append(c)
            logp = logp + dist.log_prob(torch.tensor(c))
            entropy = entropy + dist.entropy()
            x = self.embed[k](torch.tensor([c]))
        return out, logp, entropy


def _normalised(p: np.ndarray) -> np.ndarray:
    p = p.astype(np.float64)
    return p / p.sum()


class ControllerOptions(Spec):
    """`controller:` in a nas-fcos or nas-fpn proxy spec (lr 3.5e-4 as in Zoph & Le's PPO runs)."""

    hidden: int = Field(64, ge=1, description="LSTM width")
    lr: float = Field(3.5e-4, gt=0)
    batch: int = Field(8, ge=1, description="trials per policy update")
    ppo_epochs: int = Field(4, ge=1)
    clip: float = Field(0.2, gt=0)
    entropy: float = Field(1e-3, ge=0, description="entropy bonus weight")
    baseline_decay: float = Field(0.95, ge=0, lt=1, description="of the moving-average reward baseline")


class ControllerStrategy(Strategy):
    """PPO-trained LSTM controller; its options: ControllerOptions."""

    graded_skips = True  # told only "failed", ~250 skips in a row collapsed it on BCCD (search.skip_reward)

    def __init__(self, space, seed: int = 0, **options):
        super().__init__(space, seed, **validate(ControllerOptions, options, "proxy spec field 'controller'").model_dump())
        torch.manual_seed(seed)
        o = self.options
        self.policy = Policy([d.options for d in self.decisions], o["hidden"])
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=o["lr"])
        self.baseline: float | None = None
        self.worst: float | None = None
        self.pending: dict = {}  # genotype json -> (choices, log-prob at sampling time)
        self.buffer: list = []   # (choices, old log-prob, advantage) awaiting an update
        self.updates = 0

    def ask(self, n: int = 1) -> list:
        out = []
        with torch.no_grad():
            for _ in range(n):
                choices = self.sample_valid(lambda: self.policy.run(rng=self.rng)[0])
                _, logp, _ = self.policy.run(choices)
                genotype = self.space.decode(choices)
                self.pending[genotype.to_json()] = (choices, float(logp))
                out.append(genotype)
        return out

    def tell(self, genotype, reward) -> None:
        choices, old_logp = self.pending.pop(genotype.to_json(), (None, None))
        if choices is None:  # not asked by this controller (e.g. a seeded zoo genotype)
            choices = self.space.encode(genotype)
            with torch.no_grad():
                old_logp = float(self.policy.run(choices)[1])
        if reward is None:  # a failed trial scores as the worst seen so far
            if self.worst is None:
                return
            reward = self.worst
        self.worst = reward if self.worst is None else min(self.worst, reward)
        if self.baseline is None:
            self.baseline = reward
        advantage = reward - self.baseline
        decay = self.options["baseline_decay"]
        self.baseline = decay * self.baseline + (1 - decay) * reward
        self.buffer.append((choices, old_logp, advantage))
        if len(self.buffer) >= self.options["batch"]:
            self._update()

    def _update(self) -> None:
        o = self.options
        adv = torch.tensor([a for _, _, a in self.buffer], dtype=torch.float32)
        if len(adv) > 1 and adv.std() > 0:
            adv = adv / adv.std()
        old = torch.tensor([lp for _, lp, _ in self.buffer])
        for _ in range(o["ppo_epochs"]):
            logps, ents = zip(*(self.policy.run(c)[1:] for c, _, _ in self.buffer))
            ratio = torch.exp(torch.stack(logps) - old)
            clipped = torch.clamp(ratio, 1 - o["clip"], 1 + o["clip"])
            loss = -torch.min(ratio * adv, clipped * adv).mean() - o["entropy"] * torch.stack(ents).mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        self.buffer.clear()
        self.updates += 1

    def expected_choices(self) -> list[np.ndarray]:
        """The policy's per-decision probabilities along its greedy path (for reports and tests)."""
        probs, x, state = [], self.policy.start, None
        with torch.no_grad():
            for k, head in enumerate(self.policy.heads):
                state = self.policy.cell(x, state)
                p = torch.softmax(head(state[0])[0], 0)
                probs.append(p.numpy())
                x = self.policy.embed[k](p.argmax().view(1))
        return probs

    def state_dict(self) -> dict:
        return {**super().state_dict(), "policy": self.policy.state_dict(),
                "optimizer": self.optimizer.state_dict(), "baseline": self.baseline, "worst": self.worst,
                "pending": {k: [list(c), lp] for k, (c, lp) in self.pending.items()},
                "buffer": [[list(c), lp, a] for c, lp, a in self.buffer], "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.baseline, self.worst, self.updates = state["baseline"], state["worst"], state["updates"]
        self.pending = {k: (list(c), lp) for k, (c, lp) in state["pending"].items()}
        self.buffer = [(list(c), lp, a) for c, lp, a in state["buffer"]]
